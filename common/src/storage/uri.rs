//! Object URIs: `file:///absolute/path`, `s3://bucket/key` and, for inputs,
//! `https://host/path` or `http://host/path`, parsed and validated once.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use super::StorageError;

/// Where an object lives. Keys and paths are validated: no `..`, no relative paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectUri {
    /// A local file (or, for prefixes, a directory).
    File(PathBuf),
    /// An object in an S3-compatible bucket.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Object key (or key prefix), without a leading `/`.
        key: String,
    },
    /// A read-only object on a web server (`https://` or `http://`).
    Web(reqwest::Url),
}

impl ObjectUri {
    /// The URI of `name` under this one, treating this one as a directory or key prefix.
    pub fn join(&self, name: &str) -> Result<ObjectUri, StorageError> {
        let name = name.trim_start_matches('/');
        match self {
            ObjectUri::File(path) => {
                parse_file(&path.join(name).to_string_lossy(), &self.to_string())
            }
            ObjectUri::S3 { bucket, key } => {
                let key = if key.is_empty() || key.ends_with('/') {
                    format!("{key}{name}")
                } else {
                    format!("{key}/{name}")
                };
                check_key(&key, &self.to_string())?;
                Ok(ObjectUri::S3 {
                    bucket: bucket.clone(),
                    key,
                })
            }
            ObjectUri::Web(url) => {
                let mut joined = url.clone();
                joined.set_query(None);
                let path = format!("{}/{name}", url.path().trim_end_matches('/'));
                joined.set_path(&path);
                Ok(ObjectUri::Web(joined))
            }
        }
    }

    /// The directory or key prefix holding this object.
    pub fn parent(&self) -> ObjectUri {
        match self {
            ObjectUri::File(path) => {
                ObjectUri::File(path.parent().unwrap_or(Path::new("/")).to_path_buf())
            }
            ObjectUri::S3 { bucket, key } => ObjectUri::S3 {
                bucket: bucket.clone(),
                key: key
                    .rsplit_once('/')
                    .map(|(prefix, _)| prefix.to_string())
                    .unwrap_or_default(),
            },
            ObjectUri::Web(url) => {
                let mut parent = url.clone();
                parent.set_query(None);
                if let Ok(mut segments) = parent.path_segments_mut() {
                    segments.pop();
                }
                ObjectUri::Web(parent)
            }
        }
    }

    /// The last path segment, e.g. `out.mp4`.
    pub fn file_name(&self) -> &str {
        match self {
            ObjectUri::File(path) => path.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            ObjectUri::S3 { key, .. } => key.rsplit('/').next().unwrap_or(""),
            ObjectUri::Web(url) => url.path().rsplit('/').next().unwrap_or(""),
        }
    }
}

impl FromStr for ObjectUri {
    type Err = StorageError;

    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        if uri.len() > MAX_URI_BYTES {
            return Err(bad(
                uri,
                &format!(
                    "the URI is {} bytes long; at most {MAX_URI_BYTES} are accepted",
                    uri.len()
                ),
            ));
        }
        if let Some(path) = uri.strip_prefix("file://") {
            return parse_file(path, uri);
        }
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !valid_bucket {
                return Err(bad(
                    uri,
                    "the bucket name must be 3-63 lower-case letters, digits, '-' or '.'",
                ));
            }
            check_key(key, uri)?;
            return Ok(ObjectUri::S3 {
                bucket: bucket.to_string(),
                key: key.to_string(),
            });
        }
        if uri.starts_with("https://") || uri.starts_with("http://") {
            let url = reqwest::Url::parse(uri).map_err(|e| bad(uri, &format!("not a URL: {e}")))?;
            if url.host_str().is_none_or(str::is_empty) || !url.username().is_empty() {
                return Err(bad(
                    uri,
                    "a web input needs a host and no user name in the URL",
                ));
            }
            return Ok(ObjectUri::Web(url));
        }
        Err(bad(
            uri,
            "unsupported scheme; use file:///absolute/path, s3://bucket/key or https://host/path",
        ))
    }
}

impl fmt::Display for ObjectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectUri::File(path) => write!(f, "file://{}", path.display()),
            ObjectUri::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            ObjectUri::Web(url) => write!(f, "{url}"),
        }
    }
}

