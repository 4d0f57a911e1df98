//! The decode stage: reads the input through ranged storage reads, seeks to the keyframe at
//! or before the chunk's first frame, decodes, drops frames before the range and stops at
//! its end.
//!
//! Frames are selected by presentation timestamp, `[start_pts, end_pts)`, which is exact for
//! variable frame rate input. Where the container stores no presentation timestamps, frames
//! take them the way the probe derived them (see `TimestampSource`). In a fragmented MP4
//! the fragments before the chunk's own are hidden behind a `skip` box, so they are neither
//! read nor walked. If a seek lands after the range's start (a container whose index
//! disagrees with its packets), the stage seeks further back, and at last starts again from
//! the beginning of the input rather than lose frames. A job that deinterlaces passes the
//! decoded frames through the deinterlacer, which needs the frames either side of the
//! range as well.
//!
//! An infer chunk that chose frames is decoded as one part per keyframe its chosen frames
//! hang from: a seek to that keyframe, decoding up to the part's last chosen frame (the
//! decoder is flushed as soon as that frame's packet is in, so nothing after it is read),
//! and only the chosen frames sent on. The bytes read are the index and, per part, the
//! packets from its keyframe to its last chosen frame.
//!
//! Where the worker has NVDEC and the stream's codec has FFmpeg's `cuda` hwaccel, the
//! decoder decodes on the GPU and each frame is copied back to the host as it comes out
//! (see `crate::nvdec`); a chunk whose GPU decoding failed is retried in software.
//!
//! Every range stops reading as early as it can: the decoder is flushed as soon as each of
//! its frames has its packet in (rather than fed on until reordering and frame threads let
//! the last frames out), and where the input's sample index says where the range's packets
//! and its copied audio end, the reader fetches nothing past that.

