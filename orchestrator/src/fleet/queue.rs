//! The queue of chunks waiting for a slot: a chunk asks with [`Fleet::acquire`] and waits
//! until the [policy](super::policy) hands it one, as a [`SlotGrant`] that gives the slot
//! back when dropped; it fails when no worker that could take it is registered for the
//! deadline, or the fleet closes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use framefleet_common::codec::VideoEncoder;

use crate::jobs::valid_job::Priority;

use super::policy::{pick_worker, Ticket};
use super::worker::{Running, WorkerInfo};
use super::{Fleet, State};

/// How often a waiting chunk re-checks that some worker is registered at all.
const EMPTY_FLEET_CHECK: Duration = Duration::from_millis(500);

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

/// A chunk waiting for a slot.
pub(super) struct Waiter {
    /// Its number, in order of arrival.
    pub(super) id: u64,
    /// Whose chunk it is and where it stands.
    pub(super) ticket: Ticket,
    /// Workers it avoids (they failed it before).
    pub(super) avoid: HashSet<String>,
    /// The encoder its worker must have (`None`: any).
    pub(super) encoder: Option<VideoEncoder>,
    /// Where its slot is sent.
    pub(super) grant: oneshot::Sender<SlotGrant>,
}

/// One slot of one worker, held until dropped.
pub struct SlotGrant {
    /// The worker holding the chunk.
    pub worker: WorkerInfo,
    /// Its number among the fleet's grants (its waiter's).
    id: u64,
    ticket: Ticket,
    fleet: Arc<Fleet>,
    armed: bool,
}

impl Drop for SlotGrant {
    fn drop(&mut self) {
        if self.armed {
            self.fleet.release(&self.worker.id, self.id, &self.ticket);
        }
    }
}

/// Takes a waiter out of the queue when its `acquire` ends, however it ends (a grant, a
/// deadline, or the caller giving up).
struct Leave<'a> {
    fleet: &'a Fleet,
    id: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.fleet.lock().queue.remove(self.id);
    }
}

impl Fleet {
    /// Chunks waiting for a slot.
    pub fn queue_depth(&self) -> usize {
        self.lock().queue.len()
    }

    /// What the queue serves before the next waiting chunk of job number `job` (see the
    /// policy); `None` when none of its chunks waits.
    pub fn chunks_ahead(&self, job: u64) -> Option<u32> {
        let ahead = self.lock().queue.chunks_ahead(job)?;
        Some(u32::try_from(ahead).unwrap_or(u32::MAX))
    }

    /// Chunks waiting for a slot at `priority`.
    pub fn waiting_at(&self, priority: Priority) -> usize {
        self.lock().queue.waiting_at(priority)
    }

    /// Refuses new waiters and fails the waiting ones (shutdown).
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.queue.drain();
    }

    /// Waits for a free slot of a worker that has `encoder` (any worker for `None`),
    /// preferring workers not in `avoid` (those that already failed this chunk), in the
    /// turn the [policy](super::policy) gives `ticket`. Fails when no such worker is
    /// registered for `empty_deadline`; while they exist but are busy, the chunk keeps its
    /// place in the queue.
    pub async fn acquire(
        self: &Arc<Self>,
        ticket: Ticket,
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
            state.queue.push(Waiter {
                id,
                ticket,
                avoid,
                encoder,
                grant: grant_tx,
            });
            self.match_waiters(&mut state);
            id
        };
        let _leave = Leave {
            fleet: self,
            id: waiter_id,
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
                        self.lock().queue.remove(waiter_id);
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

    /// A slot of worker `id` is handed back by grant `grant`, a chunk of `ticket`'s.
    pub(super) fn release(self: &Arc<Self>, id: &str, grant: u64, ticket: &Ticket) {
        let mut state = self.lock();
        state.queue.held(ticket, false);
        if let Some(entry) = state.workers.get_mut(id) {
            entry.take_back(grant);
            if entry.draining && entry.busy() == 0 {
                tracing::info!(worker = %entry.info.name, "worker drained and left the fleet");
                state.workers.remove(id);
            }
        }
        self.match_waiters(&mut state);
    }

    /// Hands free slots to waiters, in the policy's order, while some worker has one.
    pub(super) fn match_waiters(self: &Arc<Self>, state: &mut State) {
        let State { workers, queue, .. } = state;
        while workers.values().any(|entry| entry.free() > 0) {
            let fits = |waiter: &Waiter| pick_worker(workers, &waiter.avoid, waiter.encoder);
            let Some((waiter, worker_id)) = queue.take_next(fits) else {
                return;
            };
            let Some(entry) = workers.get_mut(&worker_id) else {
                continue;
            };
            let running = Running {
                encoder: waiter.encoder,
                ticket: waiter.ticket.clone(),
            };
            entry.running.insert(waiter.id, running);
            queue.held(&waiter.ticket, true);
            let grant = SlotGrant {
                worker: entry.info.clone(),
                id: waiter.id,
                ticket: waiter.ticket.clone(),
                fleet: self.clone(),
                armed: true,
            };
            if let Err(mut unsent) = waiter.grant.send(grant) {
                // The waiter gave up; take the slot back without re-entering the lock.
                unsent.armed = false;
                entry.take_back(unsent.id);
                queue.held(&unsent.ticket, false);
            }
        }
    }
}
