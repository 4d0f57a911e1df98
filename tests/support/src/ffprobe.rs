//! Reading results back with ffprobe: timestamps, audio and subtitle packets, tags,
//! chapters, rotation, cover art and per-frame hashes.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::media::ffmpeg;

pub(crate) fn ffprobe(args: &[&str], path: &Path) -> String {
    let output = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        output.status.success(),
        "ffprobe {args:?} {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Timing facts of a file's first video stream, read by ffprobe.
#[derive(Debug)]
pub struct VideoTiming {
    /// Width and height.
    pub size: (u32, u32),
    /// Time base denominator over numerator: ticks per second.
    pub ticks_per_second: f64,
    /// Presentation times of every shown frame, in seconds, in presentation order.
    pub pts_seconds: Vec<f64>,
    /// Stream duration in seconds.
    pub duration: f64,
}

/// Reads a file's video timing.
pub fn video_timing(path: &Path) -> VideoTiming {
    let stream = ffprobe(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,time_base,duration",
            "-of",
            "default=noprint_wrappers=1",
        ],
        path,
    );
    let field = |name: &str| {
        stream
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or("0")
            .to_string()
    };
    let time_base = field("time_base");
    let (num, den) = time_base.split_once('/').unwrap_or(("1", "1"));
    let packets = shown_packet_times(path, &[]);
    let presented = || packets.iter().filter_map(|&(pts, _)| pts);
    let decoded = packets.iter().filter_map(|&(_, dts)| dts).count();
    let mut pts_seconds: Vec<f64> = if presented().next().is_none() {
        // No presentation times at all (H.264 in AVI): the container's frame clock shows
        // the k-th frame at the k-th decode time.
        packets.iter().filter_map(|&(_, dts)| dts).collect()
    } else if presented().count() < decoded {
        // Some packets lack one (a DVD's program stream): FFmpeg fills them in.
        shown_packet_times(path, &["-fflags", "+genpts"])
            .into_iter()
            .filter_map(|(pts, _)| pts)
            .collect()
    } else {
        presented().collect()
    };
    pts_seconds.sort_by(f64::total_cmp);
    VideoTiming {
        size: (
            field("width").parse().unwrap_or(0),
            field("height").parse().unwrap_or(0),
        ),
        ticks_per_second: den.parse::<f64>().unwrap_or(1.0) / num.parse::<f64>().unwrap_or(1.0),
        pts_seconds,
        duration: field("duration").parse().unwrap_or(0.0),
    }
}

