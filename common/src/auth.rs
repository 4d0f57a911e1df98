//! Who may call whom: bearer tokens on every RPC and TLS on every connection, when
//! configured (`auth` and `tls` in the [configuration](crate::config)).
//!
//! Two tokens, because two kinds of caller: `auth.client_token` for users of the
//! `Orchestrator` service (the CLI, a backend), `auth.fleet_token` between the orchestrator
//! and its workers (`Fleet` one way, `Worker` the other). Servers check them with
//! [`RequireToken`] in constant time; clients attach them with [`AttachToken`]. Health
//! checks stay open, for load balancers and Kubernetes probes. Tokens never reach a log:
//! the configuration's `Debug` redacts them and refusals do not echo what was presented.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::config::TlsConfig;

/// Auth or TLS settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A PEM file could not be read.
    #[error("cannot read {what} at {path}: {source}; check `{key}`")]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// Its path.
        path: String,
        /// The configuration key naming it.
        key: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// An `https://` URL without a CA to check the server against.
    #[error("{url} is https but `tls.ca_path` is empty: set it to the PEM of the CA that signed the server's certificate")]
    NoCa {
        /// The URL.
        url: String,
    },
    /// The URL does not parse or TLS cannot be set up for it.
    #[error("cannot connect to {url}: {message}")]
    Endpoint {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// Server side: refuses calls without `authorization: Bearer <token>` when a token is set.
#[derive(Clone)]
pub struct RequireToken {
    expected: Option<Arc<[u8]>>,
    key: &'static str,
}

impl RequireToken {
    /// Requires `token` (nothing when empty); `key` names the setting callers need.
    pub fn new(token: &str, key: &'static str) -> Self {
        Self {
            expected: (!token.is_empty())
                .then(|| Arc::from(format!("Bearer {token}").into_bytes().into_boxed_slice())),
            key,
        }
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .map(MetadataValue::as_bytes)
            .unwrap_or_default();
        if bool::from(presented.ct_eq(expected)) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(format!(
                "missing or wrong bearer token: send `authorization: Bearer <token>` with the token configured as `{}`",
                self.key
            )))
        }
    }
}

/// Client side: adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone, Default)]
pub struct AttachToken {
    value: Option<MetadataValue<Ascii>>,
}

impl AttachToken {
    /// Attaches `token` (nothing when empty). Configuration validation guarantees the token
    /// is a valid header value; one that is not is left off, and the server refuses.
    pub fn new(token: &str) -> Self {
        Self {
            value: (!token.is_empty())
                .then(|| format!("Bearer {token}").parse().ok())
                .flatten(),
        }
    }
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.value {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Picks rustls' crypto provider for the process, once: two are linked (tonic's `ring`,
/// the S3 SDK's `aws-lc-rs`), and rustls refuses to guess.
fn choose_crypto_provider() {
    static CHOSEN: std::sync::Once = std::sync::Once::new();
    CHOSEN.call_once(|| {
        // Fails only when a provider is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The server's TLS identity, when `tls.cert_path` is set.
pub fn server_tls(tls: &TlsConfig) -> Result<Option<ServerTlsConfig>, AuthError> {
    if tls.cert_path.is_empty() {
        return Ok(None);
    }
    choose_crypto_provider();
    let cert = read_pem("certificate", &tls.cert_path, "tls.cert_path")?;
    let key = read_pem("private key", &tls.key_path, "tls.key_path")?;
    Ok(Some(
        ServerTlsConfig::new().identity(Identity::from_pem(cert, key)),
    ))
}

/// An endpoint for `url`; `https://` URLs use TLS, checking the server against
/// `tls.ca_path`.
pub fn endpoint(url: &str, tls: &TlsConfig) -> Result<Endpoint, AuthError> {
    let failed = |message: String| AuthError::Endpoint {
        url: url.to_string(),
        message,
    };
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| failed(e.to_string()))?;
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    if tls.ca_path.is_empty() {
        return Err(AuthError::NoCa {
            url: url.to_string(),
        });
    }
    choose_crypto_provider();
    let ca = read_pem("CA certificate", &tls.ca_path, "tls.ca_path")?;
    endpoint
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .map_err(|e| failed(e.to_string()))
}

/// The URL scheme servers advertise: `https` when they serve TLS.
pub fn scheme(tls: &TlsConfig) -> &'static str {
    if tls.cert_path.is_empty() {
        "http"
    } else {
        "https"
    }
}

fn read_pem(what: &'static str, path: &str, key: &'static str) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|source| AuthError::Read {
        what,
        path: path.to_string(),
        key,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(header: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = header {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("header"));
        }
        request
    }

    #[test]
    fn only_the_configured_token_passes() {
        let mut open = RequireToken::new("", "auth.client_token");
        assert!(open.call(request(None)).is_ok());
        let mut guarded = RequireToken::new("s3cret-token-0123456789", "auth.client_token");
        for header in [None, Some("Bearer wrong"), Some("s3cret-token-0123456789")] {
            let refused = guarded.call(request(header)).expect_err("refused");
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
            assert!(refused.message().contains("auth.client_token"));
            assert!(!refused.message().contains("s3cret"));
        }
        let mut attach = AttachToken::new("s3cret-token-0123456789");
        let attached = attach.call(Request::new(())).expect("attach");
        assert!(guarded.call(attached).is_ok());
    }

    #[test]
    fn https_needs_a_ca_and_bad_pem_paths_are_named() {
        let tls = TlsConfig::default();
        assert!(endpoint("http://127.0.0.1:1", &tls).is_ok());
        let error = endpoint("https://127.0.0.1:1", &tls).expect_err("no CA");
        assert!(error.to_string().contains("tls.ca_path"));
        let tls = TlsConfig {
            cert_path: "/nonexistent/cert.pem".into(),
            ..TlsConfig::default()
        };
        let error = server_tls(&tls).expect_err("missing file");
        assert!(error.to_string().contains("tls.cert_path"));
    }
}
