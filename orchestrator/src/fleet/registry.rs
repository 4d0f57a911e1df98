//! The registry: workers join with a checked [`Registration`], renew their lease with
//! heartbeats, drain when they deregister with chunks in hand, and leave when their lease
//! lapses or their connection fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framefleet_common::auth;
use framefleet_common::codec::VideoEncoder;
use framefleet_common::proto::worker_client::WorkerClient;
use framefleet_common::proto::WorkerSummary;

use super::registration::{RegisterError, Registration};
use super::worker::{Departure, Entry, WorkerInfo};
use super::Fleet;

/// Most workers registered at once: a bound on what registrations can make the
/// orchestrator hold, far above any fleet it schedules.
pub const MAX_WORKERS: usize = 10_000;

/// Deadline for connecting to a worker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Fleet {
    /// Adds a checked worker and returns its id.
    pub fn register(self: &Arc<Self>, worker: Registration) -> Result<String, RegisterError> {
        let endpoint = auth::endpoint(&worker.address, &self.access.tls)
            .map_err(|e| RegisterError(format!("address `{}`: {e}", worker.address)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let id = format!("w-{}", uuid::Uuid::new_v4().simple());
        let models = worker.models.iter().cloned().collect();
        let (device, cold_start_seconds) = (worker.device, worker.cold_start_seconds);
        let decoders = worker.decoders;
        let info = WorkerInfo {
            id: id.clone(),
            name: worker.name,
            address: worker.address,
            gpu_type: worker.gpu_type,
            slots: worker.slots,
            gpus_per_slot: worker.gpus_per_slot,
            encoders: worker.encoders,
            client: WorkerClient::with_interceptor(
                endpoint.connect_lazy(),
                self.access.token.clone(),
            ),
            departure: Departure::default(),
        };
        let mut state = self.lock();
        if state.workers.len() >= MAX_WORKERS {
            return Err(RegisterError(format!(
                "the fleet already holds {MAX_WORKERS} workers, the most one orchestrator \
                 takes (a fixed bound); registrations lapse when their leases do"
            )));
        }
        tracing::info!(worker = %info.name, address = %info.address, slots = info.slots, gpu_type = %info.gpu_type, "worker registered");
        state.workers.insert(
            id.clone(),
            Entry {
                info,
                running: HashMap::new(),
                expires: Instant::now() + self.lease,
                models,
                device,
                decoders,
                cold_start_seconds,
                registered: Instant::now(),
                chunks_done: 0,
                draining: false,
            },
        );
        self.match_waiters(&mut state);
        Ok(id)
    }

    /// Renews a lease; false when the worker is unknown (it must register again).
    pub fn heartbeat(&self, id: &str) -> bool {
        let mut state = self.lock();
        match state.workers.get_mut(id) {
            Some(entry) => {
                entry.expires = Instant::now() + self.lease;
                true
            }
            None => false,
        }
    }

    /// A worker left the fleet on its own (it deregistered to shut down): it takes no new
    /// chunk, and stays listed as draining until the chunks it holds are handed back.
    pub fn drain(&self, id: &str) {
        let mut state = self.lock();
        match state.workers.get_mut(id) {
            Some(entry) if entry.busy() > 0 => {
                entry.draining = true;
                tracing::info!(worker = %entry.info.name, chunks = entry.busy(), "worker draining");
            }
            Some(_) => {
                drop(state);
                self.remove(id, "it deregistered");
            }
            None => {}
        }
    }

    /// Drops a worker (lease lapsed, or unreachable). The attempts it holds are given up
    /// (see [`Departure`]) and retried elsewhere.
    pub fn remove(&self, id: &str, why: &str) {
        if let Some(entry) = self.lock().workers.remove(id) {
            tracing::info!(worker = %entry.info.name, why, "worker left the fleet");
            entry.info.departure.mark(why);
        }
    }

    /// Drops every worker whose lease has lapsed (a draining worker has stopped renewing
    /// it: the streams of the chunks it holds tell whether it is alive).
    pub fn reap_expired(&self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .lock()
            .workers
            .iter()
            .filter(|(_, entry)| entry.expires < now && !entry.draining)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove(&id, "lease lapsed");
        }
    }

    /// Records that the worker named `worker` produced an accepted chunk of `model`, so
    /// holds the model loaded.
    pub fn chunk_accepted(&self, worker: &str, model: &str) {
        let mut state = self.lock();
        if let Some(entry) = state.workers.values_mut().find(|e| e.info.name == worker) {
            entry.models.insert(model.to_string());
            entry.chunks_done += 1;
        }
    }

    /// Every worker listed, draining ones included, by name.
    pub fn workers(&self) -> Vec<WorkerSummary> {
        let now = Instant::now();
        let mut workers: Vec<WorkerSummary> = self
            .lock()
            .workers
            .values()
            .map(|e| e.summary(now))
            .collect();
        workers.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        workers
    }

    /// Workers registered now that take chunks (draining ones excluded).
    pub fn len(&self) -> usize {
        self.lock().workers.values().filter(|e| !e.draining).count()
    }

    /// True when no worker is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when some worker that takes chunks has `encoder`.
    pub(super) fn can_take(&self, encoder: Option<VideoEncoder>) -> bool {
        self.lock()
            .workers
            .values()
            .any(|e| !e.draining && e.encodes(encoder))
    }
}
