//! Where a chunk is accepted: a worker's "done" counts only once the orchestrator has read
//! the chunk back and found exactly what the plan asked for. A video chunk must hold the
//! range's frame count and start at the range's first timestamp (moved by the job's
//! `pts_offset`); an infer chunk must hold one JSON line per frame, numbered from the
//! range's start; a job that copies streams needs the chunk's packet log too. A chunk
//! accepted before a restart is trusted again only after the same checks, with its object
//! the size it had ([`ChunkChecks::recheck`]). Anything else is retried. A check that
//! cannot reach storage is not a verdict on the chunk: it is repeated, with backoff, for
//! up to `orchestrator.storage_patience_seconds` before the chunk is run again.

use std::time::Duration;

use ffmpeg_next::Rescale;
use tokio_util::task::TaskTracker;

use framefleet_common::codec::VideoEncoder;
use framefleet_common::media;
use framefleet_common::proto::ChunkRange;
use framefleet_common::storage::{ObjectUri, Storage, StorageError};

use crate::jobs::accepted::AcceptedChunk;
use crate::jobs::validate::JobTask;
use framefleet_common::storage::patience;

/// What a chunk's objects must hold.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    /// The frames it was asked for.
    pub range: ChunkRange,
    /// Time base of the input's video stream, in which `range` counts.
    pub time_base: ffmpeg_next::Rational,
    /// How far the job moves every timestamp (`VideoInfo::timeline_shift`).
    pub pts_offset: i64,
    /// A video chunk or JSON Lines.
    pub task: JobTask,
    /// The job copies streams, so each chunk has a packet log.
    pub has_packet_log: bool,
    /// The encoder every chunk of the job's run is written with (`None` for infer).
    pub encoder: Option<VideoEncoder>,
}

impl Expected {
    /// Refuses a chunk whose worker says it encoded it with another encoder than the
    /// job's: a job never mixes encoders (a worker of an older version, which names
    /// none, wrote libx264).
    pub fn check_encoder(&self, reported: &str) -> Result<(), String> {
        let Some(wanted) = self.encoder else {
            return Ok(());
        };
        match VideoEncoder::from_reported(reported) {
            Some(encoder) if encoder == wanted => Ok(()),
            _ => Err(format!(
                "chunk {} was encoded with `{reported}`, but the job's chunks are all {wanted}",
                self.range.index
            )),
        }
    }
}

/// Why a chunk's objects were not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// They are missing or not what the plan asked for: the chunk must run again.
    #[error("{0}")]
    Wrong(String),
    /// Storage could not be reached to read them: looking again later may accept them.
    #[error("{0}")]
    Unreachable(String),
}

impl Refusal {
    /// The reason, in words.
    pub fn message(self) -> String {
        match self {
            Refusal::Wrong(message) | Refusal::Unreachable(message) => message,
        }
    }

    fn storage(error: StorageError, context: String) -> Self {
        let message = format!("{context}: {error}");
        if error.is_transient() {
            Refusal::Unreachable(message)
        } else {
            Refusal::Wrong(message)
        }
    }
}

/// Reads chunk objects back to check them.
#[derive(Clone)]
pub struct ChunkChecks {
    /// Storage, counting the orchestrator's own reads.
    pub storage: Storage,
    /// Where probes of chunk objects run (FFmpeg on blocking threads), so a shutdown can
    /// wait for them.
    pub blocking: TaskTracker,
    /// How long checks look again while storage is unreachable
    /// (`orchestrator.storage_patience_seconds`).
    pub patience: Duration,
}

impl ChunkChecks {
    /// Checks a chunk's objects, looking again while storage is unreachable for up to
    /// [`patience`](Self::patience); returns the chunk object's size, or why it is refused.
    pub async fn check_patiently(
        &self,
        expected: &Expected,
        output: &ObjectUri,
        packet_log: Option<&ObjectUri>,
    ) -> Result<u64, String> {
        let what = format!("the check of chunk {}", expected.range.index);
        patience::through_outages(
            self.patience,
            &what,
            |refusal| matches!(refusal, Refusal::Unreachable(_)),
            || self.check(expected, output, packet_log),
        )
        .await
        .map_err(Refusal::message)
    }

    /// Checks a chunk's objects once; returns the chunk object's size, or why it is
    /// refused.
    pub async fn check(
        &self,
        expected: &Expected,
        output: &ObjectUri,
        packet_log: Option<&ObjectUri>,
    ) -> Result<u64, Refusal> {
        let range = &expected.range;
        let size = match expected.task {
            JobTask::Infer => self.check_lines(output, range).await?,
            JobTask::Process => self.check_video(output, expected).await?,
        };
        if let Some(log) = packet_log {
            if let Err(error) = self.storage.size(log).await {
                let context = format!("chunk {} packet log is missing", range.index);
                return Err(Refusal::storage(error, context));
            }
        }
        Ok(size)
    }

