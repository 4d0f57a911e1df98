//! The fleet: registered workers, their leases, and the queue of chunks waiting for a slot.
//!
//! Workers register themselves and renew a lease with heartbeats; a worker whose lease
//! lapses, or whose connection fails, is dropped (it registers again if it is alive). A
//! worker that deregisters while it holds chunks stays listed as draining, offered no new
//! chunk, until it hands back its last slot. Each worker has `slots` GPU slots. Chunks ask
//! for a slot with [`Fleet::acquire`]; a slot is handed back when its [`SlotGrant`] is
//! dropped. In files:
//!
//! - [`registration`]: a worker's request checked into a [`Registration`];
//! - [`registry`]: joining, heartbeats, draining, leaving;
//! - [`worker`]: a registered worker, as dispatch sees it and as the fleet keeps it;
//! - [`queue`]: chunks waiting for a slot, and the grants they get;
//! - [`policy`]: which waiting chunk a free slot goes to, and which worker it takes;
//! - [`views`]: what the planner and the scaler read off the fleet.

mod policy;
mod queue;
pub mod registration;
mod registry;
#[cfg(test)]
mod tests;
mod views;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use policy::Ticket;
pub use queue::{AcquireError, SlotGrant};
pub use registration::Registration;
pub use registry::MAX_WORKERS;
pub use views::{FleetLoad, FleetOffer};
pub use worker::{Departure, WorkerAccess, WorkerInfo};

use policy::Queue;
use worker::Entry;

/// Everything the fleet holds, under one lock: the workers and the chunks waiting.
struct State {
    workers: HashMap<String, Entry>,
    queue: Queue,
    next_waiter: u64,
    closed: bool,
}

/// The registry of workers and the slot queue.
pub struct Fleet {
    state: Mutex<State>,
    lease: Duration,
    access: WorkerAccess,
}

impl Fleet {
    /// An empty fleet whose leases last `lease`, reaching workers through `access`, whose
    /// less urgent chunks wait at most `starvation` for a turn (see [`policy`]).
    pub fn new(lease: Duration, access: WorkerAccess, starvation: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                workers: HashMap::new(),
                queue: Queue::new(starvation),
                next_waiter: 0,
                closed: false,
            }),
            lease,
            access,
        })
    }

    /// The lease length workers must renew within.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The fleet's state (a panic elsewhere leaves it consistent: every change is made
    /// whole under the lock).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