use std::collections::{HashSet, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ffmpeg::frame::Video as VideoFrame;
use ffmpeg::Rescale;
use ffmpeg_next as ffmpeg;

use framefleet_common::media::isobmff::{leading_index_end, HollowReader, SkipFragments};
use framefleet_common::media::{self, sample_index};
use framefleet_common::media::{
    discard_streams, frame_pts, open_input_for_decoding, PacketReader, TimestampSource,
};
use framefleet_common::proto::{ChunkRange, Phase};
use framefleet_common::storage::Storage;
use framefleet_common::storage::{ObjectReader, ReadFailure, ReadHorizon};

use crate::nvdec::{self, NVDEC, SOFTWARE_DECODER};

use super::deinterlace::Deinterlacer;
use super::passthrough::{Offer, PassthroughCollector, Span};
use super::{ChunkError, ChunkSpec, PhaseClock, StageContext};

/// Decoder errors on single packets tolerated before the input is declared corrupt.
const MAX_PACKET_ERRORS: u32 = 32;

/// What the stage did besides sending frames.
#[derive(Debug, Clone, Copy)]
pub(super) struct DecodeOutcome {
    /// Packets of copied streams written to the packet log.
    pub passthrough_packets: u64,
    /// What decoded the frames: NVDEC when any came from the GPU, else software.
    pub decoder: &'static str,
}

/// Runs the stage; every frame of the range (or every chosen frame) goes to `frames`, in
/// order.
pub(super) fn run(
    spec: &ChunkSpec,
    storage: &Storage,
    runtime: tokio::runtime::Handle,
    context: &StageContext,
    frames: SyncSender<VideoFrame>,
    packet_log: Option<&Path>,
) -> Result<DecodeOutcome, ChunkError> {
    // One reader for every part and attempt: a seek retry finds what the last one fetched
    // cached.
    let setup_started = Instant::now();
    if let Some((size, validator)) = &spec.input_version {
        storage.pin_web_version(&spec.input, (*size, validator));
    }
    // Small blocks: a chunk jumps from the header to the index and on to its keyframe,
    // and every jump wastes up to a block.
    let mut object = storage
        .open_reader(&spec.input, runtime)?
        .with_block_bytes(media::INDEX_BLOCK_BYTES);
    if spec.whole_input {
        object = object.whole_object();
    }
    let size = object.size();
    let failure = object.failure();
    let horizon = object.horizon();
    let shared = HollowReader::new(
        TimedReader {
            inner: object,
            clock: context.clock.clone(),
        },
        size,
        false,
    );
    add_setup_time(&context.clock, setup_started);
    let mut outcome = DecodeOutcome {
        passthrough_packets: 0,
        decoder: SOFTWARE_DECODER,
    };
    let mut sent_before = 0;
    let reading = Reading {
        shared: &shared,
        horizon: &horizon,
        packet_log,
    };
    for part in parts(spec) {
        let done = decode_part(&part, context, &frames, &reading, sent_before)
            .map_err(|error| blame_storage(error, &failure))
            .inspect_err(|error| note_gpu_failure(spec, error))?;
        outcome.passthrough_packets += done.passthrough_packets;
        if done.on_gpu {
            outcome.decoder = NVDEC;
        }
        sent_before += part.frames();
    }
    Ok(outcome)
}

/// Marks the input for software decoding on this worker when decoding it failed (not its
/// storage) with the GPU decoder at hand, so the chunk's retry does not meet the same
/// fault. An input that was decoded in software anyway loses nothing by the mark.
fn note_gpu_failure(spec: &ChunkSpec, error: &ChunkError) {
    if let (Some(gpu), ChunkError::Decode(_) | ChunkError::FrameCount { .. }) = (&spec.nvdec, error)
    {
        gpu.failed(&spec.input.to_string(), &error.to_string());
    }
}

/// What the stage decodes, one seek each: the chunk itself, or for chosen frames one part
/// per keyframe they hang from (its range from the part's first chosen frame to just after
/// its last).
fn parts(spec: &ChunkSpec) -> Vec<ChunkSpec> {
    if spec.chosen.is_empty() {
        return vec![spec.clone()];
    }
    spec.chosen
        .chunk_by(|a, b| a.keyframe_pts == b.keyframe_pts)
        .map(|group| {
            let (first, last) = (&group[0], &group[group.len() - 1]);
            ChunkSpec {
                range: ChunkRange {
                    start_frame: first.index,
                    end_frame: last.index + 1,
                    start_pts: first.pts,
                    end_pts: last.pts + 1,
                    keyframe_pts: first.keyframe_pts,
                    chosen_frames: group.len() as u64,
                    ..spec.range
                },
                chosen: group.to_vec(),
                ..spec.clone()
            }
        })
        .collect()
}

/// Decodes one part: seeks to its keyframe; when the demuxer lands after it anyway
/// (containers without an index, such as MPEG-TS, seek by estimate), seeks again further
/// back, then gives up and decodes from the beginning. Frames timed by decode order are
/// counted from the first: after a seek, a decoder drops the frames of an open GOP it
/// cannot decode, and the count would slip. A deinterlaced range also needs the frame
/// before its first: when the chunk starts on its keyframe, the seek aims just before it,
/// at the keyframe before. `sent_before` frames went out in earlier parts.
fn decode_part(
    spec: &ChunkSpec,
    context: &StageContext,
    frames: &SyncSender<VideoFrame>,
    reading: &Reading<'_>,
    sent_before: u64,
) -> Result<PartDone, ChunkError> {
    let mut targets: Vec<Option<i64>> = Vec::new();
    if spec.range.start_frame > 0 && spec.timestamps != TimestampSource::DecodeOrder {
        let ticks_per_second =
            i64::from(spec.time_base.denominator()) / i64::from(spec.time_base.numerator()).max(1);
        let aim = if spec.processor.deinterlace {
            spec.range.keyframe_pts.min(spec.range.start_pts - 1)
        } else {
            spec.range.keyframe_pts
        };
        targets.extend(
            SEEK_MARGINS_SECONDS
                .iter()
                .map(|seconds| Some(aim - seconds * ticks_per_second)),
        );
    }
    targets.push(None);
    let mut last_overshoot = None;
    for (tries, target) in targets.into_iter().enumerate() {
        // Only the first attempt skips fragments: a retry aims earlier than the keyframe.
        let attempt = Attempt {
            input: reading.shared.twin(false),
            seek_to: target,
            skip_fragments: tries == 0,
            packet_log: reading.packet_log,
            horizon: reading.horizon,
            sent_before,
        };
        match decode_range(spec, context, frames, attempt)? {
            Decoded::Done(done) => return Ok(done),
            Decoded::SeekOvershot { first_pts } => {
                tracing::debug!(
                    ?first_pts,
                    ?target,
                    start_pts = spec.range.start_pts,
                    "seek landed after the chunk start; seeking further back"
                );
                last_overshoot = Some(first_pts);
            }
        }
    }
    let first = last_overshoot
        .flatten()
        .map_or_else(|| "none at all".to_string(), |pts| format!("pts {pts}"));
    Err(ChunkError::Decode(format!(
        "after seeking, the first decodable frame ({first}) comes after the chunk start \
         (pts {}); the input's timestamps do not match its probe",
        spec.range.start_pts
    )))
}

/// A decode error caused by a failed read of the input is the storage's error: FFmpeg
/// reports it as "Input/output error", which would blame the file.
fn blame_storage(error: ChunkError, failure: &ReadFailure) -> ChunkError {
    match (error, failure.last()) {
        (ChunkError::Decode(_), Some(storage)) => ChunkError::InputRead(storage),
        (error, _) => error,
    }
}

/// How far before a chunk's keyframe successive seeks aim when the demuxer overshoots.
const SEEK_MARGINS_SECONDS: [i64; 5] = [0, 1, 2, 4, 8];

enum Decoded {
    Done(PartDone),
    /// The seek landed after the range's start: the first frame decoded (or packet read)
    /// is later, or, when the seek landed at the very end, there was none.
    SeekOvershot {
        first_pts: Option<i64>,
    },
}

/// A part decoded to its end.
struct PartDone {
    /// Packets of copied streams written to the packet log.
    passthrough_packets: u64,
    /// Some of its frames were decoded on the GPU.
    on_gpu: bool,
}

/// How every part of a chunk reads the input.
struct Reading<'a> {
    /// The input, from its start.
    shared: &'a HollowReader<TimedReader<ObjectReader>>,
    /// How far its reader may fetch ahead.
    horizon: &'a ReadHorizon,
    /// Where the packet log of copied streams goes, when streams are passed through.
    packet_log: Option<&'a Path>,
}