/// Presentation and decode times, in seconds, of every shown video packet in file order
/// (`None` where the packet has none); `options` go before the input. Packets flagged D
/// (discard) are decoded as references only, never shown: an MP4 trimmed without
/// re-encoding keeps the frames before its cut that way.
pub(crate) fn shown_packet_times(path: &Path, options: &[&str]) -> Vec<(Option<f64>, Option<f64>)> {
    let mut args = options.to_vec();
    args.extend([
        "-select_streams",
        "v:0",
        "-show_entries",
        "packet=pts_time,dts_time,flags",
        "-of",
        "json",
    ]);
    let packets = ffprobe(&args, path);
    let parsed: serde_json::Value = serde_json::from_str(&packets).expect("ffprobe JSON");
    let seconds = |value: &serde_json::Value| value.as_str()?.parse().ok();
    parsed["packets"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter(|p| !p["flags"].as_str().unwrap_or_default().contains('D'))
        .map(|p| (seconds(&p["pts_time"]), seconds(&p["dts_time"])))
        .collect()
}

/// The file whose audio packets a copy of `input`'s audio must match: the input itself, or
/// for AAC in MPEG-TS (framed as ADTS there) its audio remuxed to MP4 by ffmpeg, which
/// drops the 7-byte ADTS headers as any MP4 muxer must.
pub(crate) fn audio_reference(input: &Path) -> PathBuf {
    if input.extension().is_none_or(|e| e != "ts") {
        return input.to_path_buf();
    }
    let codec = ffprobe(
        &[
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ],
        input,
    );
    if !codec.lines().any(|l| l.trim() == "aac") {
        return input.to_path_buf();
    }
    let reference = input.with_extension("audio-reference.mp4");
    ffmpeg(&[
        "-copyts",
        "-i",
        input.to_str().expect("utf-8 path"),
        "-map",
        "0:a?",
        "-c",
        "copy",
        reference.to_str().expect("utf-8 path"),
    ]);
    reference
}

/// Audio packets of every audio stream as `pts seconds,size,payload MD5`. Per-packet
/// durations are left out: MP4 derives them from sample times, Matroska rounds them to
/// milliseconds, so they change with the container while the packets do not.
pub fn audio_packets(path: &Path) -> Vec<String> {
    packet_fields(path, "a", &["pts_time", "size", "data_hash"])
}

/// The cues of every subtitle stream as `pts seconds,duration seconds,size,payload MD5`
/// (a cue's duration is how long it shows). An MP4 `mov_text` track's empty samples (two
/// zero bytes) are left out: they only fill the time no cue shows, and the MP4 muxer writes
/// them itself wherever the track has a gap or ends early.
pub fn subtitle_cues(path: &Path) -> Vec<String> {
    packet_fields(
        path,
        "s",
        &["pts_time", "duration_time", "size", "data_hash"],
    )
    .into_iter()
    .filter(|cue| cue.split(',').nth(2) != Some("2"))
    .collect()
}

/// The first subtitle stream as SubRip text, as FFmpeg converts it: cue times (as stored,
/// not moved to the file's start) and text, whatever the container's subtitle codec.
pub fn subtitles_as_srt(path: &Path) -> String {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-copyts", "-i"])
        .arg(path)
        .args(["-map", "0:s:0", "-c:s", "srt", "-f", "srt", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "reading the subtitles of {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The bytes of the file's cover art (its second video stream, an attached picture).
pub fn attached_picture(path: &Path) -> Vec<u8> {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:v:1",
            "-c",
            "copy",
            "-frames:v",
            "1",
            "-f",
            "image2",
            "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "reading the cover of {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The `fields` of every packet of the streams `select` picks, comma-joined, one string a
/// packet in file order. (Read as JSON: ffprobe's CSV breaks the line of a packet that
/// carries side data.)
pub(crate) fn packet_fields(path: &Path, select: &str, fields: &[&str]) -> Vec<String> {
    let json = ffprobe(
        &[
            "-select_streams",
            select,
            "-show_data_hash",
            "md5",
            "-show_entries",
            &format!("packet={}", fields.join(",")),
            "-of",
            "json",
        ],
        path,
    );
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("ffprobe JSON");
    parsed["packets"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|packet| {
            fields
                .iter()
                .map(|key| packet[*key].as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// Seconds in one tick of the first audio stream's time base (0 without audio).
pub(crate) fn audio_tick(path: &Path) -> f64 {
    let time_base = ffprobe(
        &[
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=time_base",
            "-of",
            "csv=p=0",
        ],
        path,
    );
    time_base
        .trim()
        .split_once('/')
        .and_then(|(num, den)| Some(num.parse::<f64>().ok()? / den.parse::<f64>().ok()?))
        .unwrap_or(0.0)
}

/// A field of the first video stream as ffprobe names it (`color_space`, `pix_fmt`), if set.
pub fn stream_field(path: &Path, field: &str) -> Option<String> {
    ffprobe(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            &format!("stream={field}"),
            "-of",
            "default=noprint_wrappers=1",
        ],
        path,
    )
    .lines()
    .find_map(|l| l.strip_prefix(&format!("{field}=")).map(str::to_string))
    .filter(|value| value != "unknown")
}

/// A tag of one stream (`v:0`, `a:1`), if it has it.
pub fn stream_tag(path: &Path, stream: &str, tag: &str) -> Option<String> {
    ffprobe(
        &[
            "-select_streams",
            stream,
            "-show_entries",
            &format!("stream_tags={tag}"),
            "-of",
            "default=noprint_wrappers=1",
        ],
        path,
    )
    .lines()
    .find_map(|l| l.strip_prefix(&format!("TAG:{tag}=")).map(str::to_string))
}

/// The file's chapters as (start time in seconds, title), in order.
pub fn chapters(path: &Path) -> Vec<(String, String)> {
    let listing = ffprobe(
        &[
            "-show_entries",
            "chapter=start_time:chapter_tags=title",
            "-of",
            "json",
        ],
        path,
    );
    let parsed: serde_json::Value = serde_json::from_str(&listing).expect("ffprobe JSON");
    parsed["chapters"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|chapter| {
            (
                chapter["start_time"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                chapter["tags"]["title"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// The display rotation of the first video stream, if it has one.
pub fn rotation(path: &Path) -> Option<String> {
    ffprobe(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream_side_data=rotation",
            "-of",
            "default=noprint_wrappers=1",
        ],
        path,
    )
    .lines()
    .find_map(|l| l.strip_prefix("rotation=").map(str::to_string))
}

/// MD5 of every decoded video frame, in order (all of them: none dropped or repeated to
/// mend timestamps).
pub fn frame_hashes(path: &Path) -> Vec<String> {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-f",
            "framemd5",
            "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "framemd5 of {} failed",
        path.display()
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_string()))
        .collect()
}
