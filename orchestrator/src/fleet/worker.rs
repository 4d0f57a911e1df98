//! A registered worker as the fleet holds it: what dispatch is handed ([`WorkerInfo`],
//! with its gRPC client and its [`Departure`] signal), how the orchestrator reaches it
//! ([`WorkerAccess`]), and the fleet's own entry for it (slots busy by encoder, lease,
//! models it holds loaded, draining).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use framefleet_common::auth::AttachToken;
use framefleet_common::codec::VideoEncoder;
use framefleet_common::config::TlsConfig;
use framefleet_common::proto::worker_client::WorkerClient;
use framefleet_common::proto::{RunningChunk, WorkerSummary};

use super::policy::Ticket;

/// A registered worker, as dispatch sees it.
#[derive(Clone, Debug)]
pub struct WorkerInfo {
    /// Id given at registration.
    pub id: String,
    /// Name for reports.
    pub name: String,
    /// Address dialled.
    pub address: String,
    /// GPU type for pricing.
    pub gpu_type: String,
    /// Chunks it runs at once.
    pub slots: u32,
    /// GPUs one slot holds when every slot is busy (a fraction when slots share GPUs).
    pub gpus_per_slot: f64,
    /// Video encoders it can open: a job's chunks go only to workers with its encoder.
    pub encoders: Vec<VideoEncoder>,
    /// gRPC client (a lazily connected channel that presents the fleet token).
    pub client: WorkerClient<InterceptedService<Channel, AttachToken>>,
    /// Fires when the fleet drops this registration (its lease lapsed, its connection
    /// failed): the attempts it holds are given up at once and retried elsewhere, instead
    /// of waiting out their event deadline behind a partition.
    pub departure: Departure,
}

/// Why and when a registration left the fleet, for the attempts that hold its slots.
#[derive(Clone, Debug, Default)]
pub struct Departure {
    gone: CancellationToken,
    why: Arc<OnceLock<String>>,
}

impl Departure {
    pub(super) fn mark(&self, why: &str) {
        let _ = self.why.set(why.to_string());
        self.gone.cancel();
    }

    /// Resolves, with the reason, once the worker has left the fleet.
    pub async fn left(&self) -> String {
        self.gone.cancelled().await;
        self.why.get().cloned().unwrap_or_default()
    }
}

/// How the orchestrator reaches its workers: TLS for `https://` addresses and the fleet
/// token on every call.
#[derive(Clone, Default)]
pub struct WorkerAccess {
    /// TLS settings (the CA that signed the workers' certificates).
    pub tls: TlsConfig,
    /// Attaches `auth.fleet_token`.
    pub token: AttachToken,
}

/// A chunk holding one of a worker's slots.
#[derive(Clone, Debug)]
pub(super) struct Running {
    /// The encoder it is written with (`None`: infer).
    pub(super) encoder: Option<VideoEncoder>,
    /// Whose it is and where it stood.
    pub(super) ticket: Ticket,
}

impl Running {
    /// The chunk as the fleet listing shows it.
    fn summary(&self) -> RunningChunk {
        RunningChunk {
            job_id: self.ticket.job_id.to_string(),
            chunk: self.ticket.index,
            tenant: self.ticket.tenant.name.to_string(),
            priority: self.ticket.priority.label().into(),
        }
    }
}

/// The fleet's record of one registered worker.
pub(super) struct Entry {
    pub(super) info: WorkerInfo,
    /// The chunks it holds, by the encoder they are written with (`None`: infer).
    pub(super) running: HashMap<u64, Running>,
    pub(super) expires: Instant,
    /// Models it preloaded or has run a chunk of, so holds loaded.
    pub(super) models: HashSet<String>,
    pub(super) device: String,
    /// Its decoders, as it reported them.
    pub(super) decoders: Vec<String>,
    pub(super) cold_start_seconds: f64,
    pub(super) registered: Instant,
    pub(super) chunks_done: u64,
    /// It deregistered with chunks in hand: no new chunk, gone once they are handed back.
    pub(super) draining: bool,
}

impl Entry {
    pub(super) fn summary(&self, now: Instant) -> WorkerSummary {
        let mut models: Vec<String> = self.models.iter().cloned().collect();
        models.sort();
        WorkerSummary {
            id: self.info.id.clone(),
            name: self.info.name.clone(),
            address: self.info.address.clone(),
            gpu_type: self.info.gpu_type.clone(),
            device: self.device.clone(),
            slots: self.info.slots,
            busy_slots: self.busy(),
            draining: self.draining,
            cold_start_seconds: self.cold_start_seconds,
            chunks_done: self.chunks_done,
            models,
            registered_seconds: now.duration_since(self.registered).as_secs_f64(),
            encoders: self.info.encoders.iter().map(|e| e.name().into()).collect(),
            decoders: self.decoders.clone(),
            running: self.running_summary(),
        }
    }

    /// The chunks it runs, by job and chunk.
    fn running_summary(&self) -> Vec<RunningChunk> {
        let mut running: Vec<RunningChunk> = self.running.values().map(Running::summary).collect();
        running.sort_by(|a, b| a.job_id.cmp(&b.job_id).then(a.chunk.cmp(&b.chunk)));
        running
    }

    /// True when the worker can take chunks encoded with `encoder` (any, for `None`).
    pub(super) fn encodes(&self, encoder: Option<VideoEncoder>) -> bool {
        encoder.is_none_or(|e| self.info.encoders.contains(&e))
    }

    /// The chunks it holds.
    pub(super) fn busy(&self) -> u32 {
        u32::try_from(self.running.len()).unwrap_or(u32::MAX)
    }

    /// Frees the slot of grant `grant`.
    pub(super) fn take_back(&mut self, grant: u64) {
        self.running.remove(&grant);
    }

    /// Slots a new chunk may take.
    pub(super) fn free(&self) -> u32 {
        if self.draining {
            0
        } else {
            self.info.slots.saturating_sub(self.busy())
        }
    }
}

/// The machine part of a worker's address (`https://10.0.0.7:50051` -> `10.0.0.7`).
pub(super) fn host_of(address: &str) -> &str {
    let authority = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or(authority);
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}