    /// Checks a chunk accepted before a restart before it is trusted again: recorded for
    /// this range and this setting of copied streams, its objects pass [`check`](Self::check)
    /// and the chunk object still has the size it had.
    pub async fn recheck(
        &self,
        expected: &Expected,
        previous: &AcceptedChunk,
    ) -> Result<(), String> {
        let index = expected.range.index;
        if previous.range != expected.range {
            return Err(format!("chunk {index} was recorded for another plan"));
        }
        if expected.has_packet_log != previous.packet_log.is_some() {
            return Err(format!(
                "chunk {index} was recorded with a different setting for copied streams"
            ));
        }
        expected.check_encoder(&previous.result.encoder)?;
        let size = self
            .check(expected, &previous.output, previous.packet_log.as_ref())
            .await
            .map_err(Refusal::message)?;
        if size != previous.output_bytes {
            return Err(format!(
                "chunk {index} object holds {size} bytes, {} when it was accepted",
                previous.output_bytes
            ));
        }
        Ok(())
    }

    /// A video chunk: exactly the range's frame count, from the range's first timestamp.
    async fn check_video(&self, output: &ObjectUri, expected: &Expected) -> Result<u64, Refusal> {
        let range = &expected.range;
        let storage = self.storage.clone();
        let object = output.clone();
        let runtime = tokio::runtime::Handle::current();
        let unreadable = format!("chunk {} output is unreadable", range.index);
        let (probed, size) = self
            .blocking
            .spawn_blocking(move || {
                let reader = storage
                    .open_reader(&object, runtime)
                    .map_err(|e| Refusal::storage(e, unreadable.clone()))?;
                let (size, failure) = (reader.size(), reader.failure());
                media::probe(reader, object.file_name())
                    .map(|info| (info, size))
                    .map_err(|e| match failure.last() {
                        Some(read) if failure.transient() => {
                            Refusal::Unreachable(format!("{unreadable}: {read}"))
                        }
                        _ => Refusal::Wrong(format!("{unreadable}: {e}")),
                    })
            })
            .await
            .map_err(|e| {
                Refusal::Wrong(format!("checking chunk {} crashed: {e}", range.index))
            })??;
        let video = &probed.video;
        if let Some(codec) = expected.encoder.map(VideoEncoder::codec) {
            if video.codec != codec.name() {
                return Err(Refusal::Wrong(format!(
                    "chunk {} output is {}, but the job encodes {}",
                    range.index,
                    video.codec,
                    codec.name()
                )));
            }
        }
        let frames = range.frame_count();
        if video.frames.len() as u64 != frames {
            return Err(Refusal::Wrong(format!(
                "chunk {} output holds {} frames, expected {frames}",
                range.index,
                video.frames.len()
            )));
        }
        let chunk_base = ffmpeg_next::Rational::new(video.time_base.0, video.time_base.1);
        let first = video
            .frames
            .first()
            .map_or(0, |f| f.pts.rescale(chunk_base, expected.time_base));
        let expected_first = range.start_pts + expected.pts_offset;
        if first != expected_first {
            return Err(Refusal::Wrong(format!(
                "chunk {} output starts at pts {first}, expected {expected_first}",
                range.index
            )));
        }
        Ok(size)
    }

    /// A JSON Lines chunk: one line per frame of the range, numbered from its start.
    async fn check_lines(&self, output: &ObjectUri, range: &ChunkRange) -> Result<u64, Refusal> {
        let unreadable = || format!("chunk {} is unreadable", range.index);
        let size = self
            .storage
            .size(output)
            .await
            .map_err(|e| Refusal::storage(e, unreadable()))?;
        let bytes = self
            .storage
            .read_range(output, 0, size)
            .await
            .map_err(|e| Refusal::storage(e, unreadable()))?;
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        let frames = range.frame_count();
        if lines.len() as u64 != frames {
            return Err(Refusal::Wrong(format!(
                "chunk {} holds {} lines, expected {frames}",
                range.index,
                lines.len()
            )));
        }
        let Some(first_line) = lines.first() else {
            return Ok(size);
        };
        let first: serde_json::Value = serde_json::from_str(first_line).map_err(|e| {
            Refusal::Wrong(format!("chunk {} line 1 is not JSON: {e}", range.index))
        })?;
        if first["frame"].as_u64() != Some(range.start_frame) {
            return Err(Refusal::Wrong(format!(
                "chunk {} starts at frame {}, expected {}",
                range.index, first["frame"], range.start_frame
            )));
        }
        Ok(size)
    }
}
