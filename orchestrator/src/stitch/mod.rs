//! The stitch: joins the accepted chunks, in index order, into the final file without
//! re-encoding, and copies the input's audio and subtitle streams unchanged, once, for the
//! whole job (audio re-encoded or remuxed per chunk drifts: AAC priming and per-chunk
//! rounding add up). Those packets come from the chunks' packet logs, where the workers
//! wrote each input packet of their span exactly as demuxed, so every packet is copied once
//! with its own timestamps and the stitch reads only the input's headers (for MP4, its
//! index).
//!
//! The input's stream tags (timecode, language, titles), dispositions (default, forced),
//! display side data (rotation, HDR) and chapters are carried over. Chunks are opened one at
//! a time, so a job with hundreds of chunks never holds hundreds of files. Each frame keeps
//! its input timestamp and gets its input duration back from the probe; an input that
//! starts before zero is moved as a whole, every stream together ([`timeline_note`]). Video
//! and copied packets are merged in decode-time order. MP4 and MOV outputs are written with
//! the index first (`faststart`), so they play before they are fully downloaded. The stitch
//! is a pure function of the chunk objects and the input, so it can be run again. Infer
//! jobs' JSON Lines chunks are simply concatenated in order ([`concatenate`]).
//!
//! Parts: [`container`] (what the output can hold), [`carry`] (what the job keeps besides
//! video and audio), [`subtitles`] (the one conversion), [`metadata`] (tags, chapters,
//! attachments), [`timeline`] (timestamps and durations), [`packets`] (what is merged).

use std::collections::HashMap;
use std::path::Path;

use ffmpeg::{format, media, Packet, Rational};
use ffmpeg_next as ffmpeg;

use framefleet_common::media::isobmff::leading_index_end;
use framefleet_common::media::{
    mp4_movie_timescale, open_input, open_input_headers, MediaInfo, INDEX_BLOCK_BYTES,
};
use framefleet_common::storage::{ObjectReader, ObjectUri, Storage};

pub mod carry;
mod container;
mod error;
mod metadata;
mod packets;
mod subtitles;
mod timeline;

pub use container::OutputContainer;
pub use error::StitchError;
pub use timeline::timeline_note;

use carry::SubtitleAction;
use error::write_error;
use packets::{earlier, keep_dts_increasing, write, ChunkPackets, PassthroughPackets};
use subtitles::SubtitleConverter;
use timeline::{frame_durations, opus_delay_shift, Shift};

/// What the stitch wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stitched {
    /// Video packets (frames) written.
    pub video_packets: u64,
    /// Audio and subtitle packets copied.
    pub passthrough_packets: u64,
}

/// What the stitch joins.
pub struct Parts {
    /// The chunk objects, in index order.
    pub chunks: Vec<ObjectUri>,
    /// The chunks' packet logs of copied streams, in index order (empty when the job
    /// copies no stream).
    pub packet_logs: Vec<ObjectUri>,
    /// The job's input, for its streams' parameters and metadata.
    pub input: ObjectUri,
}

/// Where the stitch reads from: the input (for its headers) and the chunk objects, through
/// separately counted storage handles.
pub struct Sources {
    /// Storage for the job's input.
    pub input: Storage,
    /// Storage for the chunk objects.
    pub chunks: Storage,
    /// The runtime the blocking readers wait on.
    pub runtime: tokio::runtime::Handle,
}

/// The output file being written: its context and, per output stream, what packets
/// going to it need.
struct Output {
    context: format::context::Output,
    container: OutputContainer,
    /// Input stream index -> (output stream index, input time base) of each copied stream.
    copied_map: Vec<Option<(usize, Rational)>>,
    /// The converter of each subtitle stream re-encoded for the container, by output index.
    converters: HashMap<usize, SubtitleConverter>,
    /// Output stream time bases, known once the header is written.
    time_bases: Vec<Rational>,
    /// How far each output stream's copied packets move (Opus in Matroska).
    copied_shifts: Vec<i64>,
}

