//! The fleet: registered workers, their leases, and the queue of chunks waiting for a slot.
//!
//! Workers register themselves and renew a lease with heartbeats; a worker whose lease
//! lapses, or whose connection fails, is dropped (it registers again if it is alive). A
//! worker that deregisters while it holds chunks stays listed as draining, offered no new
//! chunk, until it hands back its last slot. Each worker has `slots` GPU slots. Chunks ask
//! for a slot with [`Fleet::acquire`] and wait in one queue ordered by job (first submitted
//! first), then longest chunk first; a slot is handed back when its [`SlotGrant`] is
//! dropped.

pub mod registration;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use framefleet_common::auth::{self, AttachToken};
use framefleet_common::codec::{choose_encoder, EncoderRequest, VideoEncoder};
use framefleet_common::config::TlsConfig;
use framefleet_common::proto::worker_client::WorkerClient;
use framefleet_common::proto::WorkerSummary;

use crate::fleet::registration::{RegisterError, Registration};

/// Most workers registered at once: a bound on what registrations can make the
/// orchestrator hold, far above any fleet it schedules.
pub const MAX_WORKERS: usize = 10_000;

/// Deadline for connecting to a worker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a waiting chunk re-checks that some worker is registered at all.
const EMPTY_FLEET_CHECK: Duration = Duration::from_millis(500);

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
    fn mark(&self, why: &str) {
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

/// Where a chunk stands in the queue: lower sorts first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueuePriority {
    /// Submission order of the job.
    pub job_seq: u64,
    /// Longest chunk first: the chunk's frame count, negated.
    pub neg_frames: i64,
    /// Then by chunk index.
    pub index: u32,
}

/// A chunk could not get a slot.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// No worker was registered for the whole deadline.
    #[error(
        "no worker registered within {0:.0} s; start workers pointed at this orchestrator \
         (framefleet-worker --orchestrator URL)"
    )]
    NoWorker(f64),
    /// Workers are registered, but none with the job's encoder, for the whole deadline.
    #[error(
        "no worker with {encoder} registered within {seconds:.0} s; start workers that have \
         it (NVENC needs a GPU with the engine: T4, L4, L40S, A10G) or submit the job with \
         another encoder"
    )]
    NoEncoder {
        /// The job's encoder.
        encoder: VideoEncoder,
        /// The deadline.
        seconds: f64,
    },
    /// The fleet is shutting down.
    #[error("the orchestrator is shutting down")]
    Closed,
}

struct Entry {
    info: WorkerInfo,
    /// The chunks it holds, by the encoder they are written with (`None`: infer).
    busy_with: HashMap<Option<VideoEncoder>, u32>,
    expires: Instant,
    /// Models it preloaded or has run a chunk of, so holds loaded.
    models: HashSet<String>,
    device: String,
    /// Its decoders, as it reported them.
    decoders: Vec<String>,
    cold_start_seconds: f64,
    registered: Instant,
    chunks_done: u64,
    /// It deregistered with chunks in hand: no new chunk, gone once they are handed back.
    draining: bool,
}

impl Entry {
    fn summary(&self, now: Instant) -> WorkerSummary {
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
        }
    }

    /// True when the worker can take chunks encoded with `encoder` (any, for `None`).
    fn encodes(&self, encoder: Option<VideoEncoder>) -> bool {
        encoder.is_none_or(|e| self.info.encoders.contains(&e))
    }

    /// The chunks it holds.
    fn busy(&self) -> u32 {
        self.busy_with.values().sum()
    }

    /// Frees the slot of a chunk written with `encoder`.
    fn take_back(&mut self, encoder: Option<VideoEncoder>) {
        if let Some(chunks) = self.busy_with.get_mut(&encoder) {
            *chunks = chunks.saturating_sub(1);
        }
    }

    /// Slots a new chunk may take.
    fn free(&self) -> u32 {
        if self.draining {
            0
        } else {
            self.info.slots.saturating_sub(self.busy())
        }
    }
}

