//! Deinterlacing before processing, for jobs that ask for it: FFmpeg's `bwdif`, one output
//! frame per input frame (`send_frame`), applied to the frames flagged interlaced; a
//! progressive frame passes unchanged. A model upscales each frame as one picture, so an
//! interlaced frame would have its two fields blended and its combing enlarged.
//!
//! Each output frame is made from the frames before and after it, so the decode stage feeds
//! the frame before a chunk's range and the one after it as well: the result does not
//! depend on where the chunks are cut.

use ffmpeg::frame::Video as VideoFrame;
use ffmpeg::Rescale;
use ffmpeg_next as ffmpeg;

use super::ChunkError;

/// The filter, in FFmpeg's syntax.
const FILTER: &str = "bwdif=mode=send_frame:parity=auto:deint=interlaced";

/// A deinterlacing filter graph for frames of one size and pixel format.
pub(super) struct Deinterlacer {
    graph: ffmpeg::filter::Graph,
    /// Size and format of the frames the graph was built for.
    shape: (u32, u32, ffmpeg::format::Pixel),
    time_base: ffmpeg::Rational,
}

impl Deinterlacer {
    /// A filter for frames shaped like `first`, timed in `time_base`.
    pub fn new(first: &VideoFrame, time_base: ffmpeg::Rational) -> Result<Self, ChunkError> {
        let shape = (first.width(), first.height(), first.format());
        // The input's frames cannot be deinterlaced: trying again elsewhere would not help.
        let error = |e: ffmpeg::Error| {
            ChunkError::Invalid(format!(
                "cannot deinterlace {}x{} {:?} frames with {FILTER} ({e}); run the job without \
                 deinterlacing",
                shape.0, shape.1, shape.2
            ))
        };
        let missing = |name: &str| {
            ChunkError::Invalid(format!(
                "this FFmpeg has no {name} filter; install one built with libavfilter's video \
                 filters"
            ))
        };
        let aspect = first.aspect_ratio();
        let format_id: ffmpeg::ffi::AVPixelFormat = shape.2.into();
        let args = format!(
            "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}",
            shape.0,
            shape.1,
            format_id as i32,
            time_base.numerator(),
            time_base.denominator(),
            aspect.numerator().max(0),
            aspect.denominator().max(1),
        );
        let mut graph = ffmpeg::filter::Graph::new();
        let buffer = ffmpeg::filter::find("buffer").ok_or_else(|| missing("buffer"))?;
        let sink = ffmpeg::filter::find("buffersink").ok_or_else(|| missing("buffersink"))?;
        graph.add(&buffer, "in", &args).map_err(error)?;
        graph.add(&sink, "out", "").map_err(error)?;
        graph
            .output("in", 0)
            .and_then(|parser| parser.input("out", 0))
            .and_then(|parser| parser.parse(FILTER))
            .map_err(error)?;
        graph.validate().map_err(error)?;
        Ok(Deinterlacer {
            graph,
            shape,
            time_base,
        })
    }

    /// Adds the next decoded frame (its pts set); returns the frames now complete, in
    /// order. A frame of another size or format first drains the graph and starts a new
    /// one, as at the end of the input.
    pub fn push(&mut self, frame: VideoFrame) -> Result<Vec<VideoFrame>, ChunkError> {
        let mut ready = Vec::new();
        if (frame.width(), frame.height(), frame.format()) != self.shape {
            ready = self.finish()?;
            *self = Deinterlacer::new(&frame, self.time_base)?;
        }
        self.input()?
            .source()
            .add(&frame)
            .map_err(|e| ChunkError::Decode(format!("the deinterlacer refused a frame: {e}")))?;
        ready.extend(self.drain()?);
        Ok(ready)
    }

    /// Ends the input; returns the frames still held.
    pub fn finish(&mut self) -> Result<Vec<VideoFrame>, ChunkError> {
        self.input()?
            .source()
            .flush()
            .map_err(|e| ChunkError::Decode(format!("cannot flush the deinterlacer: {e}")))?;
        self.drain()
    }

    fn input(&mut self) -> Result<ffmpeg::filter::Context, ChunkError> {
        self.graph
            .get("in")
            .ok_or_else(|| ChunkError::Decode("the deinterlacer has no input".into()))
    }

    /// Every frame the graph can give now.
    fn drain(&mut self) -> Result<Vec<VideoFrame>, ChunkError> {
        let mut out = Vec::new();
        let mut sink = self
            .graph
            .get("out")
            .ok_or_else(|| ChunkError::Decode("the deinterlacer has no output".into()))?;
        // The filter counts in half ticks (it could output one frame per field).
        let filter_time_base = sink.sink().time_base();
        loop {
            let mut frame = VideoFrame::empty();
            match sink.sink().frame(&mut frame) {
                Ok(()) => {
                    let pts = frame.pts();
                    frame.set_pts(pts.map(|pts| pts.rescale(filter_time_base, self.time_base)));
                    out.push(frame);
                }
                Err(ffmpeg::Error::Eof) => break,
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                    break
                }
                Err(e) => {
                    return Err(ChunkError::Decode(format!(
                        "the deinterlacer failed on a frame: {e}"
                    )))
                }
            }
        }
        Ok(out)
    }
}