/// Joins the chunks and their packet logs into the local file `output` (its extension
/// chooses the container). Blocking: run it on a thread of its own.
pub fn stitch(
    sources: &Sources,
    parts: &Parts,
    info: &MediaInfo,
    output: &Path,
) -> Result<Stitched, StitchError> {
    let open = |uri: &ObjectUri| open_object(&sources.chunks, sources, uri);
    let first_chunk = parts
        .chunks
        .first()
        .ok_or_else(|| StitchError::Write("there are no chunks to stitch".into()))?;
    let video_parameters = {
        let chunk = open(first_chunk)?;
        let stream = chunk
            .streams()
            .best(media::Type::Video)
            .ok_or_else(|| StitchError::Write(format!("{first_chunk} holds no video")))?;
        stream.parameters()
    };
    let source = {
        let mut reader = sources
            .input
            .open_reader(&parts.input, sources.runtime.clone())?
            .with_block_bytes(INDEX_BLOCK_BYTES);
        // Only the headers are wanted: nothing is fetched ahead into the sample data.
        let index_end = leading_index_end(&mut reader)
            .map_err(|e| StitchError::Write(format!("cannot open {}: {e}", parts.input)))?;
        reader.horizon().set(index_end);
        open_input_headers(reader, parts.input.file_name())
            .map_err(|e| StitchError::Write(format!("cannot open {}: {e}", parts.input)))?
    };
    let video_time_base = Rational::new(info.video.time_base.0, info.video.time_base.1);
    let shift = Shift {
        pts: info.video.timeline_shift(),
        time_base: video_time_base,
    };
    let mut out = Output::start(output, &source, info, video_parameters, shift)?;
    let mut video = ChunkPackets::new(&parts.chunks, &open);
    let copied_map = out.copied_map.clone();
    let mut copied = PassthroughPackets::new(
        &parts.packet_logs,
        &copied_map,
        &sources.chunks,
        sources.runtime.clone(),
        shift,
    );
    let durations = frame_durations(info, shift.pts);
    let mut stitched = Stitched::default();
    let mut last_video_dts: Option<i64> = None;
    let mut next_video = video.next()?;
    let mut next_copied = copied.next()?;
    loop {
        let take_video = match (&next_video, &next_copied) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((v, v_tb)), Some((a, _, a_tb))) => earlier(v, *v_tb, a, *a_tb),
        };
        if take_video {
            if let Some((mut packet, time_base)) = next_video.take() {
                packet.rescale_ts(time_base, video_time_base);
                if let Some(duration) = packet.pts().and_then(|pts| durations.get(&pts)) {
                    packet.set_duration(*duration);
                }
                out.write_video(packet, video_time_base, &mut last_video_dts)?;
                stitched.video_packets += 1;
            }
            next_video = video.next()?;
        } else {
            if let Some((packet, out_index, time_base)) = next_copied.take() {
                stitched.passthrough_packets += out.write_copied(packet, out_index, time_base)?;
            }
            next_copied = copied.next()?;
        }
    }
    stitched.passthrough_packets += out.finish()?;
    let expected = info.video.frames.len() as u64;
    if stitched.video_packets != expected {
        return Err(StitchError::FrameCount {
            got: stitched.video_packets,
            expected,
        });
    }
    Ok(stitched)
}

/// Opens an object of `storage` as an FFmpeg input.
fn open_object(
    storage: &Storage,
    sources: &Sources,
    uri: &ObjectUri,
) -> Result<format::context::Input, StitchError> {
    let reader: ObjectReader = storage.open_reader(uri, sources.runtime.clone())?;
    open_input(reader, uri.file_name())
        .map_err(|e| StitchError::Write(format!("cannot open {uri}: {e}")))
}

