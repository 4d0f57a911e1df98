//! Text that came from outside, made safe to show and to send: error messages bounded so
//! a gRPC status always arrives with its cause (its message travels in an HTTP/2 header,
//! and a long one breaks the stream as "h2 protocol error"), and request text escaped
//! wherever it is printed or logged, so a newline or an escape sequence cannot forge a
//! log line or drive a terminal.

use std::borrow::Cow;

/// Longest error message a status carries, in bytes; longer ones keep their start and
/// end (where the cause usually is) and say how much was left out.
pub const MAX_STATUS_BYTES: usize = 2048;

/// `status` with its message cut to [`MAX_STATUS_BYTES`].
pub fn bounded_status(status: tonic::Status) -> tonic::Status {
    if status.message().len() <= MAX_STATUS_BYTES {
        return status;
    }
    tonic::Status::new(status.code(), bounded(status.message(), MAX_STATUS_BYTES))
}

/// `text` cut to about `most` bytes: its start and its end, with the bytes left out
/// between them counted.
pub fn bounded(text: &str, most: usize) -> Cow<'_, str> {
    if text.len() <= most {
        return Cow::Borrowed(text);
    }
    let head = floor_boundary(text, most * 2 / 3);
    let tail = ceil_boundary(text, text.len() - most / 3);
    Cow::Owned(format!(
        "{} [... {} bytes left out ...] {}",
        &text[..head],
        tail - head,
        &text[tail..]
    ))
}

/// `text` with control characters (newlines, escapes) written as escapes, for printing
/// and logging text a request carried.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_keeps_its_start_and_end_and_counts_the_rest() {
        let long = format!("PUT file:///out/{}: File name too long", "é".repeat(50_000));
        let cut = bounded_status(tonic::Status::internal(long.clone()));
        assert!(cut.message().len() <= MAX_STATUS_BYTES + 64);
        assert!(cut.message().starts_with("PUT file:///out/"));
        assert!(cut.message().ends_with("File name too long"));
        assert!(cut.message().contains("bytes left out"));
        assert_eq!(cut.code(), tonic::Code::Internal);
        assert_eq!(bounded("short", 10), "short");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(printable("plain é"), "plain é");
    }
}
