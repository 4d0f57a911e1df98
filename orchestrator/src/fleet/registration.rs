//! Where a worker's registration is checked, once, into a [`Registration`] the fleet
//! trusts. A worker holds the fleet token, but its request is still a request: the
//! orchestrator dials the address it gives (with the fleet token in every call), prints
//! its name and GPU type, and sizes its queue by its slots. So the address must be an
//! `http://` or `https://` host the fleet may reach (`orchestrator.worker_hosts`; never a
//! link-local, metadata, multicast or unspecified address when that list is empty), and
//! every other field has a bound, each refusal naming the field and the bound.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use tonic::transport::Uri;

use framefleet_common::codec::VideoEncoder;
use framefleet_common::config::Config;
use framefleet_common::proto::RegisterWorkerRequest;
use framefleet_common::text::{bounded, printable};

/// Most slots one worker may offer.
pub const MAX_SLOTS: u32 = 256;
/// Most GPUs one worker may hold, and one slot.
pub const MAX_GPUS: u32 = 64;
/// Longest address, in bytes.
const MAX_ADDRESS_BYTES: usize = 256;
/// Longest name or GPU type, in bytes.
const MAX_NAME_BYTES: usize = 128;
/// Most models a worker may report loaded, and the longest name of one.
const MAX_MODELS: usize = 16;
const MAX_MODEL_BYTES: usize = 512;
/// Most encoders or decoders a worker may report.
const MAX_CODECS: usize = 16;
/// Longest cold start a worker may report, in seconds (a day).
const MAX_COLD_START_SECONDS: f64 = 86_400.0;
/// Longest wait for a worker's host name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A worker's registration was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid worker registration: {0}")]
pub struct RegisterError(pub String);

/// A registration that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The `http://` or `https://` address to dial.
    pub address: String,
    /// Name for reports (the address when the worker gave none).
    pub name: String,
    /// GPU type, one with a price.
    pub gpu_type: String,
    /// Chunks it runs at once, 1 to [`MAX_SLOTS`].
    pub slots: u32,
    /// GPUs one slot holds with every slot busy (a fraction when slots share GPUs).
    pub gpus_per_slot: f64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Seconds from its start to this registration.
    pub cold_start_seconds: f64,
    /// Models it holds loaded.
    pub models: Vec<String>,
    /// Video encoders it can open (libx264 when it named none).
    pub encoders: Vec<VideoEncoder>,
    /// Its decoders: `software`, and `nvdec`.
    pub decoders: Vec<String>,
    /// It registered before (its cold start was already counted).
    pub rejoining: bool,
}

/// What registrations are checked against: the hosts workers may be on and the GPU types
/// with a price.
#[derive(Debug, Clone)]
pub struct RegistrationPolicy {
    hosts: Vec<HostRule>,
    priced: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum HostRule {
    Name(String),
    Network(IpAddr, u8),
}

impl RegistrationPolicy {
    /// The policy of `config`; an entry of `orchestrator.worker_hosts` that is neither a
    /// host name, an address nor a CIDR block is refused, named.
    pub fn new(config: &Config) -> Result<Self, RegisterError> {
        let hosts = config
            .orchestrator
            .worker_hosts
            .iter()
            .map(|entry| host_rule(entry))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            hosts,
            priced: config.pricing.keys().cloned().collect(),
        })
    }

    /// Checks `request` into a [`Registration`], resolving a host name to check where it
    /// leads.
    pub async fn check(
        &self,
        request: RegisterWorkerRequest,
    ) -> Result<Registration, RegisterError> {
        let host = address_host(&request.address)?;
        self.check_host(&host).await?;
        let name = text_field("name", &request.name, MAX_NAME_BYTES)?;
        let gpu_type = self.check_gpu_type(&request.gpu_type)?;
        let slots = bounded_count("slots", request.slots, 1, MAX_SLOTS)?;
        let gpus_per_slot = gpus_per_slot(&request)?;
        let cold_start_seconds = request.cold_start_seconds;
        if !(cold_start_seconds.is_finite()
            && (0.0..=MAX_COLD_START_SECONDS).contains(&cold_start_seconds))
        {
            return refuse(format!(
                "cold_start_seconds {cold_start_seconds} is not 0 to {MAX_COLD_START_SECONDS}"
            ));
        }
        Ok(Registration {
            name: if name.is_empty() {
                request.address.clone()
            } else {
                name
            },
            address: request.address,
            gpu_type,
            slots,
            gpus_per_slot,
            device: check_device(&request.device)?,
            cold_start_seconds,
            models: check_models(request.models)?,
            encoders: check_encoders(&request.encoders)?,
            decoders: check_decoders(request.decoders)?,
            rejoining: request.rejoining,
        })
    }

    /// Refuses a host not listed (with a list), or one that is or resolves to a link-local,
    /// multicast, broadcast or unspecified address.
    async fn check_host(&self, host: &str) -> Result<(), RegisterError> {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let address = literal.parse::<IpAddr>().ok();
        if !self.hosts.is_empty() {
            let listed = self.hosts.iter().any(|rule| match (rule, address) {
                (HostRule::Name(name), _) => name.eq_ignore_ascii_case(literal),
                (HostRule::Network(network, bits), Some(address)) => {
                    in_network(address, *network, *bits)
                }
                (HostRule::Network(..), None) => false,
            });
            return if listed {
                Ok(())
            } else {
                refuse(format!(
                    "the address's host `{}` is not in orchestrator.worker_hosts; ask the operator \
                     to list it",
                    printable(literal)
                ))
            };
        }
        let addresses = match address {
            Some(address) => vec![address],
            None => resolve(literal).await?,
        };
        match addresses.into_iter().find(|a| !dialable(*a)) {
            Some(bad) => refuse(format!(
                "the address's host `{}` is at {bad}, a link-local, metadata, multicast, \
                 broadcast or unspecified address, which the orchestrator never dials; list \
                 the fleet's hosts in orchestrator.worker_hosts to allow other ones",
                printable(literal)
            )),
            None => Ok(()),
        }
    }

    fn check_gpu_type(&self, gpu_type: &str) -> Result<String, RegisterError> {
        if self.priced.contains(gpu_type) {
            return Ok(gpu_type.to_string());
        }
        refuse(format!(
            "gpu_type `{}` has no price in this orchestrator's [pricing]; use one of: {}",
            printable(&bounded(gpu_type, 64)),
            self.priced.iter().cloned().collect::<Vec<_>>().join(", ")
        ))
    }
}

