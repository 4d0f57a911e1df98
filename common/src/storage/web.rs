//! `https://` and `http://` inputs: read-only objects on a web server (a public R2 bucket,
//! a CDN, a presigned URL), read with ranged GETs as `s3://` objects are.
//!
//! - **One file, not two.** The first response fixes the object's size and validator (its
//!   ETag, else its Last-Modified); every later range must come back with the same one and
//!   as a `206` of exactly the bytes asked, else the read fails with "changed while the job
//!   read it" rather than mixing two files. The versions are kept per counted storage
//!   handle (one job's input on the orchestrator, one chunk on a worker), and a chunk is
//!   told the version its job's probe saw ([`WebObjects::pin`]), so every read of a job
//!   is of one version.
//! - **No server-side request forgery.** Every host is resolved here ([`GuardedResolver`]),
//!   and an address in the loopback, private, link-local, shared, multicast or
//!   unspecified ranges (the cloud metadata address 169.254.169.254 among them) is refused
//!   unless the host is listed in `storage.allowed_hosts`; so is a URL naming such an
//!   address itself. A non-empty `allowed_hosts` also refuses every host not listed.
//!   Redirects are followed (at most 5) only to hosts that pass the same rules; no proxy
//!   from the environment is used.
//! - **Retries.** A transient failure (connection, timeout, 5xx, 429) is tried again with
//!   exponential backoff, up to `storage.max_attempts` tries; every try is counted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_RANGE, ETAG, LAST_MODIFIED, RANGE};
use reqwest::{StatusCode, Url};

use super::{ObjectUri, StorageError, Transfer};
use crate::config::StorageConfig;

/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;

/// The hosts a URL may name, as a setting lists them (`storage.allowed_hosts` for web
/// inputs, `notify.allowed_hosts` for job notifications).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostPolicy {
    /// The entries as given, lower-case; empty allows any public host.
    allowed: Vec<String>,
    /// Each entry's host (brackets of an IPv6 address removed) and port, if it has one.
    entries: Vec<(String, Option<u16>)>,
    /// The setting that lists them, named in refusals.
    setting: &'static str,
}

impl HostPolicy {
    /// The policy of `config` for web inputs.
    pub fn new(config: &StorageConfig) -> Self {
        Self::listing(&config.allowed_hosts, "storage.allowed_hosts")
    }

    /// The policy of the hosts `setting` lists.
    pub fn listing(hosts: &[String], setting: &'static str) -> Self {
        let allowed: Vec<String> = hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let entries = allowed.iter().map(|entry| split_entry(entry)).collect();
        Self {
            allowed,
            entries,
            setting,
        }
    }

    /// True when `host` is listed, with `port` or without a port (`None`: any port).
    fn listed(&self, host: &str, port: Option<u16>) -> bool {
        let host = bare(host);
        self.entries.iter().any(|(name, listed_port)| {
            name == host && (listed_port.is_none() || port.is_none() || *listed_port == port)
        })
    }

    /// Refuses `url` unless its host may be read: listed, or, with an empty list, any
    /// host that is not itself a private address (names are checked once resolved).
    pub fn check(&self, url: &Url) -> Result<(), String> {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(0);
        if self.listed(host, Some(port)) {
            return Ok(());
        }
        if !self.allowed.is_empty() {
            return Err(format!(
                "host `{host}` is not in {} ({}); ask the operator to list it",
                self.setting,
                self.allowed.join(", ")
            ));
        }
        match bare(host).parse::<IpAddr>() {
            Ok(address) if !is_public(address) => Err(refusal(host, address, self.setting)),
            _ => Ok(()),
        }
    }
}

