//! The encode stage: the job's encoder (libx264 unless the job chose another, see
//! [`crate::codecs`]) with the job's settings, muxed into an MP4 chunk file.
//!
//! Every chunk of a job uses the same encoder and settings and the input's own time base, so
//! each output frame keeps its input timestamp exactly (moved by the job's `pts_offset`
//! when the input starts before zero) and the chunks can be joined without re-encoding. The chunk is a plain (seekable) MP4: it stores exact decode and
//! presentation timestamps and per-frame durations, and handles the negative decode
//! timestamps of B-frames at a chunk starting at 0 with an edit list. (NUT loses
//! durations and early decode timestamps; Matroska rounds to milliseconds; fragmented MP4
//! rebases timestamps to the fragment.)
//! Encoders on FFmpeg 5.1 leave packet durations at 0: each packet gets its frame's duration
//! (the gap to the next frame, or to the range end for the last one) before rescaling.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::Receiver;

use ffmpeg::frame::Video as VideoFrame;
use ffmpeg_next as ffmpeg;

use framefleet_common::media::mp4_movie_timescale;
use framefleet_common::proto::Phase;

use super::{ChunkError, ChunkSpec, StageContext};
use crate::codecs::encoder_options;

/// What the stage produced (an infer chunk has no frame size).
pub(super) struct Encoded {
    pub frames: u64,
    pub width: u32,
    pub height: u32,
}

/// Runs the stage until the process stage closes its channel, writing the chunk to `path`.
pub(super) fn run(
    spec: &ChunkSpec,
    context: &StageContext,
    frames: Receiver<VideoFrame>,
    path: &Path,
) -> Result<Encoded, ChunkError> {
    let Ok(first) = frames.recv() else {
        return Err(ChunkError::Disconnected);
    };
    let (width, height) = (first.width(), first.height());
    let mut session = context
        .clock
        .time(Phase::Init, || EncodeSession::open(spec, &first, path))?;
    let mut pending = first;
    for next in frames.iter() {
        context.check_cancelled()?;
        let duration = pts(&next) - pts(&pending);
        let frame = std::mem::replace(&mut pending, next);
        context
            .clock
            .time(Phase::Encode, || session.encode(Some((frame, duration))))?;
        context.progress.set(Phase::Encode, session.written);
    }
    let last_duration = spec.range.end_pts - pts(&pending);
    context.clock.time(Phase::Encode, || {
        session.encode(Some((pending, last_duration)))?;
        session.encode(None)
    })?;
    context.progress.set(Phase::Encode, session.written);
    let written = session.finish()?;
    if written != spec.frames() {
        return Err(ChunkError::FrameCount {
            phase: "encode",
            got: written,
            expected: spec.frames(),
        });
    }
    Ok(Encoded {
        frames: written,
        width,
        height,
    })
}

fn pts(frame: &VideoFrame) -> i64 {
    frame.pts().unwrap_or(0)
}

fn encode_error(what: &str) -> impl Fn(ffmpeg::Error) -> ChunkError + '_ {
    move |e| ChunkError::Encode(format!("{what}: {e}"))
}

/// An open encoder and muxer.
struct EncodeSession {
    encoder: ffmpeg::encoder::video::Encoder,
    output: ffmpeg::format::context::Output,
    encoder_time_base: ffmpeg::Rational,
    stream_time_base: ffmpeg::Rational,
    pts_offset: i64,
    durations: HashMap<i64, i64>,
    written: u64,
}

impl EncodeSession {
    /// Opens the encoder for frames like `first` (size, aspect ratio and colour tags).
    fn open(spec: &ChunkSpec, first: &VideoFrame, path: &Path) -> Result<Self, ChunkError> {
        let name = spec.video_encoder.name();
        let codec = ffmpeg::encoder::find_by_name(name).ok_or_else(|| {
            ChunkError::Encode(format!(
                "this worker's FFmpeg was built without {name}; install an FFmpeg that has it"
            ))
        })?;
        let mut output = ffmpeg::format::output_as(&path, "mp4")
            .map_err(encode_error("cannot create the chunk file"))?;
        let global_header = output
            .format()
            .flags()
            .contains(ffmpeg::format::Flags::GLOBAL_HEADER);
        let mut encoder = ffmpeg::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| ChunkError::Encode(format!("cannot create the {name} encoder: {e}")))?;
        encoder.set_width(first.width());
        encoder.set_height(first.height());
        encoder.set_format(ffmpeg::format::Pixel::YUV420P);
        encoder.set_aspect_ratio(first.aspect_ratio());
        encoder.set_colorspace(first.color_space());
        encoder.set_color_range(first.color_range());
        encoder.set_color_primaries(first.color_primaries());
        encoder.set_color_transfer_characteristic(first.color_transfer_characteristic());
        encoder.set_time_base(spec.time_base);
        if spec.frame_rate.numerator() > 0 && spec.frame_rate.denominator() > 0 {
            encoder.set_frame_rate(Some(spec.frame_rate));
        }
        if global_header {
            encoder.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
        }
        let options = encoder_options(spec.video_encoder, &spec.encoder);
        let encoder = encoder.open_as_with(codec, options).map_err(|e| {
            ChunkError::Encode(format!(
                "{name} refused the settings (check preset and crf): {e}"
            ))
        })?;
        {
            let mut stream = output
                .add_stream(codec)
                .map_err(encode_error("cannot add the video stream"))?;
            stream.set_parameters(&encoder);
            stream.set_time_base(spec.time_base);
        }
        let mut muxer_options = ffmpeg::Dictionary::new();
        muxer_options.set(
            "movie_timescale",
            &mp4_movie_timescale(spec.time_base).to_string(),
        );
        output
            .write_header_with(muxer_options)
            .map_err(encode_error("cannot write the chunk header"))?;
        let stream_time_base = output
            .stream(0)
            .map(|s| s.time_base())
            .unwrap_or(spec.time_base);
        Ok(Self {
            encoder,
            output,
            encoder_time_base: spec.time_base,
            stream_time_base,
            pts_offset: spec.pts_offset,
            durations: HashMap::new(),
            written: 0,
        })
    }

    /// Sends one frame with its duration (or the end of stream) and writes what comes out.
    fn encode(&mut self, frame: Option<(VideoFrame, i64)>) -> Result<(), ChunkError> {
        match frame {
            Some((mut frame, duration)) => {
                frame.set_kind(ffmpeg::picture::Type::None);
                let shifted = pts(&frame) + self.pts_offset;
                frame.set_pts(Some(shifted));
                self.durations.insert(shifted, duration.max(1));
                self.encoder
                    .send_frame(&frame)
                    .map_err(encode_error("the encoder rejected a frame"))?;
            }
            None => self
                .encoder
                .send_eof()
                .map_err(encode_error("flushing the encoder failed"))?,
        }
        let mut packet = ffmpeg::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            let duration = packet
                .pts()
                .and_then(|pts| self.durations.remove(&pts))
                .unwrap_or(0);
            packet.set_duration(duration);
            packet.set_stream(0);
            packet.rescale_ts(self.encoder_time_base, self.stream_time_base);
            packet
                .write_interleaved(&mut self.output)
                .map_err(encode_error("writing a packet failed"))?;
            self.written += 1;
        }
        Ok(())
    }

    /// Writes the trailer (the MP4 index) and closes the file.
    fn finish(mut self) -> Result<u64, ChunkError> {
        self.output
            .write_trailer()
            .map_err(encode_error("cannot write the chunk trailer"))?;
        Ok(self.written)
    }
}