/// What the registered workers offer a job now, as the cost model plans for it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetOffer {
    /// Slots free now (all slots when every one is busy: the job waits for them).
    pub slots: u32,
    /// Machines the workers are on (by the host part of their addresses).
    pub hosts: u32,
    /// Free slots of workers that have run the job's model.
    pub warm_slots: u32,
    /// GPUs per slot, on average.
    pub gpus_per_slot: f64,
    /// The workers' GPU type (the most common; empty with no worker).
    pub gpu_type: String,
    /// The encoder the job's chunks would be written with, chosen from the workers'
    /// (see [`choose_encoder`]); `None` for a job that encodes nothing.
    pub encoder: Option<VideoEncoder>,
}

/// The chunks the fleet runs now, as seen from one GPU type and set of encoders (the
/// scaler's view).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetLoad {
    /// Chunks held by workers of the type (draining ones included).
    pub busy_here: u32,
    /// Chunks held by workers of other types, of the encoders counted.
    pub busy_elsewhere: u32,
    /// Workers of the type that hold a chunk and are not draining: a scale-in must not
    /// remove them while idle ones exist.
    pub busy_workers: u32,
}

struct Waiter {
    id: u64,
    priority: QueuePriority,
    avoid: HashSet<String>,
    encoder: Option<VideoEncoder>,
    grant: oneshot::Sender<SlotGrant>,
}

#[derive(Default)]
struct State {
    workers: HashMap<String, Entry>,
    waiters: Vec<Waiter>,
    next_waiter: u64,
    closed: bool,
}

/// The registry of workers and the slot queue.
pub struct Fleet {
    state: Mutex<State>,
    lease: Duration,
    access: WorkerAccess,
}

/// One slot of one worker, held until dropped.
pub struct SlotGrant {
    /// The worker holding the chunk.
    pub worker: WorkerInfo,
    /// The encoder the chunk is written with (`None`: infer).
    encoder: Option<VideoEncoder>,
    fleet: Arc<Fleet>,
    armed: bool,
}

impl Drop for SlotGrant {
    fn drop(&mut self) {
        if self.armed {
            self.fleet.release(&self.worker.id, self.encoder);
        }
    }
}

