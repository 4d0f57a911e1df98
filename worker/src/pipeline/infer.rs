//! The infer stage: a TorchScript model turns each frame into a vector, written as one JSON
//! line per frame, in order:
//! `{"input": uri, "frame": k, "pts": ticks, "time": seconds, "values": [...]}`
//! (with `top_k`, `"top": [{"index": i, "value": v}, ...]` instead of `values`). The chunk is
//! a local `.jsonl` file that the upload stage sends on; the stitch concatenates chunks.

use std::path::Path;
use std::sync::mpsc::Receiver;

use ffmpeg_next::frame::Video as VideoFrame;

use super::{ChunkError, ChunkSpec, StageContext};

/// One frame's line; it names its `input`, so lines of many videos can be told apart.
#[cfg(any(feature = "torch", test))]
pub(super) fn line(
    input: &str,
    frame: u64,
    pts: i64,
    seconds: f64,
    values: &[f32],
    top_k: usize,
) -> String {
    let mut record =
        serde_json::json!({ "input": input, "frame": frame, "pts": pts, "time": seconds });
    if top_k == 0 {
        record["values"] = serde_json::json!(values);
    } else {
        let mut ranked: Vec<(usize, f32)> = values.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(top_k);
        record["top"] = ranked
            .into_iter()
            .map(|(index, value)| serde_json::json!({ "index": index, "value": value }))
            .collect();
    }
    record.to_string()
}

/// Runs the stage until the decode stage closes its channel; returns the lines written.
#[cfg(feature = "torch")]
pub(super) fn run(
    spec: &ChunkSpec,
    context: &StageContext,
    frames: Receiver<VideoFrame>,
    path: &Path,
) -> Result<(u64, &'static str), ChunkError> {
    use std::io::Write;

    use framefleet_common::proto::Phase;

    use crate::processor::neural::{select_device, Neural, NeuralSettings};
    use crate::processor::FrameProcessor;

    let settings = NeuralSettings {
        model_dir: spec.settings.model_dir.clone(),
        device: select_device(&spec.settings.device),
        tile_size: i64::from(spec.settings.tile_size),
        files: spec.settings.files.clone(),
    };
    let mut model = context.clock.time(Phase::Init, || {
        Neural::new(&spec.processor.model, &settings)
    })?;
    context.clock.model_loaded(model.model_load_seconds());
    let file = std::fs::File::create(path)
        .map_err(|e| ChunkError::Encode(format!("cannot create the chunk file: {e}")))?;
    let mut out = std::io::BufWriter::new(file);
    let seconds_per_tick =
        f64::from(spec.time_base.numerator()) / f64::from(spec.time_base.denominator());
    let top_k = spec.top_k as usize;
    let input = spec.input.to_string();
    let mut written = 0u64;
    while let Ok(first) = frames.recv() {
        context.check_cancelled()?;
        let mut batch = vec![first];
        while batch.len() < spec.batch_frames.max(1) {
            match frames.try_recv() {
                Ok(frame)
                    if (frame.width(), frame.height()) == (batch[0].width(), batch[0].height()) =>
                {
                    batch.push(frame)
                }
                Ok(frame) => {
                    batch.push(frame);
                    break;
                }
                Err(_) => break,
            }
        }
        let vectors = context.clock.time(Phase::Process, || {
            let mut vectors = Vec::with_capacity(batch.len());
            for group in batch.chunk_by(|a, b| (a.width(), a.height()) == (b.width(), b.height())) {
                vectors.extend(model.infer(group)?);
            }
            Ok::<_, ChunkError>(vectors)
        })?;
        context
            .clock
            .time(Phase::Encode, || -> Result<(), ChunkError> {
                for (frame, values) in batch.iter().zip(&vectors) {
                    let pts = frame.pts().unwrap_or(0);
                    let text = line(
                        &input,
                        spec.frame_index(written),
                        pts,
                        pts as f64 * seconds_per_tick,
                        values,
                        top_k,
                    );
                    writeln!(out, "{text}").map_err(|e| {
                        ChunkError::Encode(format!("writing the chunk failed: {e}"))
                    })?;
                    written += 1;
                }
                Ok(())
            })?;
        context.progress.set(Phase::Process, written);
        context.progress.set(Phase::Encode, written);
    }
    out.flush()
        .map_err(|e| ChunkError::Encode(format!("writing the chunk failed: {e}")))?;
    if written != spec.frames() {
        return Err(ChunkError::FrameCount {
            phase: "infer",
            got: written,
            expected: spec.frames(),
        });
    }
    Ok((written, model.device()))
}

/// Without libtorch there is no model to run.
#[cfg(not(feature = "torch"))]
pub(super) fn run(
    _spec: &ChunkSpec,
    _context: &StageContext,
    _frames: Receiver<VideoFrame>,
    _path: &Path,
) -> Result<(u64, &'static str), ChunkError> {
    Err(ChunkError::Invalid(
        "infer jobs need a worker built with --features torch".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_input_frame_time_and_values_or_the_top_k() {
        let all = line("s3://b/in.mp4", 7, 1024, 0.5, &[0.1, 0.9, 0.5], 0);
        let parsed: serde_json::Value = serde_json::from_str(&all).expect("JSON");
        assert_eq!(parsed["input"], "s3://b/in.mp4");
        assert_eq!(parsed["frame"], 7);
        assert_eq!(parsed["pts"], 1024);
        assert_eq!(parsed["values"].as_array().map(Vec::len), Some(3));
        let top: serde_json::Value =
            serde_json::from_str(&line("s3://b/in.mp4", 0, 0, 0.0, &[0.1, 0.9, 0.5], 2))
                .expect("JSON");
        assert_eq!(top["top"][0]["index"], 1);
        assert_eq!(top["top"][1]["index"], 2);
        assert!(top.get("values").is_none());
    }
}