/// How one attempt at the range reads the input.
struct Attempt<'a> {
    /// The input, from its start (shared with the other attempts).
    input: HollowReader<TimedReader<ObjectReader>>,
    /// Where to seek first (`None` decodes from the start).
    seek_to: Option<i64>,
    /// Whether a fragmented MP4's earlier fragments are skipped.
    skip_fragments: bool,
    /// Where the packet log of copied streams goes, when streams are passed through.
    packet_log: Option<&'a Path>,
    /// How far the reader may fetch ahead (set once the input's index is read).
    horizon: &'a ReadHorizon,
    /// Frames sent by the chunk's earlier parts.
    sent_before: u64,
}

/// One attempt at the range: open (and seek), decode to the range's end, then finish the
/// packet log of copied streams.
fn decode_range(
    spec: &ChunkSpec,
    context: &StageContext,
    frames: &SyncSender<VideoFrame>,
    attempt: Attempt<'_>,
) -> Result<Decoded, ChunkError> {
    let seek = attempt.seek_to.is_some();
    let sent_before = attempt.sent_before;
    let opened = open_at(spec, context, attempt)?;
    let mut decoding = RangeDecoding {
        spec,
        context,
        seek,
        // With deinterlacing, the frame before the range must be decoded too (unless the
        // range starts the input).
        needs_previous: spec.processor.deinterlace && spec.range.start_frame > 0,
        range: RangeSender {
            start: spec.range.start_pts,
            end: spec.range.end_pts,
            chosen: spec.chosen.iter().map(|c| c.pts).collect(),
            expected: spec.frames(),
            sent: 0,
            sent_before,
            frames,
        },
        awaited: flushes_early(spec).then(HashSet::new),
        opened,
        deinterlacer: None,
        packets: PacketReader::default(),
        clock: FrameClock::new(spec.timestamps),
        first_frame: true,
        packet_errors: 0,
        flushed: false,
        input_ended: false,
        decoded: VideoFrame::empty(),
        on_gpu: false,
    };
    if let Some(overshot) = decoding.decode()? {
        return Ok(overshot);
    }
    let (sent, expected) = (decoding.range.sent, decoding.range.expected);
    if seek && decoding.first_frame {
        // The seek landed at the end of the input (an estimated seek, as in MPEG-TS, that
        // overshot the last keyframe): no frame at all.
        return Ok(Decoded::SeekOvershot { first_pts: None });
    }
    if sent != expected {
        return Err(ChunkError::FrameCount {
            phase: "decode",
            got: sent,
            expected,
        });
    }
    let RangeDecoding {
        mut opened,
        mut packets,
        input_ended,
        on_gpu,
        ..
    } = decoding;
    let passthrough_packets = match opened.passthrough {
        Some(mut passthrough) => {
            if !input_ended {
                finish_passthrough(
                    &mut opened.input,
                    &mut packets,
                    &mut passthrough,
                    spec,
                    context,
                )?;
            }
            passthrough.finish()?
        }
        None => 0,
    };
    Ok(Decoded::Done(PartDone {
        passthrough_packets,
        on_gpu,
    }))
}

