//! Which objects a job may name: `s3://` URIs in the configured buckets, `file://`
//! paths under the configured local roots and web inputs on the allowed hosts
//! (`storage.allowed_buckets`, `storage.local_roots`, `storage.allowed_hosts`; an empty
//! list allows any, but never a private address for a web input). A path must start with
//! a root and resolve beneath it through every link of its existing part (a path that
//! does not exist yet is checked through its closest existing parent, which must be a
//! directory, with or without roots), as [`LocalFiles`] resolves it again at every open. `..` never gets this far: [`ObjectUri`] refuses it
//! when parsing.

use super::local::LocalFiles;
use super::web::HostPolicy;
use super::{ObjectUri, StorageError};
use crate::config::StorageConfig;

/// The buckets and local roots jobs may use.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    buckets: Vec<String>,
    /// The local roots (or anywhere), opened.
    local: LocalFiles,
    /// The hosts web inputs may name.
    hosts: HostPolicy,
}

impl AccessPolicy {
    /// The policy `config` describes; roots that do not exist allow nothing.
    pub fn new(config: &StorageConfig) -> Self {
        Self {
            buckets: config.allowed_buckets.clone(),
            local: LocalFiles::new(&config.local_roots),
            hosts: HostPolicy::new(config),
        }
    }

    /// Refuses `uri` (named `what` in the message) unless the policy allows it.
    pub fn check(&self, uri: &ObjectUri, what: &str) -> Result<(), StorageError> {
        let refuse = |reason: String| StorageError::BadUri {
            uri: uri.to_string(),
            reason,
        };
        match uri {
            ObjectUri::Web(url) => self
                .hosts
                .check(url)
                .map_err(|reason| refuse(format!("the {what} cannot be read: {reason}"))),
            ObjectUri::S3 { bucket, .. } => {
                if self.buckets.is_empty() || self.buckets.iter().any(|b| b == bucket) {
                    Ok(())
                } else {
                    Err(refuse(format!(
                        "the {what} is in bucket `{bucket}`, which this orchestrator does not serve \
                         (storage.allowed_buckets: {})",
                        self.buckets.join(", ")
                    )))
                }
            }
            ObjectUri::File(path) => self.local.check(path).map_err(|error| {
                refuse(match error.kind() {
                    std::io::ErrorKind::PermissionDenied => format!("the {what} {error}"),
                    _ => format!(
                        "the {what} cannot be reached ({error}); check that every folder \
                             on its path is a directory"
                    ),
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_buckets_and_roots_are_allowed_even_through_symlinks() {
        let inside = tempfile::tempdir().expect("root");
        let outside = tempfile::tempdir().expect("elsewhere");
        std::fs::write(outside.path().join("secret.mp4"), b"x").expect("file");
        std::os::unix::fs::symlink(outside.path(), inside.path().join("link")).expect("link");
        let policy = AccessPolicy::new(&StorageConfig {
            allowed_buckets: vec!["media".into()],
            local_roots: vec![inside.path().display().to_string()],
            ..StorageConfig::default()
        });
        let uri = |text: String| text.parse::<ObjectUri>().expect("uri");
        let root = inside.path().display();
        assert!(policy
            .check(&uri("s3://media/a.mp4".into()), "input")
            .is_ok());
        let other = policy
            .check(&uri("s3://other/a.mp4".into()), "input")
            .expect_err("other bucket");
        assert!(other.to_string().contains("storage.allowed_buckets"));
        assert!(policy
            .check(&uri(format!("file://{root}/in.mp4")), "input")
            .is_ok());
        assert!(policy
            .check(&uri(format!("file://{root}/new/dir/out.mp4")), "output")
            .is_ok());
        let escaped = policy
            .check(&uri(format!("file://{root}/link/secret.mp4")), "input")
            .expect_err("symlink escape");
        assert!(
            escaped.to_string().contains("storage.local_roots"),
            "{escaped}"
        );
        assert!(policy
            .check(&uri("file:///etc/passwd".into()), "input")
            .is_err());
        assert!("file:///tmp/../etc/passwd".parse::<ObjectUri>().is_err());
        let open = AccessPolicy::new(&StorageConfig::default());
        assert!(open
            .check(&uri("file:///etc/passwd".into()), "input")
            .is_ok());
    }
}