impl Fleet {
    /// An empty fleet whose leases last `lease`, reaching workers through `access`.
    pub fn new(lease: Duration, access: WorkerAccess) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            lease,
            access,
        })
    }

    /// The lease length workers must renew within.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

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
                busy_with: HashMap::new(),
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

    /// What the workers registered now offer a job of `model` that asks for `encoder`
    /// (`None`: it encodes nothing).
    pub fn offer(&self, model: &str, encoder: Option<EncoderRequest>) -> FleetOffer {
        let state = self.lock();
        let workers: Vec<&Entry> = state.workers.values().filter(|e| !e.draining).collect();
        let free_slots: u32 = workers.iter().map(|e| e.free()).sum();
        let all_slots: u32 = workers.iter().map(|e| e.info.slots).sum();
        let hosts: HashSet<&str> = workers.iter().map(|e| host_of(&e.info.address)).collect();
        let mut types: HashMap<&str, u32> = HashMap::new();
        for entry in &workers {
            *types.entry(entry.info.gpu_type.as_str()).or_default() += entry.info.slots;
        }
        let gpus: f64 = workers
            .iter()
            .map(|e| e.info.gpus_per_slot * f64::from(e.info.slots))
            .sum();
        let encoders: Vec<(VideoEncoder, u32)> = VideoEncoder::ALL
            .into_iter()
            .map(|encoder| {
                let slots = workers
                    .iter()
                    .filter(|e| e.encodes(Some(encoder)))
                    .map(|e| e.info.slots)
                    .sum();
                (encoder, slots)
            })
            .collect();
        FleetOffer {
            slots: if free_slots > 0 {
                free_slots
            } else {
                all_slots
            },
            hosts: u32::try_from(hosts.len()).unwrap_or(u32::MAX),
            warm_slots: workers
                .iter()
                .filter(|e| e.models.contains(model))
                .map(|e| e.free())
                .sum(),
            gpus_per_slot: if all_slots > 0 {
                gpus / f64::from(all_slots)
            } else {
                1.0
            },
            encoder: encoder.map(|request| choose_encoder(request, &encoders)),
            gpu_type: types
                .into_iter()
                .max_by_key(|&(name, slots)| (slots, std::cmp::Reverse(name)))
                .map(|(name, _)| name.to_string())
                .unwrap_or_default(),
        }
    }

    /// The chunks running on workers of `gpu_type` (every type when `None`), and those
    /// elsewhere written with an encoder `counted` takes.
    pub fn load(
        &self,
        gpu_type: Option<&str>,
        counted: impl Fn(Option<VideoEncoder>) -> bool,
    ) -> FleetLoad {
        let state = self.lock();
        let mut load = FleetLoad::default();
        for entry in state.workers.values() {
            if gpu_type.is_none_or(|t| t == entry.info.gpu_type) {
                load.busy_here += entry.busy();
                load.busy_workers += u32::from(entry.busy() > 0 && !entry.draining);
            } else {
                load.busy_elsewhere += entry
                    .busy_with
                    .iter()
                    .filter(|(&encoder, _)| counted(encoder))
                    .map(|(_, &chunks)| chunks)
                    .sum::<u32>();
            }
        }
        load
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
    fn can_take(&self, encoder: Option<VideoEncoder>) -> bool {
        self.lock()
            .workers
            .values()
            .any(|e| !e.draining && e.encodes(encoder))
    }

    /// Slots of the registered workers: (all of them, those holding a chunk), draining
    /// workers counting only their busy slots.
    pub fn slots(&self) -> (u32, u32) {
        let state = self.lock();
        state.workers.values().fold((0, 0), |(all, busy), entry| {
            let slots = if entry.draining {
                entry.busy()
            } else {
                entry.info.slots
            };
            (all + slots, busy + entry.busy())
        })
    }

    /// Chunks waiting for a slot.
    pub fn queue_depth(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Refuses new waiters and fails the waiting ones (shutdown).
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.waiters.clear();
    }

    /// Waits for a free slot of a worker that has `encoder` (any worker for `None`),
    /// preferring workers not in `avoid` (those that already failed this chunk). Fails when
    /// no such worker is registered for `empty_deadline`; while they exist but are busy,
    /// the chunk keeps its place in the queue.
    pub async fn acquire(
        self: &Arc<Self>,
        priority: QueuePriority,
        avoid: HashSet<String>,
        encoder: Option<VideoEncoder>,
        empty_deadline: Duration,
    ) -> Result<SlotGrant, AcquireError> {
        let (grant_tx, mut grant_rx) = oneshot::channel();
        let waiter_id = {
            let mut state = self.lock();
            if state.closed {
                return Err(AcquireError::Closed);
            }
            let id = state.next_waiter;
            state.next_waiter += 1;
            state.waiters.push(Waiter {
                id,
                priority,
                avoid,
                encoder,
                grant: grant_tx,
            });
            self.match_waiters(&mut state);
            id
        };
        let mut empty_since: Option<Instant> = None;
        loop {
            tokio::select! {
                grant = &mut grant_rx => {
                    return grant.map_err(|_| AcquireError::Closed);
                }
                _ = tokio::time::sleep(EMPTY_FLEET_CHECK) => {
                    if self.can_take(encoder) {
                        empty_since = None;
                        continue;
                    }
                    let since = *empty_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= empty_deadline {
                        self.lock().waiters.retain(|w| w.id != waiter_id);
                        // A grant may have raced in just before the waiter left.
                        if let Ok(grant) = grant_rx.try_recv() {
                            return Ok(grant);
                        }
                        let seconds = empty_deadline.as_secs_f64();
                        return Err(match encoder {
                            Some(encoder) if !self.is_empty() => {
                                AcquireError::NoEncoder { encoder, seconds }
                            }
                            _ => AcquireError::NoWorker(seconds),
                        });
                    }
                }
            }
        }
    }

    fn release(self: &Arc<Self>, id: &str, encoder: Option<VideoEncoder>) {
        let mut state = self.lock();
        if let Some(entry) = state.workers.get_mut(id) {
            entry.take_back(encoder);
            if entry.draining && entry.busy() == 0 {
                tracing::info!(worker = %entry.info.name, "worker drained and left the fleet");
                state.workers.remove(id);
            }
        }
        self.match_waiters(&mut state);
    }

    /// Hands free slots to waiters, best priority first.
    fn match_waiters(self: &Arc<Self>, state: &mut State) {
        state.waiters.retain(|w| !w.grant.is_closed());
        state.waiters.sort_by_key(|w| w.priority);
        let mut index = 0;
        while index < state.waiters.len() {
            let waiter = &state.waiters[index];
            let Some(worker_id) = pick_worker(&state.workers, &waiter.avoid, waiter.encoder) else {
                index += 1;
                continue;
            };
            let waiter = state.waiters.remove(index);
            let Some(entry) = state.workers.get_mut(&worker_id) else {
                continue;
            };
            *entry.busy_with.entry(waiter.encoder).or_default() += 1;
            let grant = SlotGrant {
                worker: entry.info.clone(),
                encoder: waiter.encoder,
                fleet: self.clone(),
                armed: true,
            };
            if let Err(mut unsent) = waiter.grant.send(grant) {
                // The waiter gave up; take the slot back without re-entering the lock.
                unsent.armed = false;
                entry.take_back(waiter.encoder);
            }
        }
    }
}

