//! The scheduling policy: which waiting chunk a free slot goes to, and which worker's slot
//! a chunk takes.
//!
//! - **Levels.** A free slot goes to the most urgent priority level with a chunk waiting
//!   (interactive, then normal, then batch), except that a level left unserved for
//!   `dispatch.starvation_seconds` while it had chunks waiting takes the next slot: a long
//!   stream of urgent work slows batch work down to one chunk per window, never to none.
//! - **Tenants.** Within a level, the slot goes to the tenant furthest below its share:
//!   the fewest slots held (at every level) per unit of weight, the one served longest ago
//!   first on a tie; a tenant at its `max_slots` is passed over, holding no one else up.
//! - **Jobs.** Within a tenant, to its job holding the fewest slots, the one served longest
//!   ago (a new one first) on a tie: a short job that arrives behind a long one takes the
//!   next slot that frees, and jobs of equal holding take turns.
//! - **Chunks.** Within a job, the longest chunk first, then by index; a retry or a backup
//!   attempt comes back with its chunk's place.
//!
//! Every choice walks ordered sets, so its cost grows with the logarithm of the chunks and
//! jobs waiting, not with their number (it grows with the chunks skipped only when their
//! workers are missing, as for an encoder no free worker has). A chunk then takes the least
//! loaded worker with a free slot and its job's encoder, avoiding those that failed it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use framefleet_common::codec::VideoEncoder;

use crate::jobs::tenant::Tenant;
use crate::jobs::valid_job::Priority;

use super::queue::Waiter;
use super::worker::Entry;

/// Chunks of one job tried before the next job when none of them finds a worker (they
/// differ only by the workers they avoid).
const CHUNKS_TRIED_PER_JOB: usize = 4;

/// What a chunk says about itself when it asks for a slot.
#[derive(Clone, Debug)]
pub struct Ticket {
    /// The job's submission number.
    pub job: u64,
    /// The job's id, as the fleet listing shows it.
    pub job_id: Arc<str>,
    /// The job's tenant.
    pub tenant: Arc<Tenant>,
    /// The job's level.
    pub priority: Priority,
    /// The chunk's frames (longer chunks go first within their job).
    pub frames: u64,
    /// The chunk's index in the plan.
    pub index: u32,
}

/// A waiter's place within its job: longest first, then by index, then by arrival.
type ChunkKey = (Reverse<u64>, u32, u64);

/// A tenant's place within a level: slots held per unit of weight (fixed point), when it
/// was last served, its name.
type TenantKey = (u64, u64, Arc<str>);

/// A job's place within its tenant: slots held, when it was last served, its number.
type JobKey = (u32, u64, u64);

/// Where a waiter is filed, to take it out again.
#[derive(Clone)]
struct Filed {
    level: usize,
    tenant: Arc<str>,
    job: u64,
    key: ChunkKey,
}

/// The chunks waiting for a slot, ordered by the policy.
pub(super) struct Queue {
    levels: [Level; 3],
    filed: HashMap<u64, Filed>,
    /// Slots held now, by tenant and by job, at every level.
    held_by_tenant: HashMap<Arc<str>, u32>,
    held_by_job: HashMap<u64, u32>,
    /// The grant count when each tenant last got a slot (tenants are few: configured).
    tenant_served: HashMap<Arc<str>, u64>,
    /// The grant count when each job last got a slot, while it holds or waits for one.
    job_served: HashMap<u64, u64>,
    /// Slots granted so far: the clock of "served longest ago".
    grants: u64,
    starvation: Duration,
}

/// One priority level's waiting chunks.
struct Level {
    tenants: HashMap<Arc<str>, TenantLine>,
    order: BTreeSet<TenantKey>,
    /// Since when it has gone unserved: its last grant, or when it began to wait.
    unserved_since: Instant,
    /// Chunks waiting at this level.
    waiting: usize,
}

/// One tenant's waiting chunks at one level.
struct TenantLine {
    tenant: Arc<Tenant>,
    key: TenantKey,
    jobs: HashMap<u64, JobLine>,
    order: BTreeSet<JobKey>,
}

/// One job's waiting chunks.
struct JobLine {
    key: JobKey,
    chunks: BTreeMap<ChunkKey, Waiter>,
}

impl Queue {
    /// An empty queue whose levels age after `starvation`.
    pub(super) fn new(starvation: Duration) -> Self {
        let now = Instant::now();
        Self {
            levels: std::array::from_fn(|_| Level {
                tenants: HashMap::new(),
                order: BTreeSet::new(),
                unserved_since: now,
                waiting: 0,
            }),
            filed: HashMap::new(),
            held_by_tenant: HashMap::new(),
            held_by_job: HashMap::new(),
            tenant_served: HashMap::new(),
            job_served: HashMap::new(),
            grants: 0,
            starvation,
        }
    }