impl Output {
    /// Creates the file `path` with the video stream, the copied streams, attachments,
    /// tags and chapters of `source`, and writes its header and cover art.
    fn start(
        path: &Path,
        source: &format::context::Input,
        info: &MediaInfo,
        video_parameters: ffmpeg::codec::Parameters,
        shift: Shift,
    ) -> Result<Self, StitchError> {
        let context = format::output(&path).map_err(write_error("cannot create the output"))?;
        let mut out = Self {
            context,
            container: OutputContainer::for_name(&path.to_string_lossy()),
            copied_map: vec![None; source.nb_streams() as usize],
            converters: HashMap::new(),
            time_bases: Vec::new(),
            copied_shifts: Vec::new(),
        };
        out.add_video(source, info, video_parameters)?;
        out.add_copied(source, info)?;
        let pictures =
            metadata::add_attachments(source, info, &mut out.context, out.container.is_matroska())?;
        out.context.set_metadata(source.metadata().to_owned());
        metadata::copy_chapters(source, &mut out.context, shift)?;
        out.write_header(info, shift.time_base)?;
        for (out_index, mut picture) in pictures {
            write(&mut picture, out_index, &mut out.context)?;
        }
        Ok(out)
    }

    /// Output stream 0: the chunks' video, with the input video's display side data, tags
    /// and frame rate.
    fn add_video(
        &mut self,
        source: &format::context::Input,
        info: &MediaInfo,
        parameters: ffmpeg::codec::Parameters,
    ) -> Result<(), StitchError> {
        let video = &info.video;
        let time_base = Rational::new(video.time_base.0, video.time_base.1);
        let tag = self.container.video_tag(parameters.id());
        metadata::add_copy_stream(&mut self.context, parameters, time_base)?;
        if let (Some(tag), Some(mut to)) = (tag, self.context.stream_mut(0)) {
            metadata::set_codec_tag(&mut to, tag);
        }
        if let (Some(from), Some(mut to)) = (
            source.stream(video.stream_index),
            self.context.stream_mut(0),
        ) {
            metadata::copy_display_side_data(&from, &mut to);
            to.set_metadata(metadata::kept_tags(&from, true));
            // The MOV/MP4 muxer writes a timecode track only for a stream with a known rate.
            to.set_avg_frame_rate(Rational::new(video.frame_rate.0, video.frame_rate.1));
        }
        Ok(())
    }

    /// The input's audio and the subtitles the job carries, each copied or converted.
    fn add_copied(
        &mut self,
        source: &format::context::Input,
        info: &MediaInfo,
    ) -> Result<(), StitchError> {
        let audio = info.audio.iter().map(|copied| (copied, false));
        let subtitle = info.subtitles.iter().map(|copied| (copied, true));
        for (copied, is_subtitle) in audio.chain(subtitle) {
            let Some(stream) = source.stream(copied.stream_index) else {
                continue;
            };
            let position = self.context.nb_streams() as usize;
            let conversion = match carry::subtitle_action(&self.container, copied) {
                SubtitleAction::Convert { to } if is_subtitle => Some(to),
                _ => None,
            };
            let parameters = match conversion {
                Some(to) => {
                    let converter = SubtitleConverter::new(&stream, to)?;
                    let parameters = converter.parameters();
                    self.converters.insert(position, converter);
                    parameters
                }
                None => stream.parameters(),
            };
            metadata::add_copy_stream(&mut self.context, parameters, stream.time_base())?;
            if let Some(mut to) = self.context.stream_mut(position) {
                to.set_metadata(metadata::kept_tags(&stream, false));
                metadata::copy_disposition(&stream, &mut to);
            }
            if let Some(slot) = self.copied_map.get_mut(copied.stream_index) {
                *slot = Some((position, stream.time_base()));
            }
        }
        Ok(())
    }

