//! The output's container, chosen by the output name's extension as FFmpeg chooses it,
//! and the one place that answers what it can hold: a codec unchanged, its own text
//! subtitle codec, every attachment (Matroska), the index-first layout (MP4 and MOV).

use std::ffi::CString;
use std::path::Path;

use ffmpeg::codec;
use ffmpeg_next as ffmpeg;

use framefleet_common::media::MediaInfo;

use super::StitchError;

/// The container an output name chooses.
#[derive(Debug, Clone)]
pub struct OutputContainer {
    name: CString,
    extension: String,
    /// FFmpeg's short name of the muxer (`mp4`, `mov`, `matroska`), empty when unknown.
    muxer: String,
}

impl OutputContainer {
    /// The container FFmpeg writes for `output_name`.
    pub fn for_name(output_name: &str) -> Self {
        let extension = Path::new(output_name)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("output")
            .to_string();
        let name = CString::new(output_name.replace('\0', "")).unwrap_or_default();
        let mut container = Self {
            name,
            extension,
            muxer: String::new(),
        };
        // SAFETY: the muxer is a static FFmpeg table entry; its name is a static string.
        container.muxer = unsafe {
            container
                .muxer()
                .map(|format| std::ffi::CStr::from_ptr((*format).name))
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        container
    }

    /// The output name's extension (`output` when it has none).
    pub fn extension(&self) -> &str {
        &self.extension
    }

    /// True for Matroska and WebM, which hold every attachment and negative timestamps.
    pub fn is_matroska(&self) -> bool {
        self.muxer.contains("matroska") || self.muxer.contains("webm")
    }

    /// True for MP4 and MOV, written index first (`faststart`).
    pub fn is_mp4_family(&self) -> bool {
        self.muxer.contains("mp4") || self.muxer.contains("mov")
    }

    /// The sample-entry tag the video stream gets, where FFmpeg's default is not the one
    /// players expect: HEVC in MP4 and MOV is tagged `hvc1` (parameter sets in the sample
    /// entry, as the chunks' encoders write them), which Apple's players require, rather
    /// than FFmpeg's `hev1`. `None` keeps the muxer's default.
    pub fn video_tag(&self, codec: codec::Id) -> Option<u32> {
        (self.is_mp4_family() && codec == codec::Id::HEVC).then(|| u32::from_le_bytes(*b"hvc1"))
    }

    /// Whether the container holds `codec` unchanged: `None` when FFmpeg does not know
    /// the container, the codec, or the answer.
    pub fn holds(&self, codec: &str) -> Option<bool> {
        let codec = CString::new(codec).ok()?;
        let format = self.muxer()?;
        // SAFETY: reads a NUL-terminated string that outlives the call and static FFmpeg
        // tables, which are only read.
        let answer = unsafe {
            let descriptor = ffmpeg::ffi::avcodec_descriptor_get_by_name(codec.as_ptr());
            if descriptor.is_null() {
                return None;
            }
            ffmpeg::ffi::avformat_query_codec(
                format,
                (*descriptor).id,
                ffmpeg::ffi::FF_COMPLIANCE_NORMAL,
            )
        };
        match answer {
            1 => Some(true),
            0 => Some(false),
            _ => None,
        }
    }

    /// Whether the container holds an attachment or attached picture of `codec`:
    /// Matroska holds every one; others a picture (cover art) whose codec they know.
    pub fn holds_attachment(&self, codec: &str) -> bool {
        self.is_matroska() || self.holds(codec) == Some(true)
    }

    /// The container's own text subtitle codec, when its muxer names one.
    pub fn default_text_subtitle(&self) -> Option<codec::Id> {
        let format = self.muxer()?;
        // SAFETY: a static FFmpeg table entry, only read.
        let id = codec::Id::from(unsafe { (*format).subtitle_codec });
        (id != codec::Id::None).then_some(id)
    }

    /// Checks, before any chunk is processed, that the container can hold the input's
    /// audio unchanged (MP4 cannot hold PCM, for one), so a job does not fail after all
    /// its GPU work.
    pub fn check_audio(&self, info: &MediaInfo) -> Result<(), StitchError> {
        for audio in &info.audio {
            if self.holds(&audio.codec) == Some(false) {
                return Err(StitchError::Write(format!(
                    "a .{} file cannot hold the input's {} audio, which framefleet copies \
                     unchanged; choose a .mov output (or .mkv, which rounds timestamps to milliseconds)",
                    self.extension, audio.codec
                )));
            }
        }
        Ok(())
    }

    fn muxer(&self) -> Option<*const ffmpeg::ffi::AVOutputFormat> {
        // SAFETY: reads a NUL-terminated string that outlives the call; returns a pointer
        // to a static FFmpeg table (or null).
        let format = unsafe {
            ffmpeg::ffi::av_guess_format(std::ptr::null(), self.name.as_ptr(), std::ptr::null())
        };
        (!format.is_null()).then_some(format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_decides_what_the_container_holds() {
        ffmpeg::init().expect("ffmpeg");
        let mp4 = OutputContainer::for_name("s3://bucket/out.mp4");
        let mkv = OutputContainer::for_name("/tmp/out.mkv");
        let mov = OutputContainer::for_name("out.mov");
        assert!(mp4.is_mp4_family() && mov.is_mp4_family() && !mkv.is_mp4_family());
        assert!(mkv.is_matroska() && !mp4.is_matroska());
        assert_eq!(
            mp4.video_tag(codec::Id::HEVC),
            Some(u32::from_le_bytes(*b"hvc1"))
        );
        assert_eq!(mp4.video_tag(codec::Id::H264), None);
        assert_eq!(mkv.video_tag(codec::Id::HEVC), None);
        assert_eq!(mp4.holds("pcm_s16le"), Some(false));
        assert_eq!(mov.holds("pcm_s16le"), Some(true));
        assert_eq!(mkv.holds("subrip"), Some(true));
        assert!(mkv.holds_attachment("ttf"));
        assert!(!mp4.holds_attachment("ttf"));
        assert_eq!(mp4.default_text_subtitle(), None);
        assert_eq!(mkv.default_text_subtitle(), Some(codec::Id::ASS));
        assert_eq!(OutputContainer::for_name("out.xyz").holds("aac"), None);
    }
}
