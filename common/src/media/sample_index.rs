//! The demuxer's sample index, where it lists every sample (MP4 and MOV do, from their
//! `moov`): where in the file a stream's packets up to a time end, and which of them is a
//! stream's last before a time. A reader that fetches ahead of the demuxer can then stop at
//! the last byte a decode needs, and a copier of audio knows it has all of a span without
//! reading the packet after it.
//!
//! A fragmented MP4 opened without walking every fragment indexes only the fragments read
//! so far: callers must not ask about one.

use std::marker::PhantomData;

use ffmpeg_next as ffmpeg;

use super::compare_timestamps;

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
    let entries = Entries::of(input, stream)?;
    let through = entries.count_while(|time| time <= pts);
    ((through - LOOK_BACK).max(0)..through)
        .map(|i| entries.get(i))
        .map(|e| e.pos.saturating_add(i64::from(e.size())))
        .max()
        .and_then(|end| u64::try_from(end).ok())
}

/// The decode time (in the stream's time base) of the last packet of `stream` decoding
/// before `end` (a time in `end_base`). `None` when the container does not index every
/// sample or no packet decodes before `end`.
pub fn last_decode_time_before(
    input: &ffmpeg::format::context::Input,
    stream: usize,
    end: i64,
    end_base: ffmpeg::Rational,
) -> Option<i64> {
    let entries = Entries::of(input, stream)?;
    let base = input.stream(stream)?.time_base();
    let before = entries.count_while(|time| compare_timestamps(time, base, end, end_base).is_lt());
    (before > 0).then(|| entries.get(before - 1).timestamp)
}

/// One stream's index entries, read while the input is borrowed.
struct Entries<'a> {
    stream: *mut ffmpeg::ffi::AVStream,
    count: i32,
    input: PhantomData<&'a ffmpeg::format::context::Input>,
}

impl<'a> Entries<'a> {
    /// The entries of `stream`, where the container is one whose index lists every sample.
    fn of(input: &'a ffmpeg::format::context::Input, stream: usize) -> Option<Self> {
        if !input.format().name().split(',').any(|name| name == "mov") {
            return None;
        }
        let stream = input.stream(stream)?;
        // SAFETY: the stream belongs to the open input borrowed for `'a`; its pointer is
        // only read through while that borrow lasts.
        let (stream, count) = unsafe {
            let pointer = stream.as_ptr().cast_mut();
            (
                pointer,
                ffmpeg::ffi::avformat_index_get_entries_count(pointer),
            )
        };
        Some(Self {
            stream,
            count,
            input: PhantomData,
        })
    }

    /// Entry `i`, below the count.
    fn get(&self, i: i32) -> &ffmpeg::ffi::AVIndexEntry {
        // SAFETY: the stream outlives `self` (the input is borrowed for `'a`), its entries
        // are only read while that borrow lasts, and callers ask below the count.
        unsafe { &*ffmpeg::ffi::avformat_index_get_entry(self.stream, i) }
    }

    /// How many entries come before the first whose decode time fails `holds` (which holds
    /// up to some time and never after): a binary search, the entries being in decode
    /// order.
    fn count_while(&self, holds: impl Fn(i64) -> bool) -> i32 {
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let middle = low + (high - low) / 2;
            if holds(self.get(middle).timestamp) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }
}