/// The input opened for one attempt, at the point decoding starts.
struct Opened {
    input: ffmpeg::format::context::Input,
    decoder: ffmpeg::decoder::Video,
    /// Time base of the video stream.
    time_base: ffmpeg::Rational,
    /// Collects the copied streams' packets, when the job copies any.
    passthrough: Option<PassthroughCollector>,
}

/// Opens the input as `attempt` says (skipping fragments, seeking) with a decoder for its
/// video stream; the time spent is the chunk's set-up.
fn open_at(
    spec: &ChunkSpec,
    context: &StageContext,
    attempt: Attempt<'_>,
) -> Result<Opened, ChunkError> {
    let Attempt {
        input: mut reader,
        seek_to,
        skip_fragments,
        packet_log,
        horizon,
        sent_before: _,
    } = attempt;
    let setup_started = Instant::now();
    // The header is read without fetching ahead into the sample data after it.
    let index_end = leading_index_end(&mut reader)
        .map_err(|e| ChunkError::Decode(format!("cannot open {}: {e}", spec.input)))?;
    horizon.set(index_end);
    let skipped = if skip_fragments && spec.fragmented_input {
        spec.range.skip_from..spec.range.skip_to
    } else {
        0..0
    };
    let reader = SkipFragments::new(reader, skipped)
        .map_err(|e| ChunkError::Decode(format!("cannot open {}: {e}", spec.input)))?;
    // A fragmented MP4's fragments are read as decoding reaches them: by default FFmpeg
    // walks every fragment header when it opens the file.
    let mut flags = spec.timestamps.demuxer_flags().to_string();
    if spec.fragmented_input {
        flags.push_str("+ignidx");
    }
    let options: &[(&str, &str)] = if flags.is_empty() {
        &[]
    } else {
        &[("fflags", &flags)]
    };
    let mut input = open_input_for_decoding(reader, spec.input.file_name(), options)
        .map_err(|e| ChunkError::Decode(format!("cannot open {}: {e}", spec.input)))?;
    let stream = input.stream(spec.stream_index).ok_or_else(|| {
        ChunkError::Invalid(format!(
            "{} has no stream {}",
            spec.input, spec.stream_index
        ))
    })?;
    let time_base = stream.time_base();
    let mut context_builder = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| ChunkError::Decode(format!("no decoder for the video stream: {e}")))?;
    context_builder.set_threading(ffmpeg::codec::threading::Config::kind(
        ffmpeg::codec::threading::Type::Frame,
    ));
    let input_name = spec.input.to_string();
    let gpu_decoder = spec.nvdec.as_ref().and_then(|gpu| {
        let decoder = gpu.decoder_for(stream.parameters().id(), &input_name)?;
        gpu.attach(&mut context_builder);
        Some(decoder)
    });
    let decoder = match gpu_decoder {
        Some(codec) => context_builder
            .decoder()
            .open_as(codec)
            .and_then(|opened| opened.video()),
        None => context_builder.decoder().video(),
    }
    .map_err(|e| ChunkError::Decode(format!("cannot open the video decoder: {e}")))?;
    let passthrough = match (&spec.passthrough, packet_log) {
        (Some(copy), Some(path)) => Some(PassthroughCollector::new(
            path,
            &copy.streams,
            &input,
            spec.stream_index,
            Span {
                start: (spec.range.start_frame > 0).then_some(spec.range.start_pts),
                end: (!copy.last_chunk).then_some(spec.range.end_pts),
                time_base: spec.time_base,
            },
            !spec.fragmented_input,
        )?),
        _ => None,
    };
    let copied: Vec<usize> = spec
        .passthrough
        .as_ref()
        .map_or(Vec::new(), |a| a.streams.clone());
    discard_streams(&mut input, |index| {
        index != spec.stream_index && !copied.contains(&index)
    });
    if let Some(pts) = seek_to {
        let target = pts.rescale_with(
            time_base,
            ffmpeg::rescale::TIME_BASE,
            ffmpeg::Rounding::Down,
        );
        input
            .seek(target, ..target)
            .map_err(|e| ChunkError::Decode(format!("seeking to pts {target} failed: {e}")))?;
    }
    horizon.set(needed_bytes(spec, &input, passthrough.as_ref()));
    context.progress.finish(Phase::Download);
    add_setup_time(&context.clock, setup_started);
    Ok(Opened {
        input,
        decoder,
        time_base,
        passthrough,
    })
}