    /// Chunks waiting.
    pub(super) fn len(&self) -> usize {
        self.filed.len()
    }

    /// Chunks waiting at `priority`.
    pub(super) fn waiting_at(&self, priority: Priority) -> usize {
        self.levels[priority.rank()].waiting
    }

    /// What the queue, as it stands, serves before job `job`'s next waiting chunk: every
    /// chunk of a more urgent level, and one turn of each job ahead of it at its own level
    /// (tenants ahead of its tenant, then its tenant's jobs ahead of it). `None` when none
    /// of its chunks waits.
    pub(super) fn chunks_ahead(&self, job: u64) -> Option<usize> {
        let (rank, tenant) = self.levels.iter().enumerate().find_map(|(rank, level)| {
            let line = level.tenants.values().find(|t| t.jobs.contains_key(&job))?;
            Some((rank, line))
        })?;
        let urgent: usize = self.levels[..rank].iter().map(|level| level.waiting).sum();
        let level = &self.levels[rank];
        let tenants_ahead: usize = level
            .order
            .range(..tenant.key.clone())
            .map(|(_, _, name)| level.tenants[name].jobs.len())
            .sum();
        let own_key = tenant.jobs[&job].key;
        let jobs_ahead = tenant.order.range(..own_key).count();
        Some(urgent + tenants_ahead + jobs_ahead)
    }

    /// Jobs a new job at level `rank` shares the slots with: those holding slots now, and
    /// those with chunks waiting at its level or a more urgent one.
    pub(super) fn competing_jobs(&self, rank: usize) -> usize {
        let mut jobs: std::collections::HashSet<u64> = self.held_by_job.keys().copied().collect();
        for level in &self.levels[..=rank.min(self.levels.len() - 1)] {
            jobs.extend(
                level
                    .tenants
                    .values()
                    .flat_map(|line| line.jobs.keys().copied()),
            );
        }
        jobs.len()
    }

    /// Files a waiter in its place.
    pub(super) fn push(&mut self, waiter: Waiter) {
        let ticket = &waiter.ticket;
        let filed = Filed {
            level: ticket.priority.rank(),
            tenant: ticket.tenant.name.clone(),
            job: ticket.job,
            key: (Reverse(ticket.frames), ticket.index, waiter.id),
        };
        let tenant_key = self.tenant_key(&ticket.tenant);
        let job_held = self.held_by_job.get(&ticket.job).copied().unwrap_or(0);
        let job_served = self.job_served.get(&ticket.job).copied().unwrap_or(0);
        let level = &mut self.levels[filed.level];
        if level.tenants.is_empty() {
            level.unserved_since = Instant::now();
        }
        let line = level
            .tenants
            .entry(filed.tenant.clone())
            .or_insert_with(|| TenantLine {
                tenant: ticket.tenant.clone(),
                key: tenant_key.clone(),
                jobs: HashMap::new(),
                order: BTreeSet::new(),
            });
        level.order.insert(line.key.clone());
        let job = line.jobs.entry(filed.job).or_insert_with(|| JobLine {
            key: (job_held, job_served, filed.job),
            chunks: BTreeMap::new(),
        });
        line.order.insert(job.key);
        job.chunks.insert(filed.key, waiter);
        level.waiting += 1;
        self.filed.insert(filed.key.2, filed);
    }

    /// Takes waiter `id` out (it gave up); nothing when it is not waiting.
    pub(super) fn remove(&mut self, id: u64) -> Option<Waiter> {
        let filed = self.filed.remove(&id)?;
        let level = &mut self.levels[filed.level];
        let line = level.tenants.get_mut(&filed.tenant)?;
        let job = line.jobs.get_mut(&filed.job)?;
        let waiter = job.chunks.remove(&filed.key);
        level.waiting -= usize::from(waiter.is_some());
        if job.chunks.is_empty() {
            line.order.remove(&job.key);
            line.jobs.remove(&filed.job);
            if !self.held_by_job.contains_key(&filed.job) {
                self.job_served.remove(&filed.job);
            }
        }
        if line.jobs.is_empty() {
            level.order.remove(&line.key);
            level.tenants.remove(&filed.tenant);
        }
        waiter
    }

    /// Every waiter, taken out (shutdown).
    pub(super) fn drain(&mut self) {
        let ids: Vec<u64> = self.filed.keys().copied().collect();
        for id in ids {
            self.remove(id);
        }
    }

