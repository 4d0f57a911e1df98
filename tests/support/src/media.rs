//! Media the tests make for themselves, with FFmpeg's lavfi sources.

use std::path::Path;
use std::process::Command;

/// Makes a clip with sound: testsrc2 at `size` (`WxH`) and `rate` fps with a sine tone,
/// x264 `yuv420p` with a keyframe every `gop` frames, AAC, `seconds` long.
pub fn clip_with_audio(path: &Path, size: &str, rate: u32, seconds: u32, gop: u32) {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate={rate}"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=330:sample_rate=44100",
        "-t",
        &seconds.to_string(),
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        &gop.to_string(),
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        path.to_str().expect("utf-8 path"),
    ]);
}

/// Makes `seconds` of testsrc2 `video` (`size=WxH:rate=R`), with a sine tone when `audio`,
/// encoded and muxed as `codecs` say (codec, filter and muxer options).
pub fn encoded_clip(path: &Path, video: &str, seconds: u32, audio: bool, codecs: &[&str]) {
    let source = format!("testsrc2={video}");
    let seconds = seconds.to_string();
    let mut args = vec!["-f", "lavfi", "-i", &source];
    if audio {
        args.extend(["-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000"]);
    }
    args.extend(["-t", &seconds, "-shortest"]);
    args.extend_from_slice(codecs);
    args.push(path.to_str().expect("utf-8 path"));
    ffmpeg(&args);
}

/// Runs ffmpeg with `args` (quiet, overwrite), panicking with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