    /// Writes the header (MP4 and MOV index first, Matroska keeping negative times) and
    /// learns the streams' time bases.
    fn write_header(
        &mut self,
        info: &MediaInfo,
        video_time_base: Rational,
    ) -> Result<(), StitchError> {
        let mut options = ffmpeg::Dictionary::new();
        if self.container.is_mp4_family() {
            options.set("movflags", "+faststart");
            options.set(
                "movie_timescale",
                &mp4_movie_timescale(video_time_base).to_string(),
            );
        } else {
            // Matroska and WebM: by default FFmpeg shifts every stream so the earliest packet
            // is at zero, moving the video by the audio's priming (AAC from MP4 starts at
            // -21 ms, Opus at minus its pre-skip). Matroska holds negative times; keep them.
            options.set("avoid_negative_ts", "disabled");
        }
        let name = self.context.format().name().to_string();
        self.context.write_header_with(options).map_err(|e| {
            let copied: Vec<&str> = info
                .audio
                .iter()
                .chain(&info.subtitles)
                .map(|a| a.codec.as_str())
                .collect();
            StitchError::Write(format!(
                "the {name} container cannot hold these streams (video h264, copied: {}): {e}; \
                 choose a .mkv output to keep every audio codec",
                if copied.is_empty() {
                    "none".to_string()
                } else {
                    copied.join(", ")
                }
            ))
        })?;
        self.time_bases = self.context.streams().map(|s| s.time_base()).collect();
        let matroska = self.container.is_matroska();
        self.copied_shifts = self
            .context
            .streams()
            .zip(&self.time_bases)
            .map(|(stream, &time_base)| {
                if matroska {
                    opus_delay_shift(&stream.parameters(), time_base)
                } else {
                    0
                }
            })
            .collect();
        Ok(())
    }

    /// Writes one video packet whose timestamps are in `time_base`.
    fn write_video(
        &mut self,
        mut packet: Packet,
        time_base: Rational,
        last_dts: &mut Option<i64>,
    ) -> Result<(), StitchError> {
        packet.rescale_ts(time_base, self.time_bases[0]);
        keep_dts_increasing(&mut packet, last_dts);
        write(&mut packet, 0, &mut self.context)
    }

    /// Writes one copied packet (converted first when its stream is); returns how many
    /// packets were written (none while a converter holds a cue).
    fn write_copied(
        &mut self,
        mut packet: Packet,
        out_index: usize,
        time_base: Rational,
    ) -> Result<u64, StitchError> {
        if let Some(converter) = self.converters.get_mut(&out_index) {
            match converter.convert(&packet)? {
                Some(cue) => packet = cue,
                None => return Ok(0),
            }
        }
        packet.rescale_ts(time_base, self.time_bases[out_index]);
        let shift = self.copied_shifts[out_index];
        if shift != 0 {
            packet.set_pts(packet.pts().map(|pts| pts + shift));
            packet.set_dts(packet.dts().map(|dts| dts + shift));
        }
        write(&mut packet, out_index, &mut self.context)?;
        Ok(1)
    }

    /// Writes the cues converters still hold and the trailer; returns the cues written.
    fn finish(mut self) -> Result<u64, StitchError> {
        let mut written = 0;
        for (&out_index, converter) in &mut self.converters {
            if let Some(mut cue) = converter.finish() {
                cue.rescale_ts(converter.time_base(), self.time_bases[out_index]);
                write(&mut cue, out_index, &mut self.context)?;
                written += 1;
            }
        }
        self.context
            .write_trailer()
            .map_err(write_error("cannot finish the output"))?;
        Ok(written)
    }
}

/// Joins JSON Lines chunks (infer jobs) in index order into `output`, streaming each chunk
/// through in blocks.
pub async fn concatenate(
    chunks_storage: &Storage,
    output_storage: &Storage,
    chunks: &[ObjectUri],
    output: &ObjectUri,
) -> Result<u64, StitchError> {
    const BLOCK: u64 = 4 * 1024 * 1024;
    let mut upload = output_storage.upload(output)?;
    for chunk in chunks {
        let size = chunks_storage.size(chunk).await?;
        let mut offset = 0;
        while offset < size {
            let block = match chunks_storage.read_range(chunk, offset, BLOCK).await {
                Ok(block) => block,
                Err(e) => {
                    upload.abort().await;
                    return Err(e.into());
                }
            };
            if block.is_empty() {
                break;
            }
            offset += block.len() as u64;
            if let Err(e) = upload.write(&block).await {
                upload.abort().await;
                return Err(e.into());
            }
        }
    }
    Ok(upload.finish().await?)
}