    /// The next waiter the policy serves that `fits` finds a worker for, taken out with
    /// that worker; waiters that gave up are dropped on the way.
    pub(super) fn take_next(
        &mut self,
        mut fits: impl FnMut(&Waiter) -> Option<String>,
    ) -> Option<(Waiter, String)> {
        let mut gone = Vec::new();
        let mut found = None;
        'levels: for level in self.levels_in_turn() {
            let level = &self.levels[level];
            for (_, _, tenant) in &level.order {
                let line = &level.tenants[tenant];
                let cap = line.tenant.max_slots;
                if cap > 0 && self.held_by(tenant) >= cap {
                    continue;
                }
                for (_, _, job) in &line.order {
                    let chunks = line.jobs[job].chunks.values();
                    for waiter in chunks.take(CHUNKS_TRIED_PER_JOB) {
                        if waiter.grant.is_closed() {
                            gone.push(waiter.id);
                        } else if let Some(worker) = fits(waiter) {
                            found = Some((waiter.id, worker));
                            break 'levels;
                        }
                    }
                }
            }
        }
        for id in gone {
            self.remove(id);
        }
        let (id, worker) = found?;
        let waiter = self.remove(id)?;
        self.levels[waiter.ticket.priority.rank()].unserved_since = Instant::now();
        Some((waiter, worker))
    }

    /// A slot was granted to (or handed back by, `held` false) a chunk of `ticket`'s.
    pub(super) fn held(&mut self, ticket: &Ticket, held: bool) {
        if held {
            self.grants += 1;
            self.tenant_served
                .insert(ticket.tenant.name.clone(), self.grants);
            self.job_served.insert(ticket.job, self.grants);
        }
        let change = |count: &mut u32| {
            *count = if held {
                *count + 1
            } else {
                count.saturating_sub(1)
            };
        };
        let tenant = ticket.tenant.name.clone();
        change(self.held_by_tenant.entry(tenant.clone()).or_default());
        change(self.held_by_job.entry(ticket.job).or_default());
        let job_held = self.held_by_job[&ticket.job];
        let job_served = self.job_served.get(&ticket.job).copied().unwrap_or(0);
        if job_held == 0 {
            self.held_by_job.remove(&ticket.job);
        }
        if self.held_by_tenant[&tenant] == 0 {
            self.held_by_tenant.remove(&tenant);
        }
        let tenant_key = self.tenant_key(&ticket.tenant);
        for level in &mut self.levels {
            let Some(line) = level.tenants.get_mut(&tenant) else {
                continue;
            };
            level.order.remove(&line.key);
            line.key = tenant_key.clone();
            level.order.insert(line.key.clone());
            if let Some(job) = line.jobs.get_mut(&ticket.job) {
                line.order.remove(&job.key);
                job.key = (job_held, job_served, ticket.job);
                line.order.insert(job.key);
            }
        }
        let waiting = self.levels[ticket.priority.rank()]
            .tenants
            .get(&tenant)
            .is_some_and(|line| line.jobs.contains_key(&ticket.job));
        if job_held == 0 && !waiting {
            self.job_served.remove(&ticket.job);
        }
    }

    /// Slots `tenant` holds now.
    pub(super) fn held_by(&self, tenant: &str) -> u32 {
        self.held_by_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// The levels with chunks waiting, in the order they are served now: a starved one
    /// first, then the most urgent.
    fn levels_in_turn(&self) -> Vec<usize> {
        let waiting: Vec<usize> = (0..self.levels.len())
            .filter(|&l| !self.levels[l].tenants.is_empty())
            .collect();
        let starved = waiting
            .iter()
            .skip(1)
            .copied()
            .filter(|&l| self.levels[l].unserved_since.elapsed() >= self.starvation)
            .min_by_key(|&l| self.levels[l].unserved_since);
        starved
            .into_iter()
            .chain(waiting.into_iter().filter(|&l| Some(l) != starved))
            .collect()
    }

    /// A tenant's place in a level: slots held per unit of weight, then when it was last
    /// served.
    fn tenant_key(&self, tenant: &Tenant) -> TenantKey {
        let held = f64::from(self.held_by(&tenant.name));
        let share = (held / tenant.weight.max(1e-6) * 1e6).min(u64::MAX as f64) as u64;
        let served = self.tenant_served.get(&tenant.name).copied().unwrap_or(0);
        (share, served, tenant.name.clone())
    }
}

/// The least loaded idle worker that has `encoder`, avoiding `avoid` unless every such
/// worker is in it.
pub(super) fn pick_worker(
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
