//! Where a chunk is accepted: a worker's "done" counts only once the orchestrator has read
//! the chunk back and found exactly what the plan asked for. A video chunk must hold the
//! range's frame count and start at the range's first timestamp (moved by the job's
//! `pts_offset`); an infer chunk must hold one JSON line per frame, numbered from the
//! range's start; a job that copies streams needs the chunk's packet log too. A chunk
//! accepted before a restart is trusted again only after the same checks, with its object
//! the size it had ([`ChunkChecks::recheck`]). Anything else is retried.

use ffmpeg_next::Rescale;
use tokio_util::task::TaskTracker;

use framefleet_common::media;
use framefleet_common::proto::ChunkRange;
use framefleet_common::storage::{ObjectUri, Storage};

use crate::accepted::AcceptedChunk;
use crate::validate::JobTask;

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
}

/// Reads chunk objects back to check them.
#[derive(Clone)]
pub struct ChunkChecks {
    /// Storage, counting the orchestrator's own reads.
    pub storage: Storage,
    /// Where probes of chunk objects run (FFmpeg on blocking threads), so a shutdown can
    /// wait for them.
    pub blocking: TaskTracker,
}

impl ChunkChecks {
    /// Checks a chunk's objects; returns the chunk object's size, or why it is refused.
    pub async fn check(
        &self,
        expected: &Expected,
        output: &ObjectUri,
        packet_log: Option<&ObjectUri>,
    ) -> Result<u64, String> {
        let range = &expected.range;
        let size = match expected.task {
            JobTask::Infer => self.check_lines(output, range).await?,
            JobTask::Process => self.check_video(output, expected).await?,
        };
        if let Some(log) = packet_log {
            if let Err(error) = self.storage.size(log).await {
                return Err(format!(
                    "chunk {} packet log is missing: {error}",
                    range.index
                ));
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
        let size = self
            .check(expected, &previous.output, previous.packet_log.as_ref())
            .await?;
        if size != previous.output_bytes {
            return Err(format!(
                "chunk {index} object holds {size} bytes, {} when it was accepted",
                previous.output_bytes
            ));
        }
        Ok(())
    }

    /// A video chunk: exactly the range's frame count, from the range's first timestamp.
    async fn check_video(&self, output: &ObjectUri, expected: &Expected) -> Result<u64, String> {
        let range = &expected.range;
        let storage = self.storage.clone();
        let object = output.clone();
        let runtime = tokio::runtime::Handle::current();
        let (probed, size) = self
            .blocking
            .spawn_blocking(move || {
                let reader = storage
                    .open_reader(&object, runtime)
                    .map_err(|e| e.to_string())?;
                let size = reader.size();
                media::probe(reader, object.file_name())
                    .map(|info| (info, size))
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| format!("checking chunk {} crashed: {e}", range.index))?
            .map_err(|e| format!("chunk {} output is unreadable: {e}", range.index))?;
        let video = &probed.video;
        let frames = range.end_frame - range.start_frame;
        if video.frames.len() as u64 != frames {
            return Err(format!(
                "chunk {} output holds {} frames, expected {frames}",
                range.index,
                video.frames.len()
            ));
        }
        let chunk_base = ffmpeg_next::Rational::new(video.time_base.0, video.time_base.1);
        let first = video
            .frames
            .first()
            .map_or(0, |f| f.pts.rescale(chunk_base, expected.time_base));
        let expected_first = range.start_pts + expected.pts_offset;
        if first != expected_first {
            return Err(format!(
                "chunk {} output starts at pts {first}, expected {expected_first}",
                range.index
            ));
        }
        Ok(size)
    }

    /// A JSON Lines chunk: one line per frame of the range, numbered from its start.
    async fn check_lines(&self, output: &ObjectUri, range: &ChunkRange) -> Result<u64, String> {
        let size = self.storage.size(output).await.map_err(|e| e.to_string())?;
        let bytes = self
            .storage
            .read_range(output, 0, size)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        let frames = range.end_frame - range.start_frame;
        if lines.len() as u64 != frames {
            return Err(format!(
                "chunk {} holds {} lines, expected {frames}",
                range.index,
                lines.len()
            ));
        }
        let Some(first_line) = lines.first() else {
            return Ok(size);
        };
        let first: serde_json::Value = serde_json::from_str(first_line)
            .map_err(|e| format!("chunk {} line 1 is not JSON: {e}", range.index))?;
        if first["frame"].as_u64() != Some(range.start_frame) {
            return Err(format!(
                "chunk {} starts at frame {}, expected {}",
                range.index, first["frame"], range.start_frame
            ));
        }
        Ok(size)
    }
}