/// A host without the brackets of an IPv6 address.
fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` as host and port.
fn split_entry(entry: &str) -> (String, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host.to_string(), port);
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host.to_string(), port.parse().ok()),
        _ => (entry.to_string(), None),
    }
}

fn refusal(host: &str, address: IpAddr, setting: &str) -> String {
    format!(
        "host `{host}` is at {address}, a private, loopback, link-local or metadata address; \
         framefleet reaches such hosts only when {setting} lists them"
    )
}

/// True for addresses on the public internet: not loopback, private (RFC 1918, unique
/// local), link-local (the cloud metadata service's 169.254.169.254 included), shared
/// (100.64/10), multicast, broadcast, documentation or unspecified.
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves host names for the web client, leaving out every address that is not public
/// unless the host is listed: a name that resolves only to such addresses fails.
struct GuardedResolver {
    policy: HostPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if policy.listed(&host, None) {
                return Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs);
            }
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| is_public(a.ip()))
                .collect();
            match (public.is_empty(), found.first()) {
                (true, Some(first)) => Err(refusal(&host, first.ip(), policy.setting).into()),
                _ => Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// An HTTP client that reaches only the hosts `policy` allows: every name resolved by the
/// guard, redirects (at most 5) checked again, no proxy from the environment.
pub fn guarded_client(policy: &HostPolicy, connect: Duration, read: Duration) -> reqwest::Client {
    let redirect_policy = policy.clone();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match redirect_policy.check(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(reason) => attempt.error(format!("redirect refused: {reason}")),
        }
    });
    reqwest::Client::builder()
        .no_proxy()
        .redirect(redirects)
        .dns_resolver(Arc::new(GuardedResolver {
            policy: policy.clone(),
        }))
        .connect_timeout(connect)
        .read_timeout(read)
        .build()
        .unwrap_or_default()
}

/// What identifies one version of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    size: u64,
    validator: String,
}

/// The web client: one connection pool, the host rules, and the version of each object
/// read so far. Cheap to clone; clones share the versions.
#[derive(Clone)]
pub struct WebObjects {
    client: reqwest::Client,
    policy: HostPolicy,
    versions: Arc<Mutex<HashMap<Url, Version>>>,
    max_attempts: u32,
}

impl WebObjects {
    /// The client `config` describes.
    pub fn new(config: &StorageConfig) -> Self {
        let policy = HostPolicy::new(config);
        let client = guarded_client(
            &policy,
            Duration::from_secs_f64(config.connect_timeout_seconds.max(0.1)),
            Duration::from_secs_f64(config.attempt_timeout_seconds.max(0.1)),
        );
        Self {
            client,
            policy,
            versions: Arc::default(),
            max_attempts: config.max_attempts.max(1),
        }
    }

    /// The same client with no versions known yet (a new job or chunk).
    pub(super) fn fresh(&self) -> Self {
        Self {
            versions: Arc::default(),
            ..self.clone()
        }
    }

    /// The size and validator `url` was read at (`None` before any read).
    pub fn version(&self, url: &Url) -> Option<(u64, String)> {
        self.lock().get(url).map(|v| (v.size, v.validator.clone()))
    }

    /// Reads of `url` must find this size and validator (what the job's probe read).
    pub fn pin(&self, url: &Url, size: u64, validator: &str) {
        let version = Version {
            size,
            validator: validator.to_string(),
        };
        self.lock().insert(url.clone(), version);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Url, Version>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The object's size, from a one-byte ranged GET (servers answer HEAD less reliably).
    pub(super) async fn size(
        &self,
        url: &Url,
        uri: &ObjectUri,
        transfer: &Transfer,
    ) -> Result<u64, StorageError> {
        let (version, _) = self.get(url, uri, 0, 1, transfer).await?;
        Ok(version.size)
    }

    /// `len` bytes at `offset` (fewer at the end), checked against the object's version.
    pub(super) async fn read_range(
        &self,
        url: &Url,
        uri: &ObjectUri,
        offset: u64,
        len: u64,
        transfer: &Transfer,
    ) -> Result<Bytes, StorageError> {
        let (_, bytes) = self.get(url, uri, offset, len, transfer).await?;
        Ok(bytes)
    }

    /// One ranged GET, retried with backoff while it fails transiently.
    async fn get(
        &self,
        url: &Url,
        uri: &ObjectUri,
        offset: u64,
        len: u64,
        transfer: &Transfer,
    ) -> Result<(Version, Bytes), StorageError> {
        if let Err(reason) = self.policy.check(url) {
            return Err(StorageError::BadUri {
                uri: uri.to_string(),
                reason,
            });
        }
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_times(self.max_attempts as usize - 1);
        (|| self.get_once(url, uri, offset, len, transfer))
            .retry(backoff)
            .when(StorageError::is_transient)
            .await
    }

    async fn get_once(
        &self,
        url: &Url,
        uri: &ObjectUri,
        offset: u64,
        len: u64,
        transfer: &Transfer,
    ) -> Result<(Version, Bytes), StorageError> {
        let failed = |message: String, transient: bool| StorageError::Request {
            operation: "GET",
            uri: uri.to_string(),
            message,
            transient,
        };
        transfer.request();
        let last = offset + len.max(1) - 1;
        let response = self
            .client
            .get(url.clone())
            .header(RANGE, format!("bytes={offset}-{last}"))
            .send()
            .await
            .map_err(|e| failed(describe(&e), !is_refusal(&e)))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Err(StorageError::NotFound {
                uri: uri.to_string(),
            });
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
            return Ok((
                self.known(url).unwrap_or(Version {
                    size: offset,
                    validator: String::new(),
                }),
                Bytes::new(),
            ));
        }
        if status != StatusCode::PARTIAL_CONTENT {
            let transient = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
            let hint = if status.is_success() {
                ": the server ignores byte ranges; framefleet reads web inputs only from servers that honour them"
            } else {
                ""
            };
            return Err(failed(
                format!("the server answered {status}{hint}"),
                transient,
            ));
        }
        let version = version_of(response.headers(), offset)
            .ok_or_else(|| failed("the 206 response has no usable Content-Range".into(), false))?;
        self.check_version(url, uri, &version)?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| failed(describe(&e), true))?;
        transfer.receive(bytes.len());
        let expected = len.min(version.size.saturating_sub(offset));
        if bytes.len() as u64 != expected {
            return Err(failed(
                format!("{} bytes arrived of the {expected} asked", bytes.len()),
                true,
            ));
        }
        Ok((version, bytes))
    }

    fn known(&self, url: &Url) -> Option<Version> {
        self.lock().get(url).cloned()
    }

    /// Records the first version seen of `url`; refuses any later one that differs.
    fn check_version(
        &self,
        url: &Url,
        uri: &ObjectUri,
        version: &Version,
    ) -> Result<(), StorageError> {
        let mut versions = self.lock();
        match versions.get(url) {
            None => {
                versions.insert(url.clone(), version.clone());
                Ok(())
            }
            Some(first) if first == version => Ok(()),
            Some(first) => Err(StorageError::Request {
                operation: "GET",
                uri: uri.to_string(),
                message: format!(
                    "the object changed while the job read it (size {} and validator {} at first, \
                     now {} and {}); run the job again once it stays put",
                    first.size, first.validator, version.size, version.validator
                ),
                transient: false,
            }),
        }
    }
}

/// Size and validator from a `206`: `Content-Range: bytes a-b/size`, the ETag (else the
/// Last-Modified date).
fn version_of(headers: &HeaderMap, offset: u64) -> Option<Version> {
    let range = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let (span, size) = range.strip_prefix("bytes ")?.split_once('/')?;
    let start: u64 = span.split_once('-')?.0.parse().ok()?;
    if start != offset {
        return None;
    }
    let validator = headers
        .get(ETAG)
        .or_else(|| headers.get(LAST_MODIFIED))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Some(Version {
        size: size.parse().ok()?,
        validator,
    })
}

/// A refused host or redirect is not worth another try.
fn is_refusal(error: &reqwest::Error) -> bool {
    let text = describe(error);
    error.is_redirect() || text.contains("storage.allowed_hosts")
}

/// The error with its causes, which reqwest keeps apart.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str]) -> HostPolicy {
        HostPolicy::new(&StorageConfig {
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..StorageConfig::default()
        })
    }

    fn url(text: &str) -> Url {
        Url::parse(text).expect("url")
    }

    #[test]
    fn private_and_metadata_addresses_are_refused_unless_listed() {
        let open = policy(&[]);
        for refused in [
            "http://127.0.0.1/x.mp4",
            "http://10.1.2.3/x.mp4",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/x.mp4",
            "http://[::ffff:192.168.1.1]/x.mp4",
            "http://100.64.0.1/x.mp4",
        ] {
            let reason = open.check(&url(refused)).expect_err(refused);
            assert!(reason.contains("storage.allowed_hosts"), "{reason}");
        }
        assert!(open.check(&url("https://cdn.example.com/x.mp4")).is_ok());
        assert!(open.check(&url("https://93.184.216.34/x.mp4")).is_ok());
        let listed = policy(&["127.0.0.1:8080", "media.example.com"]);
        assert!(listed.check(&url("http://127.0.0.1:8080/x.mp4")).is_ok());
        assert!(listed
            .check(&url("https://media.example.com/a/b.mp4"))
            .is_ok());
        let reason = listed
            .check(&url("http://127.0.0.1:9090/x.mp4"))
            .expect_err("another port");
        assert!(reason.contains("not in storage.allowed_hosts"), "{reason}");
        assert!(listed.check(&url("https://cdn.example.com/x.mp4")).is_err());
    }

    #[test]
    fn versions_come_from_the_content_range_and_the_etag() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_RANGE, "bytes 100-199/5000".parse().expect("header"));
        headers.insert(ETAG, "\"abc\"".parse().expect("header"));
        let version = version_of(&headers, 100).expect("version");
        assert_eq!(version.size, 5000);
        assert_eq!(version.validator, "\"abc\"");
        assert!(
            version_of(&headers, 0).is_none(),
            "a range that starts elsewhere"
        );
    }
}
