//! The probe: what a video is, and the timestamp and keyframe flag of every one of its
//! frames, read from packet headers. The planner cuts chunks from this list, so it must be
//! exact for variable frame rate input as well as constant.

use std::collections::HashSet;
use std::io::{Read, Seek};

use ffmpeg_next as ffmpeg;
use serde::{Deserialize, Serialize};

use super::{frame_pts, open_input, PacketReader};

/// Packets fed to the decoder to prove the stream decodes before giving up.
const MAX_PACKETS_TO_FIRST_FRAME: usize = 256;

/// FFmpeg's `AV_PKT_FLAG_DISCARD`: a packet decoded only as a reference, never shown.
const PACKET_FLAG_DISCARD: i32 = 0x0004;

/// Why an input cannot be processed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// FFmpeg could not recognise the container.
    #[error("{name} is not a readable media file ({source}); give a video such as MP4, MKV, MOV or MPEG-TS")]
    Open {
        /// The object's file name.
        name: String,
        /// FFmpeg's error.
        #[source]
        source: ffmpeg::Error,
    },
    /// The container holds no video stream.
    #[error("{name} has no video stream; framefleet processes video")]
    NoVideo {
        /// The object's file name.
        name: String,
    },
    /// The container or codec cannot be used.
    #[error("{name}: {reason}")]
    Unsupported {
        /// The object's file name.
        name: String,
        /// What is wrong, in words a person can act on.
        reason: String,
    },
    /// Reading stopped on an error before the end.
    #[error("{name}: {source}")]
    Read {
        /// The object's file name.
        name: String,
        /// The read error.
        #[source]
        source: super::ReadError,
    },
}

/// The timestamp of one video frame and whether it is a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameStamp {
    /// Presentation timestamp, in the video stream's time base.
    pub pts: i64,
    /// True when decoding can start at this frame.
    pub keyframe: bool,
}

/// The video stream of an input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VideoInfo {
    /// Index of the stream in the container.
    pub stream_index: usize,
    /// Codec name, e.g. `h264`.
    pub codec: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Time base of the stream, `(num, den)`.
    pub time_base: (i32, i32),
    /// Average frame rate as an exact rational, `(num, den)`; `(0, 1)` when unknown.
    pub frame_rate: (i32, i32),
    /// Every frame in presentation order.
    pub frames: Vec<FrameStamp>,
    /// Timestamp just after the last frame (its pts plus its duration).
    pub end_pts: i64,
}

impl VideoInfo {
    /// Seconds from the first frame to the end of the last.
    pub fn duration_seconds(&self) -> f64 {
        let first = self.frames.first().map_or(0, |f| f.pts);
        (self.end_pts - first) as f64 * f64::from(self.time_base.0) / f64::from(self.time_base.1)
    }

    /// Timestamp of the last keyframe at or before frame `index` (the first frame's when
    /// none is marked).
    pub fn keyframe_at_or_before(&self, index: usize) -> i64 {
        self.frames[..=index.min(self.frames.len().saturating_sub(1))]
            .iter()
            .rev()
            .find(|f| f.keyframe)
            .or(self.frames.first())
            .map_or(0, |f| f.pts)
    }
}

/// An audio stream, copied unchanged into the output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AudioInfo {
    /// Index of the stream in the container.
    pub stream_index: usize,
    /// FFmpeg's codec name, e.g. `aac`.
    pub codec: String,
}

/// What the probe learned about an input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaInfo {
    /// Container format name as FFmpeg reports it, e.g. `mov,mp4,m4a,3gp,3g2,mj2`.
    pub format: String,
    /// The first video stream.
    pub video: VideoInfo,
    /// Every audio stream.
    pub audio: Vec<AudioInfo>,
}