fn refuse<T>(message: String) -> Result<T, RegisterError> {
    Err(RegisterError(message))
}

/// The host of an `http://` or `https://` address with a port and nothing else.
fn address_host(address: &str) -> Result<String, RegisterError> {
    if address.len() > MAX_ADDRESS_BYTES {
        return refuse(format!(
            "address is {} bytes; at most {MAX_ADDRESS_BYTES}",
            address.len()
        ));
    }
    let shown = printable(address);
    let form = "must be http://HOST:PORT or https://HOST:PORT, with no user, path or query";
    let uri: Uri = address
        .parse()
        .map_err(|e| RegisterError(format!("address `{shown}` is not a URL ({e}); it {form}")))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let path_ok = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
    let authority = uri.authority();
    let plain = authority.is_some_and(|a| !a.as_str().contains('@') && a.port_u16().is_some());
    match authority {
        Some(authority) if scheme_ok && path_ok && plain => Ok(authority.host().to_string()),
        _ => refuse(format!("address `{shown}` {form}")),
    }
}

/// Resolves `host` (with a deadline) to the addresses it leads to.
async fn resolve(host: &str) -> Result<Vec<IpAddr>, RegisterError> {
    let lookup = tokio::net::lookup_host((host, 0));
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(found)) => Ok(found.map(|a| a.ip()).collect()),
        _ => refuse(format!(
            "the address's host `{}` does not resolve; register with an address the \
             orchestrator can reach",
            printable(host)
        )),
    }
}

/// True for addresses a worker may be on: not link-local (the cloud metadata service's
/// 169.254.169.254 included), multicast, broadcast or unspecified.
fn dialable(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            !(v4.is_link_local() || v4.is_multicast() || v4.is_broadcast() || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            let mapped = v6
                .to_ipv4_mapped()
                .is_none_or(|v4| dialable(IpAddr::V4(v4)));
            !(link_local || v6.is_multicast() || v6.is_unspecified()) && mapped
        }
    }
}

/// One entry of `orchestrator.worker_hosts`.
fn host_rule(entry: &str) -> Result<HostRule, RegisterError> {
    let bad = || {
        RegisterError(format!(
            "orchestrator.worker_hosts entry `{}` is not a host name, an IP address or a CIDR \
             block like 10.0.0.0/8",
            printable(entry)
        ))
    };
    if let Some((network, bits)) = entry.split_once('/') {
        let network: IpAddr = network.parse().map_err(|_| bad())?;
        let most = if network.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits.parse().ok().filter(|b| *b <= most).ok_or_else(bad)?;
        return Ok(HostRule::Network(network, bits));
    }
    if let Ok(address) = entry
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        let bits = if address.is_ipv4() { 32 } else { 128 };
        return Ok(HostRule::Network(address, bits));
    }
    let name_chars = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if entry.is_empty() || entry.len() > 253 || !entry.chars().all(name_chars) {
        return Err(bad());
    }
    Ok(HostRule::Name(entry.to_ascii_lowercase()))
}