/// The least loaded idle worker that has `encoder`, avoiding `avoid` unless every such
/// worker is in it.
fn pick_worker(
    workers: &HashMap<String, Entry>,
    avoid: &HashSet<String>,
    encoder: Option<VideoEncoder>,
) -> Option<String> {
    let everyone_avoided = workers
        .iter()
        .filter(|(_, entry)| entry.encodes(encoder))
        .all(|(id, entry)| entry.draining || avoid.contains(id));
    workers
        .iter()
        .filter(|(_, entry)| entry.encodes(encoder))
        .filter(|(id, entry)| entry.free() > 0 && (everyone_avoided || !avoid.contains(*id)))
        .min_by(|(a_id, a), (b_id, b)| {
            let load = |e: &Entry| f64::from(e.busy()) / f64::from(e.info.slots);
            load(a).total_cmp(&load(b)).then_with(|| a_id.cmp(b_id))
        })
        .map(|(id, _)| id.clone())
}

/// The machine part of a worker's address (`https://10.0.0.7:50051` -> `10.0.0.7`).
fn host_of(address: &str) -> &str {
    let authority = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or(authority);
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_common::codec::VideoCodec;

    fn registration(name: &str, slots: u32) -> Registration {
        Registration {
            address: "http://127.0.0.1:1".into(),
            name: name.into(),
            gpu_type: "cpu".into(),
            slots,
            gpus_per_slot: 1.0,
            device: "cpu".into(),
            cold_start_seconds: 0.0,
            models: Vec::new(),
            encoders: vec![VideoEncoder::Libx264],
            decoders: Vec::new(),
            rejoining: false,
        }
    }

    fn priority(job_seq: u64, frames: i64, index: u32) -> QueuePriority {
        QueuePriority {
            job_seq,
            neg_frames: -frames,
            index,
        }
    }

    #[tokio::test]
    async fn longest_chunk_gets_the_first_free_slot() {
        let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
        let id = fleet.register(registration("a", 1)).expect("registers");
        let held = fleet
            .acquire(
                priority(0, 1, 0),
                HashSet::new(),
                None,
                Duration::from_secs(1),
            )
            .await
            .expect("slot");
        let short = {
            let fleet = fleet.clone();
            tokio::spawn(async move {
                fleet
                    .acquire(
                        priority(0, 10, 1),
                        HashSet::new(),
                        None,
                        Duration::from_secs(5),
                    )
                    .await
            })
        };
        let long = {
            let fleet = fleet.clone();
            tokio::spawn(async move {
                fleet
                    .acquire(
                        priority(0, 90, 2),
                        HashSet::new(),
                        None,
                        Duration::from_secs(5),
                    )
                    .await
            })
        };
        while fleet.queue_depth() < 2 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let first = long.await.expect("joins").expect("slot");
        assert_eq!(first.worker.id, id);
        assert!(!short.is_finished());
        drop(first);
        short.await.expect("joins").expect("slot");
    }

    #[tokio::test]
    async fn retries_avoid_workers_that_failed_the_chunk() {
        let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
        let a = fleet.register(registration("a", 1)).expect("registers");
        let b = fleet.register(registration("b", 1)).expect("registers");
        let grant = fleet
            .acquire(
                priority(0, 1, 0),
                HashSet::from([a.clone()]),
                None,
                Duration::from_secs(1),
            )
            .await
            .expect("slot");
        assert_eq!(grant.worker.id, b);
        drop(grant);
        // With every worker avoided, any idle one is used rather than none.
        let grant = fleet
            .acquire(
                priority(0, 1, 0),
                HashSet::from([a, b]),
                None,
                Duration::from_secs(1),
            )
            .await;
        assert!(grant.is_ok());
    }

    #[tokio::test]
    async fn an_empty_fleet_fails_after_the_deadline_with_a_clear_message() {
        let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
        let error = fleet
            .acquire(
                priority(0, 1, 0),
                HashSet::new(),
                None,
                Duration::from_millis(600),
            )
            .await
            .err()
            .expect("no workers");
        assert!(error.to_string().contains("no worker registered within"));
        assert_eq!(fleet.queue_depth(), 0);
    }

    #[tokio::test]
    async fn chunks_go_only_to_workers_that_have_the_jobs_encoder() {
        let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
        let with = |name: &str, slots, encoders: &[VideoEncoder]| Registration {
            encoders: encoders.to_vec(),
            ..registration(name, slots)
        };
        let x264_only = fleet
            .register(with("a", 2, &[VideoEncoder::Libx264]))
            .expect("registers");
        let both = fleet
            .register(with(
                "b",
                1,
                &[VideoEncoder::Libx264, VideoEncoder::Libx265],
            ))
            .expect("registers");
        let hevc = Some(EncoderRequest::Codec(VideoCodec::Hevc));
        assert_eq!(fleet.offer("m", hevc).encoder, Some(VideoEncoder::Libx265));
        let h264 = Some(EncoderRequest::Codec(VideoCodec::H264));
        assert_eq!(fleet.offer("m", h264).encoder, Some(VideoEncoder::Libx264));
        let x265 = Some(VideoEncoder::Libx265);
        let wait = Duration::from_secs(5);
        let first = fleet
            .acquire(priority(0, 1, 0), HashSet::new(), x265, wait)
            .await
            .expect("slot");
        assert_eq!(first.worker.id, both);
        // The next x265 chunk waits for b, though a has two free slots.
        let second = {
            let fleet = fleet.clone();
            tokio::spawn(async move {
                fleet
                    .acquire(priority(0, 1, 1), HashSet::new(), x265, wait)
                    .await
            })
        };
        while fleet.queue_depth() < 1 {
            tokio::task::yield_now().await;
        }
        let any = fleet
            .acquire(priority(1, 1, 0), HashSet::new(), None, wait)
            .await
            .expect("slot");
        assert_eq!(any.worker.id, x264_only, "a job of another encoder takes a");
        assert_eq!(fleet.queue_depth(), 1, "the x265 chunk still waits");
        drop(first);
        let second = second.await.expect("joins").expect("slot");
        assert_eq!(second.worker.id, both);
        let error = fleet
            .acquire(
                priority(0, 1, 2),
                HashSet::new(),
                Some(VideoEncoder::H264Nvenc),
                Duration::from_millis(600),
            )
            .await
            .err()
            .expect("nobody has NVENC");
        assert!(
            error.to_string().contains("no worker with h264_nvenc"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_load_elsewhere_counts_only_chunks_of_the_encoders_asked_about() {
        let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
        let l4 = Registration {
            gpu_type: "L4".into(),
            encoders: vec![VideoEncoder::Libx264, VideoEncoder::H264Nvenc],
            ..registration("l4", 2)
        };
        fleet.register(l4).expect("registers");
        fleet.register(registration("cpu", 2)).expect("registers");
        let wait = Duration::from_secs(5);
        let nvenc = Some(VideoEncoder::H264Nvenc);
        let x264 = Some(VideoEncoder::Libx264);
        let on_l4 = fleet
            .acquire(priority(0, 1, 0), HashSet::new(), nvenc, wait)
            .await
            .expect("slot");
        let mut held = Vec::new();
        for index in 0..2 {
            let grant = fleet
                .acquire(
                    priority(1, 1, index),
                    HashSet::from([on_l4.worker.id.clone()]),
                    x264,
                    wait,
                )
                .await
                .expect("slot");
            assert_eq!(grant.worker.name, "cpu");
            held.push(grant);
        }
        let everything = |_: Option<VideoEncoder>| true;
        let nvenc_only = |encoder: Option<VideoEncoder>| encoder == nvenc;
        let from_l4 = fleet.load(Some("L4"), everything);
        assert_eq!(
            (
                from_l4.busy_here,
                from_l4.busy_elsewhere,
                from_l4.busy_workers
            ),
            (1, 2, 1)
        );
        assert_eq!(fleet.load(Some("L4"), nvenc_only).busy_elsewhere, 0);
        assert_eq!(fleet.load(Some("cpu"), nvenc_only).busy_elsewhere, 1);
        drop(on_l4);
        assert_eq!(fleet.load(Some("cpu"), nvenc_only).busy_elsewhere, 0);
        drop(held);
        assert_eq!(fleet.load(None, everything), FleetLoad::default());
    }

    #[tokio::test]
    async fn registrations_stop_at_the_fleet_bound() {
        let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
        for index in 0..MAX_WORKERS {
            fleet
                .register(registration(&format!("w{index}"), 1))
                .expect("registers");
        }
        let refused = fleet
            .register(registration("one too many", 1))
            .expect_err("refused");
        assert!(refused.to_string().contains("10000 workers"), "{refused}");
    }

    #[tokio::test]
    async fn lapsed_leases_drop_workers() {
        let fleet = Fleet::new(Duration::from_millis(1), WorkerAccess::default());
        let id = fleet.register(registration("a", 1)).expect("registers");
        std::thread::sleep(Duration::from_millis(5));
        fleet.reap_expired();
        assert!(fleet.is_empty());
        assert!(!fleet.heartbeat(&id));
    }

    #[tokio::test]
    async fn the_offer_counts_free_and_warm_slots_machines_and_the_gpu_type() {
        let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
        assert_eq!(fleet.offer("m", None).slots, 0);
        fleet.register(registration("a", 2)).expect("registers");
        let mut other_host = registration("b", 1);
        other_host.address = "http://10.0.0.7:50051".into();
        other_host.gpu_type = "L4".into();
        fleet.register(other_host).expect("registers");
        fleet.chunk_accepted("a", "m");
        let held = fleet
            .acquire(
                priority(0, 1, 0),
                HashSet::new(),
                None,
                Duration::from_secs(1),
            )
            .await
            .expect("slot");
        let offer = fleet.offer("m", None);
        assert_eq!((offer.slots, offer.hosts), (2, 2));
        assert_eq!(offer.gpu_type, "cpu");
        let expected_warm = if held.worker.name == "a" { 1 } else { 2 };
        assert_eq!(offer.warm_slots, expected_warm);
        assert_eq!(fleet.offer("other", None).warm_slots, 0);
        assert_eq!(host_of("http://127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("worker-3.fleet:50051"), "worker-3.fleet");
    }

    #[tokio::test]
    async fn a_deregistered_worker_drains_its_chunks_listed_and_then_leaves() {
        let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
        let busy = fleet
            .register(Registration {
                device: "cuda".into(),
                cold_start_seconds: 12.5,
                models: vec!["realesr-animevideov3-x2".into()],
                ..registration("a", 1)
            })
            .expect("registers");
        let grant = fleet
            .acquire(
                priority(0, 1, 0),
                HashSet::new(),
                None,
                Duration::from_secs(1),
            )
            .await
            .expect("slot");
        let idle = fleet.register(registration("b", 2)).expect("registers");
        fleet.chunk_accepted("a", "lanczos");
        fleet.drain(&busy);
        fleet.drain(&idle);
        let listed = fleet.workers();
        assert_eq!(listed.len(), 1, "the idle worker left at once: {listed:?}");
        let a = &listed[0];
        assert_eq!((a.name.as_str(), a.device.as_str()), ("a", "cuda"));
        assert_eq!((a.slots, a.busy_slots, a.draining), (1, 1, true));
        assert_eq!((a.cold_start_seconds, a.chunks_done), (12.5, 1));
        assert_eq!(a.models, ["lanczos", "realesr-animevideov3-x2"]);
        // No new chunk goes to a draining worker: with it the only one, the fleet is empty.
        assert!(fleet.is_empty());
        assert_eq!(fleet.slots(), (1, 1));
        fleet.reap_expired();
        assert_eq!(
            fleet.workers().len(),
            1,
            "its chunk's stream, not its lease, decides"
        );
        drop(grant);
        assert!(
            fleet.workers().is_empty(),
            "gone once its chunk is handed back"
        );
    }
}