/// Where the bytes a part needs end, from the input's sample index: the packets of its last
/// frame (chosen, or the range's last) and, for copied audio, its last packet before the
/// span's end. `None` (fetch ahead freely) where the container has no index to trust (nor
/// a fragmented MP4, whose index holds only the fragments read so far), the span runs to
/// the input's end, or a copied stream is not audio (how far subtitles go shows only by
/// reading on).
fn needed_bytes(
    spec: &ChunkSpec,
    input: &ffmpeg::format::context::Input,
    passthrough: Option<&PassthroughCollector>,
) -> Option<u64> {
    if spec.fragmented_input {
        return None;
    }
    let last_pts = match spec.chosen.last() {
        Some(last) => last.pts,
        None => spec.range.end_pts.checked_sub(1)?,
    };
    let video = sample_index::bytes_through(input, spec.stream_index, last_pts)?;
    let (Some(copy), Some(collector)) = (&spec.passthrough, passthrough) else {
        return Some(video);
    };
    if copy.last_chunk {
        return None;
    }
    copy.streams.iter().try_fold(video, |end, &index| {
        let stream = input.stream(index)?;
        if stream.parameters().medium() != ffmpeg::media::Type::Audio {
            return None;
        }
        let last = collector.last_in_span(index)?;
        Some(end.max(sample_index::bytes_through(input, index, last)?))
    })
}

/// What the decoder's ready frames came to.
enum Received {
    /// All sent; the decoder needs more packets.
    Drained,
    /// The range is complete.
    Complete,
    /// The first frame decoded (at this pts) is after the range's start.
    Overshot(i64),
}

/// What happens after a packet is read.
enum Step {
    /// Frames may be ready.
    Decode,
    /// A copied packet showed the seek landed late.
    Overshot(Option<i64>),
}

/// The state of decoding one range.
struct RangeDecoding<'a> {
    spec: &'a ChunkSpec,
    context: &'a StageContext,
    /// The attempt seeked (so a first frame after the start means it overshot).
    seek: bool,
    needs_previous: bool,
    range: RangeSender<'a>,
    opened: Opened,
    deinterlacer: Option<Deinterlacer>,
    packets: PacketReader,
    clock: FrameClock,
    first_frame: bool,
    packet_errors: u32,
    /// The decoder has been sent its end: the input ended, or every frame's packet is in.
    flushed: bool,
    /// The demuxer has no packet left.
    input_ended: bool,
    /// Timestamps of the range's frames whose packets are in, where the decoder is
    /// flushed once all are (`None`: it reads on until the range is complete).
    awaited: Option<HashSet<i64>>,
    decoded: VideoFrame,
    /// A frame came out of the GPU decoder.
    on_gpu: bool,
}