/// Probes an input: opens it, lists every video frame's timestamp and keyframe flag from
/// the packets, and decodes the first frame to prove the stream can be decoded.
pub fn probe<R>(reader: R, name: &str) -> Result<MediaInfo, ProbeError>
where
    R: Read + Seek + Send + 'static,
{
    let mut input = open_input(reader, name).map_err(|source| ProbeError::Open {
        name: name.to_string(),
        source,
    })?;
    let unsupported = |reason: String| ProbeError::Unsupported {
        name: name.to_string(),
        reason,
    };
    let stream = input
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or_else(|| ProbeError::NoVideo {
            name: name.to_string(),
        })?;
    let stream_index = stream.index();
    let indexed_frames = u64::try_from(stream.frames()).unwrap_or(0);
    let time_base = stream.time_base();
    let rate = stream.avg_frame_rate();
    let parameters = stream.parameters();
    let codec_id = parameters.id();
    let mut decoder = ffmpeg::codec::context::Context::from_parameters(parameters)
        .and_then(|context| context.decoder().video())
        .map_err(|e| unsupported(format!("no decoder for video codec {codec_id:?} ({e})")))?;
    let (width, height) = (decoder.width(), decoder.height());
    if width == 0 || height == 0 {
        return Err(unsupported("the video stream has no frame size".into()));
    }
    if time_base.numerator() <= 0 || time_base.denominator() <= 0 {
        return Err(unsupported(
            "the video stream has no valid time base".into(),
        ));
    }
    let audio = input
        .streams()
        .filter(|s| s.parameters().medium() == ffmpeg::media::Type::Audio)
        .map(|s| AudioInfo {
            stream_index: s.index(),
            codec: s.parameters().id().name().to_string(),
        })
        .collect();
    let format = input.format().name().to_string();

    let mut frames = Vec::new();
    let mut discarded = 0u64;
    let mut last_duration = 0;
    let mut max_pts: Option<i64> = None;
    let mut decoded_first = false;
    let mut fed = 0usize;
    let mut reader = PacketReader::default();
    let mut decoded = ffmpeg::frame::Video::empty();
    loop {
        let packet = reader.next(&mut input).map_err(|source| ProbeError::Read {
            name: name.to_string(),
            source,
        })?;
        let Some(packet) = packet else { break };
        if packet.stream() != stream_index {
            continue;
        }
        if packet.flags().bits() & PACKET_FLAG_DISCARD != 0 {
            discarded += 1;
            continue;
        }
        let pts = packet.pts().or(packet.dts()).ok_or_else(|| {
            unsupported("video packets carry no timestamps; remux it into MP4 or MKV first".into())
        })?;
        frames.push(FrameStamp {
            pts,
            keyframe: packet.is_key(),
        });
        if max_pts.is_none_or(|max| pts > max) {
            max_pts = Some(pts);
            last_duration = packet.duration();
        }
        if !decoded_first && fed < MAX_PACKETS_TO_FIRST_FRAME {
            fed += 1;
            if decoder.send_packet(&packet).is_ok() && decoder.receive_frame(&mut decoded).is_ok() {
                decoded_first = frame_pts(&decoded).is_some() || decoded.width() > 0;
            }
        }
    }
    if !decoded_first && !frames.is_empty() {
        let _ = decoder.send_eof();
        decoded_first = decoder.receive_frame(&mut decoded).is_ok();
    }
    if frames.is_empty() {
        return Err(unsupported("the video stream has no frames".into()));
    }
    let read = frames.len() as u64 + discarded;
    if indexed_frames > 0 && read < indexed_frames {
        return Err(unsupported(format!(
            "the file is truncated: its index lists {indexed_frames} video frames but only \
             {read} could be read; upload the complete file"
        )));
    }
    if !decoded_first {
        return Err(unsupported(
            "no frame of the video stream could be decoded; the file is corrupt".into(),
        ));
    }
    frames.sort_by_key(|f| f.pts);
    let mut seen = HashSet::with_capacity(frames.len());
    if let Some(duplicate) = frames.iter().find(|f| !seen.insert(f.pts)) {
        return Err(unsupported(format!(
            "two video frames share timestamp {}; the stream's timestamps are broken",
            duplicate.pts
        )));
    }
    let frame_rate = (rate.numerator(), rate.denominator());
    let end_pts = end_of_last_frame(&frames, last_duration, time_base, frame_rate);
    Ok(MediaInfo {
        format,
        video: VideoInfo {
            stream_index,
            codec: codec_id.name().to_string(),
            width,
            height,
            time_base: (time_base.numerator(), time_base.denominator()),
            frame_rate,
            frames,
            end_pts,
        },
        audio,
    })
}

/// The last frame's pts plus its duration: from its packet when known, else from the
/// average frame rate, else from the median gap between frames, else one tick.
fn end_of_last_frame(
    frames: &[FrameStamp],
    packet_duration: i64,
    time_base: ffmpeg::Rational,
    frame_rate: (i32, i32),
) -> i64 {
    let last = frames.last().map_or(0, |f| f.pts);
    let duration = if packet_duration > 0 {
        packet_duration
    } else if frame_rate.0 > 0 && frame_rate.1 > 0 {
        // One frame at `rate` in ticks of `time_base`: den_tb / (num_tb * rate).
        let ticks = (i128::from(time_base.denominator()) * i128::from(frame_rate.1))
            / (i128::from(time_base.numerator()) * i128::from(frame_rate.0));
        i64::try_from(ticks).unwrap_or(1)
    } else {
        let mut gaps: Vec<i64> = frames.windows(2).map(|w| w[1].pts - w[0].pts).collect();
        gaps.sort_unstable();
        gaps.get(gaps.len() / 2).copied().unwrap_or(1)
    };
    last + duration.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamps(pts: &[i64]) -> Vec<FrameStamp> {
        pts.iter()
            .map(|&pts| FrameStamp {
                pts,
                keyframe: pts % 100 == 0,
            })
            .collect()
    }

    #[test]
    fn last_frame_duration_prefers_the_packet_then_the_rate_then_the_gaps() {
        let frames = stamps(&[0, 512, 1024]);
        let tb = ffmpeg::Rational::new(1, 15360);
        assert_eq!(end_of_last_frame(&frames, 700, tb, (30, 1)), 1724);
        assert_eq!(end_of_last_frame(&frames, 0, tb, (30, 1)), 1536);
        assert_eq!(end_of_last_frame(&frames, 0, tb, (0, 1)), 1536);
    }

    #[test]
    fn keyframe_lookup_finds_the_last_keyframe_at_or_before() {
        let video = VideoInfo {
            stream_index: 0,
            codec: "h264".into(),
            width: 2,
            height: 2,
            time_base: (1, 1000),
            frame_rate: (0, 1),
            frames: stamps(&[0, 40, 80, 100, 140]),
            end_pts: 180,
        };
        assert_eq!(video.keyframe_at_or_before(2), 0);
        assert_eq!(video.keyframe_at_or_before(3), 100);
        assert_eq!(video.keyframe_at_or_before(4), 100);
        assert!((video.duration_seconds() - 0.18).abs() < 1e-9);
    }
}
