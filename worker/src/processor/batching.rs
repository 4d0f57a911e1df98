//! How many frames go to the device at once, and how big a tile is: as many and as big as
//! fit. A batch that runs out of device memory is not the chunk's failure: the batch is
//! halved and the same frames run again (so none is lost or repeated), down to one
//! frame; a single frame that still does not fit runs in smaller tiles, down to
//! [`MIN_TILE`]. A first batch is sized from the memory free on the device
//! ([`frames_that_fit`]); what fitted is kept for the rest of the chunk, and the worker
//! remembers it for later chunks of the same model and frame size ([`Learned`]), so only
//! the first batch that is too large pays for a failed try.

use std::collections::HashMap;
use std::sync::Mutex;

use super::ProcessError;

/// The smallest tile side a frame is cut into when one frame does not fit, in input
/// pixels: below it the overlap around each tile would be most of the work.
pub const MIN_TILE: i64 = 64;

/// Runs `items` through `run` in order, at most `*limit` at a time. When `run` reports
/// [`ProcessError::OutOfMemory`], `*limit` is halved and the same items are tried again;
/// at one item the error stands. Returns every item's output, in order.
pub fn run_shrinking<T, U>(
    items: &[T],
    limit: &mut usize,
    mut run: impl FnMut(&[T]) -> Result<Vec<U>, ProcessError>,
) -> Result<Vec<U>, ProcessError> {
    let mut out = Vec::with_capacity(items.len());
    let mut start = 0;
    while start < items.len() {
        let end = items.len().min(start + (*limit).max(1));
        match run(&items[start..end]) {
            Ok(done) => {
                out.extend(done);
                start = end;
            }
            Err(ProcessError::OutOfMemory(why)) if end - start > 1 => {
                *limit = (end - start) / 2;
                tracing::warn!(%why, frames = *limit, "the device ran out of memory; running smaller batches");
            }
            Err(error) => return Err(error),
        }
    }
    Ok(out)
}

/// The next tile side to try after a single frame of `width x height` ran out of memory
/// with tiles of `tile` (0: whole frames): half the side last used, if not below
/// [`MIN_TILE`].
pub fn smaller_tile(tile: i64, width: i64, height: i64) -> Option<i64> {
    let used = if tile == 0 {
        width.max(height)
    } else {
        tile.min(width.max(height))
    };
    let next = used / 2;
    (next >= MIN_TILE).then_some(next)
}

/// Of the memory free on the device, the part a batch may plan to use: the rest is left
/// for libtorch's allocator slack and what other work on the GPU allocates meanwhile.
const USABLE_FREE_MEMORY: f64 = 0.8;

/// How many frames of `bytes_per_frame` a first batch holds with `free_bytes` free on the
/// device: at least one (a frame that does not fit is cut into tiles instead).
pub fn frames_that_fit(free_bytes: u64, bytes_per_frame: u64) -> usize {
    let usable = free_bytes as f64 * USABLE_FREE_MEMORY;
    ((usable / bytes_per_frame.max(1) as f64) as usize).max(1)
}

/// Batch sizes and tile sides that fitted, per model, device and frame size, kept for
/// the worker's lifetime.
#[derive(Debug, Default)]
pub struct Learned {
    fitted: Mutex<HashMap<String, (usize, i64)>>,
}

impl Learned {
    /// The batch and tile `key` was first sized at, or shrank to since.
    pub fn get(&self, key: &str) -> Option<(usize, i64)> {
        self.lock().get(key).copied()
    }

    /// Records that `batch` frames in tiles of `tile` fit for `key`.
    pub fn record(&self, key: &str, batch: usize, tile: i64) {
        self.lock().insert(key.to_string(), (batch, tile));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (usize, i64)>> {
        self.fitted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that holds at most `fits` frames at once, like a GPU whose memory runs out
    /// past a batch size; it records the batch sizes it was given.
    fn device(
        fits: usize,
        seen: &mut Vec<usize>,
    ) -> impl FnMut(&[u32]) -> Result<Vec<u32>, ProcessError> + '_ {
        move |batch| {
            seen.push(batch.len());
            if batch.len() > fits {
                return Err(ProcessError::OutOfMemory(format!(
                    "CUDA out of memory. Tried to allocate {} MiB",
                    batch.len() * 300
                )));
            }
            Ok(batch.iter().map(|frame| frame * 10).collect())
        }
    }

    #[test]
    fn a_batch_that_runs_out_of_memory_is_halved_and_loses_no_frame() {
        let frames: Vec<u32> = (0..11).collect();
        let (mut limit, mut seen) = (8, Vec::new());
        let out = run_shrinking(&frames, &mut limit, device(3, &mut seen)).expect("fits at 2");
        assert_eq!(
            out,
            (0..11).map(|f| f * 10).collect::<Vec<_>>(),
            "every frame, in order"
        );
        assert_eq!(limit, 2, "8 failed, 4 failed, 2 fit");
        assert_eq!(seen, [8, 4, 2, 2, 2, 2, 2, 1]);
    }

    #[test]
    fn a_single_frame_that_does_not_fit_fails_with_what_to_do() {
        let (mut limit, mut seen) = (4, Vec::new());
        let error =
            run_shrinking(&[1, 2], &mut limit, device(0, &mut seen)).expect_err("nothing fits");
        assert!(matches!(error, ProcessError::OutOfMemory(_)));
        assert!(error.to_string().contains("worker.tile_size"), "{error}");
        assert_eq!(seen, [2, 1]);
        let other = run_shrinking(&[1, 2], &mut limit, |_: &[u32]| -> Result<Vec<u32>, _> {
            Err(ProcessError::Model("bad weights".into()))
        })
        .expect_err("other errors are not retried");
        assert!(matches!(other, ProcessError::Model(_)));
    }

    #[test]
    fn tiles_halve_from_the_frame_down_to_the_smallest() {
        assert_eq!(smaller_tile(0, 1920, 1080), Some(960));
        assert_eq!(smaller_tile(1024, 1920, 1080), Some(512));
        assert_eq!(
            smaller_tile(4096, 640, 360),
            Some(320),
            "a tile over the frame is the frame"
        );
        assert_eq!(smaller_tile(100, 1920, 1080), None);
        // 10 GiB free, 1 GiB a frame: 8 frames; a frame larger than all of it: still one.
        assert_eq!(frames_that_fit(10 << 30, 1 << 30), 8);
        assert_eq!(frames_that_fit(1 << 30, 4 << 30), 1);
        let learned = Learned::default();
        assert_eq!(learned.get("m@cuda 1920x1080"), None);
        learned.record("m@cuda 1920x1080", 2, 960);
        assert_eq!(learned.get("m@cuda 1920x1080"), Some((2, 960)));
    }
}