/// True when `address` is in `network`/`bits` (an IPv4 address is never in an IPv6 block).
fn in_network(address: IpAddr, network: IpAddr, bits: u8) -> bool {
    let (address, network, width) = match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u128::from(u32::from(a)), u128::from(u32::from(n)), 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    shift >= width || (address >> shift) == (network >> shift)
}

/// `value` (field `field`) when it has at most `most` bytes and no control character.
fn text_field(field: &str, value: &str, most: usize) -> Result<String, RegisterError> {
    if value.len() > most || value.chars().any(char::is_control) {
        return refuse(format!(
            "{field} is {} bytes or holds control characters; give at most {most} printable bytes",
            value.len()
        ));
    }
    Ok(value.to_string())
}

fn bounded_count(field: &str, value: u32, least: u32, most: u32) -> Result<u32, RegisterError> {
    if (least..=most).contains(&value) {
        Ok(value)
    } else {
        refuse(format!("{field} is {value}; give {least} to {most}"))
    }
}

/// GPUs one slot holds with every slot busy: its GPUs over its slots (shared GPUs give a
/// fraction), or `gpus_per_slot` from a worker that gives no GPU count.
fn gpus_per_slot(request: &RegisterWorkerRequest) -> Result<f64, RegisterError> {
    let gpus = bounded_count("gpus", request.gpus, 0, MAX_GPUS)?;
    if gpus > 0 {
        return Ok(f64::from(gpus) / f64::from(request.slots.max(1)));
    }
    let per_slot = bounded_count("gpus_per_slot", request.gpus_per_slot, 1, MAX_GPUS)?;
    Ok(f64::from(per_slot))
}

fn check_device(device: &str) -> Result<String, RegisterError> {
    let ordinal_ok =
        |n: &str| !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit());
    match device {
        "" => Ok("cpu".into()),
        "cpu" | "cuda" => Ok(device.into()),
        _ if device.strip_prefix("cuda:").is_some_and(ordinal_ok) => Ok(device.into()),
        _ => refuse(format!(
            "device `{}` is not cpu, cuda or cuda:N",
            printable(&bounded(device, 64))
        )),
    }
}

fn check_models(models: Vec<String>) -> Result<Vec<String>, RegisterError> {
    if models.len() > MAX_MODELS {
        return refuse(format!(
            "{} models reported; at most {MAX_MODELS}",
            models.len()
        ));
    }
    for model in &models {
        text_field("a model name", model, MAX_MODEL_BYTES)?;
    }
    Ok(models)
}

fn check_encoders(names: &[String]) -> Result<Vec<VideoEncoder>, RegisterError> {
    if names.len() > MAX_CODECS {
        return refuse(format!(
            "{} encoders reported; at most {MAX_CODECS}",
            names.len()
        ));
    }
    if names.is_empty() {
        return Ok(vec![VideoEncoder::Libx264]);
    }
    names
        .iter()
        .map(|name| {
            name.parse()
                .map_err(|e: framefleet_common::codec::UnknownEncoder| {
                    RegisterError(printable(&bounded(&e.to_string(), 256)).into_owned())
                })
        })
        .collect()
}

