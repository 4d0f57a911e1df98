//! Where the output's timestamps come from: each frame keeps its input timestamp and gets
//! its input duration back; an input that starts before zero is moved as a whole, every
//! stream together ([`Shift`], [`timeline_note`]); Opus in Matroska is moved by its codec
//! delay where FFmpeg 5's muxer forgets it.

use std::collections::HashMap;

use ffmpeg::{Packet, Rational, Rescale};
use ffmpeg_next as ffmpeg;

use framefleet_common::media::{MediaInfo, VideoInfo};

/// How far to move an Opus stream's packets, in the output's `time_base`, so a Matroska
/// reader gets the input's timestamps back. Readers subtract the track's `CodecDelay`
/// (the encoder's pre-skip) from every block; FFmpeg 5.x's Matroska muxer writes that
/// delay but, unlike later versions, does not add it to the blocks, so every Opus packet
/// would come back earlier by the delay. This adds it as the reader will take it off
/// (pre-skip at 48 kHz, to nanoseconds, to the track's time base, each step rounded as
/// FFmpeg's reader does). Zero for other codecs and other FFmpeg versions.
pub fn opus_delay_shift(parameters: &ffmpeg::codec::Parameters, time_base: Rational) -> i64 {
    // SAFETY: `avformat_version` reads a constant; the parameters pointer is valid for
    // the stream's lifetime and only read.
    let (major, padding, codec) = unsafe {
        let par = &*parameters.as_ptr();
        (
            ffmpeg::ffi::avformat_version() >> 16,
            i64::from(par.initial_padding),
            par.codec_id,
        )
    };
    if major != 59 || codec != ffmpeg::ffi::AVCodecID::AV_CODEC_ID_OPUS || padding <= 0 {
        return 0;
    }
    let nanoseconds = padding.rescale(Rational::new(1, 48_000), Rational::new(1, 1_000_000_000));
    nanoseconds.rescale(Rational::new(1, 1_000_000_000), time_base)
}

/// Every input frame's duration by its output timestamp (its input timestamp plus
/// `offset`): the gap to the next frame, or to the end of the stream for the last one.
/// Containers do not all keep packet durations, and MP4 needs the last one to get the
/// stream's length right.
pub fn frame_durations(info: &MediaInfo, offset: i64) -> HashMap<i64, i64> {
    let frames = &info.video.frames;
    frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let next = frames.get(i + 1).map_or(info.video.end_pts, |f| f.pts);
            (frame.pts + offset, next - frame.pts)
        })
        .collect()
}

/// How far the whole output is moved so that its first frame is not before zero (see
/// `VideoInfo::timeline_shift`): the chunks' frames already carry it, and every copied
/// packet and chapter is moved by as much.
#[derive(Debug, Clone, Copy)]
pub struct Shift {
    /// The move, in the video's time base.
    pub pts: i64,
    /// The video's time base.
    pub time_base: Rational,
}

impl Shift {
    /// The move in `time_base`.
    pub fn in_time_base(self, time_base: Rational) -> i64 {
        self.pts.rescale(self.time_base, time_base)
    }

    /// Moves a packet whose timestamps are in `time_base`.
    pub fn apply(self, packet: &mut Packet, time_base: Rational) {
        if self.pts != 0 {
            let by = self.in_time_base(time_base);
            packet.set_pts(packet.pts().map(|pts| pts + by));
            packet.set_dts(packet.dts().map(|dts| dts + by));
        }
    }
}

/// The report's note for an input whose timestamps start before zero, saying how far the
/// output was moved; `None` when nothing moves.
pub fn timeline_note(video: &VideoInfo) -> Option<String> {
    let shift = video.timeline_shift();
    (shift > 0).then(|| {
        let seconds = video.seconds(shift);
        format!(
            "the input's timestamps start {seconds:.6} s before zero (an MPEG-TS clock \
             wrap, or a cut with negative times); every stream of the output is moved \
             {seconds:.6} s later so that its first frame is at 0 (an MP4 hides frames before 0)"
        )
    })
}