impl RangeDecoding<'_> {
    /// Decodes until the range is complete or the input ends; `Some` when the seek landed
    /// after the range's start.
    fn decode(&mut self) -> Result<Option<Decoded>, ChunkError> {
        loop {
            self.context.check_cancelled()?;
            if !self.flushed {
                match self.read_packet()? {
                    Step::Decode => {}
                    Step::Overshot(first_pts) => {
                        return Ok(Some(Decoded::SeekOvershot { first_pts }))
                    }
                }
            }
            match self.receive_frames()? {
                Received::Drained => {}
                Received::Complete => return Ok(None),
                Received::Overshot(pts) => {
                    return Ok(Some(Decoded::SeekOvershot {
                        first_pts: Some(pts),
                    }))
                }
            }
            if self.flushed {
                if let Some(filter) = &mut self.deinterlacer {
                    self.range.send(filter.finish()?, self.context)?;
                }
                return Ok(None);
            }
        }
    }

    /// Reads one packet: video goes to the decoder, copied streams to the packet log;
    /// the time not spent reading is decode time.
    fn read_packet(&mut self) -> Result<Step, ChunkError> {
        let (spec, context) = (self.spec, self.context);
        let busy = Instant::now();
        let reading_before = context.clock.seconds_of(Phase::Download);
        let packet = self
            .packets
            .next(&mut self.opened.input)
            .map_err(|e| ChunkError::Decode(e.to_string()))?;
        match packet {
            Some(packet) if packet.stream() == spec.stream_index => {
                if let Some(passthrough) = &mut self.opened.passthrough {
                    passthrough.offer(&packet)?;
                }
                match self.opened.decoder.send_packet(&packet) {
                    Ok(()) => {
                        self.clock.packet_sent(&packet);
                        self.note_awaited(packet.pts());
                    }
                    Err(e) => {
                        self.packet_errors += 1;
                        if self.packet_errors > MAX_PACKET_ERRORS {
                            return Err(ChunkError::Decode(format!(
                                "too many undecodable packets ({e}); the input is corrupt"
                            )));
                        }
                    }
                }
            }
            Some(packet) => {
                if let Some(passthrough) = &mut self.opened.passthrough {
                    if passthrough.offer(&packet)? == Offer::Late {
                        return Ok(Step::Overshot(packet.dts().or(packet.pts())));
                    }
                }
                return Ok(Step::Decode);
            }
            None => {
                self.input_ended = true;
                self.flush();
            }
        }
        let reading = context.clock.seconds_of(Phase::Download) - reading_before;
        context.clock.add(
            Phase::Decode,
            busy.elapsed()
                .saturating_sub(Duration::from_secs_f64(reading.max(0.0))),
        );
        Ok(Step::Decode)
    }

    /// Notes a frame of the range whose packet is in; once every frame's is, flushes the
    /// decoder: every packet a frame refers to comes before its own, and without the
    /// flush the decoder holds the last frames back (reordering, frame threads) while the
    /// demuxer reads on past the range for packets nobody needs.
    fn note_awaited(&mut self, pts: Option<i64>) {
        let Some(awaited) = &mut self.awaited else {
            return;
        };
        if let Some(pts) = pts.filter(|&pts| self.range.selects(pts)) {
            awaited.insert(pts);
        }
        if awaited.len() as u64 >= self.range.expected {
            self.flush();
        }
    }

    /// Sends the decoder its end, so it gives out every frame it holds.
    fn flush(&mut self) {
        self.flushed = true;
        let _ = self.opened.decoder.send_eof();
    }

    /// Sends every frame the decoder has ready (deinterlaced when asked) to the range.
    fn receive_frames(&mut self) -> Result<Received, ChunkError> {
        let (spec, context) = (self.spec, self.context);
        loop {
            let busy = Instant::now();
            let received = self.opened.decoder.receive_frame(&mut self.decoded).is_ok();
            if received && nvdec::on_gpu(&self.decoded) {
                self.decoded = nvdec::download(&self.decoded).map_err(ChunkError::Decode)?;
                self.on_gpu = true;
            }
            context.clock.add(Phase::Decode, busy.elapsed());
            if !received {
                return Ok(Received::Drained);
            }
            let Some(pts) = self.clock.frame_shown(&self.decoded) else {
                continue;
            };
            let start = self.range.start;
            if self.first_frame
                && self.seek
                && (pts > start || (self.needs_previous && pts == start))
            {
                return Ok(Received::Overshot(pts));
            }
            self.first_frame = false;
            let mut frame = std::mem::replace(&mut self.decoded, VideoFrame::empty());
            frame.set_pts(Some(pts));
            let ready = if spec.processor.deinterlace {
                let filter = match &mut self.deinterlacer {
                    Some(filter) => filter,
                    None => self
                        .deinterlacer
                        .insert(Deinterlacer::new(&frame, self.opened.time_base)?),
                };
                filter.push(frame)?
            } else {
                vec![frame]
            };
            if self.range.send(ready, context)? == Range::Complete {
                return Ok(Received::Complete);
            }
        }
    }
}

/// Whether the decoder is flushed as soon as every frame of the range has its packet in:
/// only where packets carry the timestamps frames are selected by, and no deinterlacer
/// needs the frame after the range.
fn flushes_early(spec: &ChunkSpec) -> bool {
    spec.timestamps == TimestampSource::Presentation && !spec.processor.deinterlace
}