fn check_decoders(decoders: Vec<String>) -> Result<Vec<String>, RegisterError> {
    if decoders.len() > MAX_CODECS {
        return refuse(format!(
            "{} decoders reported; at most {MAX_CODECS}",
            decoders.len()
        ));
    }
    match decoders
        .iter()
        .find(|d| !matches!(d.as_str(), "software" | "nvdec"))
    {
        Some(unknown) => refuse(format!(
            "decoder `{}` is not software or nvdec",
            printable(&bounded(unknown, 64))
        )),
        None => Ok(decoders),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(address: &str) -> RegisterWorkerRequest {
        RegisterWorkerRequest {
            address: address.into(),
            name: "w".into(),
            gpu_type: "cpu".into(),
            slots: 2,
            gpus_per_slot: 1,
            device: "cpu".into(),
            ..RegisterWorkerRequest::default()
        }
    }

    async fn refusal(policy: &RegistrationPolicy, request: RegisterWorkerRequest) -> String {
        policy
            .check(request)
            .await
            .expect_err("refused")
            .to_string()
    }

    #[tokio::test]
    async fn a_sane_worker_registers_and_absurd_fields_are_refused_by_name() {
        let policy = RegistrationPolicy::new(&Config::default()).expect("policy");
        let registered = policy
            .check(request("http://127.0.0.1:50061"))
            .await
            .expect("ok");
        assert_eq!((registered.slots, registered.gpus_per_slot), (2, 1.0));
        assert_eq!(registered.encoders, [VideoEncoder::Libx264]);
        let cases: Vec<(RegisterWorkerRequest, &str)> = vec![
            (
                RegisterWorkerRequest {
                    slots: u32::MAX,
                    ..request("http://10.0.0.5:1")
                },
                "slots",
            ),
            (
                RegisterWorkerRequest {
                    slots: 0,
                    ..request("http://10.0.0.5:1")
                },
                "slots",
            ),
            (
                RegisterWorkerRequest {
                    gpus_per_slot: 0,
                    ..request("http://10.0.0.5:1")
                },
                "gpus_per_slot",
            ),
            (
                RegisterWorkerRequest {
                    gpu_type: "B9000".into(),
                    ..request("http://10.0.0.5:1")
                },
                "[pricing]",
            ),
            (
                RegisterWorkerRequest {
                    cold_start_seconds: f64::NAN,
                    ..request("http://10.0.0.5:1")
                },
                "cold_start_seconds",
            ),
            (
                RegisterWorkerRequest {
                    cold_start_seconds: -1.0,
                    ..request("http://10.0.0.5:1")
                },
                "cold_start_seconds",
            ),
            (
                RegisterWorkerRequest {
                    name: "n".repeat(100_000),
                    ..request("http://10.0.0.5:1")
                },
                "name",
            ),
            (
                RegisterWorkerRequest {
                    name: "evil\u{1b}[2J".into(),
                    ..request("http://10.0.0.5:1")
                },
                "control",
            ),
            (
                RegisterWorkerRequest {
                    models: vec!["m".into(); 100_000],
                    ..request("http://10.0.0.5:1")
                },
                "models",
            ),
            (
                RegisterWorkerRequest {
                    device: "tpu".into(),
                    ..request("http://10.0.0.5:1")
                },
                "device",
            ),
            (
                RegisterWorkerRequest {
                    decoders: vec!["magic".into()],
                    ..request("http://10.0.0.5:1")
                },
                "decoder",
            ),
            (
                RegisterWorkerRequest {
                    encoders: vec!["av1_nvenc".into()],
                    ..request("http://10.0.0.5:1")
                },
                "av1_nvenc",
            ),
            (request("http://169.254.169.254:80"), "metadata"),
            (request("http://[fe80::1]:80"), "link-local"),
            (request("http://0.0.0.0:80"), "unspecified"),
            (request("unix:///var/run/docker.sock"), "http://HOST:PORT"),
            (request("http://10.0.0.5"), "http://HOST:PORT"),
            (request("http://user@10.0.0.5:1"), "http://HOST:PORT"),
            (request("http://10.0.0.5:1/path"), "http://HOST:PORT"),
        ];
        for (bad, word) in cases {
            let message = refusal(&policy, bad).await;
            assert!(message.contains(word), "{word}: {message}");
            assert!(message.len() < 1000, "{message}");
            assert!(!message.contains('\u{1b}'), "{message}");
        }
    }

    #[tokio::test]
    async fn slots_sharing_a_gpu_are_charged_a_share_of_it() {
        let policy = RegistrationPolicy::new(&Config::default()).expect("policy");
        let shared = RegisterWorkerRequest {
            gpus: 1,
            slots: 4,
            ..request("http://127.0.0.1:1")
        };
        assert_eq!(policy.check(shared).await.expect("ok").gpus_per_slot, 0.25);
        let own = RegisterWorkerRequest {
            slots: 4,
            gpus_per_slot: 2,
            ..request("http://127.0.0.1:1")
        };
        assert_eq!(policy.check(own).await.expect("ok").gpus_per_slot, 2.0);
    }

    #[tokio::test]
    async fn a_host_list_admits_its_names_and_networks_only() {
        let mut config = Config::default();
        config.orchestrator.worker_hosts = vec![
            "10.0.0.0/8".into(),
            "gpu-1.fleet.internal".into(),
            "::1".into(),
        ];
        let policy = RegistrationPolicy::new(&config).expect("policy");
        for good in [
            "http://10.1.2.3:1",
            "https://GPU-1.fleet.internal:443",
            "http://[::1]:9",
        ] {
            assert!(policy.check(request(good)).await.is_ok(), "{good}");
        }
        let message = refusal(&policy, request("http://192.168.1.1:1")).await;
        assert!(message.contains("orchestrator.worker_hosts"), "{message}");
        config.orchestrator.worker_hosts = vec!["10.0.0.0/40".into()];
        let error = RegistrationPolicy::new(&config).expect_err("bad block");
        assert!(error.to_string().contains("worker_hosts"), "{error}");
    }
}
