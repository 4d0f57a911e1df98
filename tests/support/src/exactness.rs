//! The exactness checks every end-to-end test relies on: the output holds the input's
//! frames at the input's timestamps with the input's audio, and pictures compare by PSNR.

use std::path::Path;

use crate::ffprobe::{audio_packets, audio_reference, audio_tick, video_timing};

/// Peak signal-to-noise ratio of `b` against `a` (8-bit samples), in dB.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "frame sizes differ");
    let squared: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let mse = squared / a.len() as f64;
    10.0 * (255.0 * 255.0 / mse.max(1e-12)).log10()
}

/// Checks `output` against `input`: same frame count, every frame at the input's time (to
/// one tick of the output's time base), the same audio packets (payload and size exact,
/// time to the nearest tick of the output's audio time base: Matroska keeps milliseconds),
/// and the scaled size.
pub fn assert_exact(input: &Path, output: &Path, size: (u32, u32)) {
    assert_exact_moved(input, output, size, 0.0);
}

/// [`assert_exact`] for an output whose every stream was moved `moved` seconds later than
/// the input's (a job moves an input that starts before zero).
pub fn assert_exact_moved(input: &Path, output: &Path, size: (u32, u32), moved: f64) {
    let source = video_timing(input);
    let result = video_timing(output);
    assert_eq!(
        result.pts_seconds.len(),
        source.pts_seconds.len(),
        "{}: frame count differs from {}",
        output.display(),
        input.display()
    );
    let tick = 1.0 / result.ticks_per_second;
    for (i, (a, b)) in source
        .pts_seconds
        .iter()
        .zip(&result.pts_seconds)
        .enumerate()
    {
        assert!(
            (a + moved - b).abs() <= tick + 1e-9,
            "{}: frame {i} at {b} s, input at {a} s, moved by {moved} s",
            output.display()
        );
    }
    assert_eq!(result.size, size, "{}: output size", output.display());
    let (copied, original) = (
        audio_packets(output),
        audio_packets(&audio_reference(input)),
    );
    assert_eq!(
        copied.len(),
        original.len(),
        "{}: audio packet count differs from the input's",
        output.display()
    );
    let half_tick = audio_tick(output) / 2.0 + 1e-9;
    let same = |a: &str, b: &str| {
        let (a_pts, a_rest) = a.split_once(',').unwrap_or((a, ""));
        let (b_pts, b_rest) = b.split_once(',').unwrap_or((b, ""));
        let close = match (a_pts.parse::<f64>(), b_pts.parse::<f64>()) {
            (Ok(x), Ok(y)) => (x - y - moved).abs() <= half_tick,
            _ => a_pts == b_pts,
        };
        close && a_rest == b_rest
    };
    if let Some((i, (a, b))) = copied
        .iter()
        .zip(&original)
        .enumerate()
        .find(|(_, (a, b))| !same(a, b))
    {
        panic!(
            "{}: audio packet {i} is {a}, the input's is {b}",
            output.display()
        );
    }
}