/// Once the video of the range is done, reads on (copied streams only, unless only video
/// packets can tell how far reading has gone) until every copied stream is done with the
/// span, or the input ends.
fn finish_passthrough(
    input: &mut ffmpeg::format::context::Input,
    packets: &mut PacketReader,
    passthrough: &mut PassthroughCollector,
    spec: &ChunkSpec,
    context: &StageContext,
) -> Result<(), ChunkError> {
    if !passthrough.needs_video() {
        discard_streams(input, |index| index == spec.stream_index);
    }
    while passthrough.wants_more() {
        context.check_cancelled()?;
        let packet = packets
            .next(input)
            .map_err(|e| ChunkError::Decode(e.to_string()))?;
        let Some(packet) = packet else { break };
        passthrough.offer(&packet)?;
    }
    Ok(())
}

/// Whether a range has all its frames.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    Open,
    Complete,
}

/// Sends a range's frames on to processing: those with timestamps in `[start, end)` (and,
/// when frames were chosen, among the chosen), up to the count the plan expects.
struct RangeSender<'a> {
    start: i64,
    end: i64,
    /// Timestamps of the chosen frames, ascending (empty: every frame).
    chosen: Vec<i64>,
    expected: u64,
    sent: u64,
    /// Frames the chunk's earlier parts sent.
    sent_before: u64,
    frames: &'a SyncSender<VideoFrame>,
}

impl RangeSender<'_> {
    /// Whether the frame shown at `pts` is one the range sends.
    fn selects(&self, pts: i64) -> bool {
        (self.start..self.end).contains(&pts)
            && (self.chosen.is_empty() || self.chosen.binary_search(&pts).is_ok())
    }

    /// Sends the frames of `ready` (in presentation order) that belong to the range.
    fn send(
        &mut self,
        ready: Vec<VideoFrame>,
        context: &StageContext,
    ) -> Result<Range, ChunkError> {
        for frame in ready {
            let Some(pts) = frame.pts() else { continue };
            if pts >= self.end {
                return Ok(Range::Complete);
            }
            if !self.selects(pts) {
                continue;
            }
            self.frames
                .send(frame)
                .map_err(|_| ChunkError::Disconnected)?;
            self.sent += 1;
            context
                .progress
                .set(Phase::Decode, self.sent_before + self.sent);
            if self.sent == self.expected {
                return Ok(Range::Complete);
            }
        }
        Ok(Range::Open)
    }
}

/// Gives each decoded frame its timestamp, the way the probe listed it.
struct FrameClock {
    source: TimestampSource,
    /// For `DecodeOrder`: the decode timestamps of the packets sent and not yet shown.
    decode_times: VecDeque<Option<i64>>,
}

impl FrameClock {
    fn new(source: TimestampSource) -> Self {
        FrameClock {
            source,
            decode_times: VecDeque::new(),
        }
    }

    /// Notes a video packet the decoder took.
    fn packet_sent(&mut self, packet: &ffmpeg::Packet) {
        if self.source == TimestampSource::DecodeOrder {
            self.decode_times.push_back(packet.dts());
        }
    }

    /// The timestamp of the next frame the decoder shows: its own, or, for `DecodeOrder`,
    /// the oldest decode timestamp not yet given out. `None` skips the frame.
    fn frame_shown(&mut self, frame: &VideoFrame) -> Option<i64> {
        match self.source {
            TimestampSource::DecodeOrder => self.decode_times.pop_front().flatten(),
            TimestampSource::Presentation | TimestampSource::Generated => frame_pts(frame),
        }
    }
}

/// Setup time that was not spent reading counts as `init`.
fn add_setup_time(clock: &Arc<PhaseClock>, started: Instant) {
    let reading = clock.seconds_of(Phase::Download);
    let setup = started.elapsed().as_secs_f64() - reading;
    clock.add(Phase::Init, Duration::from_secs_f64(setup.max(0.0)));
}

/// A reader that counts the time spent in storage reads as `download`.
struct TimedReader<R> {
    inner: R,
    clock: Arc<PhaseClock>,
}

impl<R: Read> Read for TimedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let clock = self.clock.clone();
        clock.time(Phase::Download, || self.inner.read(buf))
    }
}

impl<R: Seek> Seek for TimedReader<R> {
    fn seek(&mut self, position: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(position)
    }
}