/// Longest URI accepted, in bytes.
pub const MAX_URI_BYTES: usize = 4608;
/// Longest `file://` path (Linux's `PATH_MAX` less its NUL).
const MAX_PATH_BYTES: usize = 4095;
/// Longest name of one folder or file in a path (Linux's `NAME_MAX`).
const MAX_NAME_BYTES: usize = 255;

/// A refusal of `uri`, which is quoted escaped and, when long, shortened.
fn bad(uri: &str, reason: &str) -> StorageError {
    StorageError::BadUri {
        uri: crate::text::printable(&crate::text::bounded(uri, 256)).into_owned(),
        reason: reason.to_string(),
    }
}

fn parse_file(path: &str, uri: &str) -> Result<ObjectUri, StorageError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(bad(
            uri,
            &format!(
                "the path is {} bytes long; paths may have at most {MAX_PATH_BYTES}",
                path.len()
            ),
        ));
    }
    if path.chars().any(char::is_control) {
        return Err(bad(
            uri,
            "control characters (newlines, escapes) are not allowed in paths",
        ));
    }
    let path = Path::new(path);
    if let Some(long) = path
        .components()
        .map(|c| c.as_os_str().len())
        .find(|&len| len > MAX_NAME_BYTES)
    {
        return Err(bad(
            uri,
            &format!("a name in the path is {long} bytes long; file systems take at most {MAX_NAME_BYTES}"),
        ));
    }
    if !path.is_absolute() {
        return Err(bad(
            uri,
            "file URIs need an absolute path: file:///dir/name",
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(bad(uri, "'..' and '.' are not allowed in paths"));
    }
    Ok(ObjectUri::File(path.to_path_buf()))
}

fn check_key(key: &str, uri: &str) -> Result<(), StorageError> {
    if key.len() > 1024 {
        return Err(bad(uri, "the key is longer than 1024 bytes"));
    }
    if key
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return Err(bad(uri, "'..' and '.' are not allowed in keys"));
    }
    if key.chars().any(char::is_control) {
        return Err(bad(uri, "control characters are not allowed in keys"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_schemes() {
        let uri: ObjectUri = "s3://media-bucket/in/clip.mp4".parse().expect("valid");
        assert_eq!(
            uri,
            ObjectUri::S3 {
                bucket: "media-bucket".into(),
                key: "in/clip.mp4".into()
            }
        );
        assert_eq!(uri.to_string(), "s3://media-bucket/in/clip.mp4");
        assert_eq!(uri.parent().to_string(), "s3://media-bucket/in");
        assert_eq!(uri.file_name(), "clip.mp4");
        let file: ObjectUri = "file:///tmp/a/b.mp4".parse().expect("valid");
        assert_eq!(
            file.parent().join("c").expect("join").to_string(),
            "file:///tmp/a/c"
        );
    }

    #[test]
    fn rejects_escapes_and_unknown_schemes() {
        for uri in [
            "file://relative/path",
            "file:///tmp/../etc/passwd",
            "s3://bucket/a/../b",
            "ftp://example.com/x.mp4",
            "https://user@example.com/x.mp4",
            "s3://B/x",
            "/tmp/plain-path.mp4",
        ] {
            let error = uri.parse::<ObjectUri>().expect_err(uri);
            assert!(error.to_string().contains(uri), "{error}");
        }
    }

    #[test]
    fn long_names_and_control_characters_are_refused_with_a_short_quote() {
        let long_name = format!("file:///data/{}.mp4", "n".repeat(300));
        let error = long_name.parse::<ObjectUri>().expect_err("name too long");
        assert!(error.to_string().contains("at most 255"), "{error}");
        assert!(error.to_string().len() < 600, "{error}");
        let huge = format!("s3://bucket/{}", "k".repeat(100_000));
        let error = huge.parse::<ObjectUri>().expect_err("too long");
        assert!(error.to_string().contains("at most 4608"), "{error}");
        assert!(error.to_string().len() < 600, "{error}");
        let forged = "file:///data/a.mp4\n2026-01-01 INFO job succeeded";
        let error = forged.parse::<ObjectUri>().expect_err("newline");
        assert!(!error.to_string().contains('\n'), "{error}");
        assert!(error.to_string().contains("control characters"), "{error}");
    }
}
