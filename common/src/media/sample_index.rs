//! The demuxer's sample index, where it lists every sample (MP4 and MOV do, from their
//! `moov`): where in the file a stream's packets up to a time end. A reader that fetches
//! ahead of the demuxer can then stop at the last byte a decode needs.

use ffmpeg_next as ffmpeg;

/// Samples before the found one also looked at, in case a muxer wrote a few out of order.
const LOOK_BACK: i32 = 16;

/// The byte just past the packets of `stream` whose decode time is at or before `pts`
/// (in the stream's time base): every packet a frame shown at `pts` can depend on lies
/// before it. `None` when the container does not index every sample (only MP4 and MOV
/// are trusted to) or the stream has no such packet.
pub fn bytes_through(
    input: &ffmpeg::format::context::Input,
    stream: usize,
    pts: i64,
) -> Option<u64> {
    bytes_to(input, stream, pts, 0)
}

/// Like [`bytes_through`], with the first packet decoding after `pts` as well: a reader
/// that goes on until it has seen a packet past a time (a copied audio stream's span end)
/// needs that one too.
pub fn bytes_through_next(
    input: &ffmpeg::format::context::Input,
    stream: usize,
    pts: i64,
) -> Option<u64> {
    bytes_to(input, stream, pts, 1)
}

/// The byte just past the packets of `stream` decoding at or before `pts` and the `extra`
/// packets after them.
fn bytes_to(
    input: &ffmpeg::format::context::Input,
    stream: usize,
    pts: i64,
    extra: i32,
) -> Option<u64> {
    if !input.format().name().split(',').any(|name| name == "mov") {
        return None;
    }
    let stream = input.stream(stream)?;
    // SAFETY: `stream` is a stream of the open input `input` borrows; its index entries
    // are read, not changed, while that borrow lasts, and every index is below the count.
    unsafe {
        let pointer = stream.as_ptr().cast_mut();
        let count = ffmpeg::ffi::avformat_index_get_entries_count(pointer);
        let entry = |i: i32| &*ffmpeg::ffi::avformat_index_get_entry(pointer, i);
        let (mut low, mut high) = (0, count);
        while low < high {
            let middle = low + (high - low) / 2;
            if entry(middle).timestamp <= pts {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        let through = (low + extra).min(count);
        ((through - LOOK_BACK).max(0)..through)
            .map(entry)
            .map(|e| e.pos.saturating_add(i64::from(e.size())))
            .max()
            .and_then(|end| u64::try_from(end).ok())
    }
}
