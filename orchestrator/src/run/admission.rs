//! Which queued job starts next when `limits.max_running_jobs` jobs already run: the same
//! rules as the fleet's slots, applied to whole jobs. The most urgent level waiting first
//! (a job that has waited `dispatch.starvation_seconds` counts one level more urgent, so
//! batch jobs get through), then the tenant running the fewest jobs per unit of weight,
//! then the job that arrived first. Eight long jobs running cannot keep a short interactive
//! one in QUEUED behind later arrivals of their own kind.
//!
//! The jobs waiting here are at most `limits.max_queued_jobs`; each start weighs them all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::jobs::record::JobRecord;
use crate::jobs::tenant::Tenant;

/// The gate jobs pass to run.
pub struct Admission {
    state: Mutex<State>,
    limit: usize,
    starvation: Duration,
}

#[derive(Default)]
struct State {
    running: usize,
    running_by_tenant: HashMap<Arc<str>, u32>,
    waiting: Vec<Waiting>,
}

/// A job waiting to start.
struct Waiting {
    seq: u64,
    tenant: Arc<Tenant>,
    rank: usize,
    since: Instant,
    go: oneshot::Sender<Admitted>,
}

/// A running job's place, given back when dropped.
pub struct Admitted {
    admission: Arc<Admission>,
    tenant: Arc<str>,
    armed: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.admission.lock();
            state.leave(&self.tenant);
            self.admission.start_next(&mut state);
        }
    }
}

impl State {
    /// A running job of `tenant` ended.
    fn leave(&mut self, tenant: &str) {
        self.running -= 1;
        if let Some(count) = self.running_by_tenant.get_mut(tenant) {
            *count -= 1;
            if *count == 0 {
                self.running_by_tenant.remove(tenant);
            }
        }
    }
}

impl Admission {
    /// A gate letting `limit` jobs run at once, aging waiting ones after `starvation`.
    pub fn new(limit: u32, starvation: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            limit: limit.max(1) as usize,
            starvation,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for `job`'s turn to run; the place is held until the returned value drops.
    pub async fn enter(self: &Arc<Self>, job: &JobRecord) -> Admitted {
        let (go, started) = oneshot::channel();
        {
            let mut state = self.lock();
            state.waiting.push(Waiting {
                seq: job.seq,
                tenant: job.tenant.clone(),
                rank: job.request.priority.rank(),
                since: Instant::now(),
                go,
            });
            self.start_next(&mut state);
        }
        // The sender lives in the state until the job starts: the wait ends only then,
        // and a place sent to a job that stopped waiting is given back as it drops.
        match started.await {
            Ok(admitted) => admitted,
            Err(_) => std::future::pending().await,
        }
    }

    /// Starts waiting jobs, in turn, while places are free; jobs whose task ended while
    /// waiting are dropped.
    fn start_next(self: &Arc<Self>, state: &mut State) {
        state.waiting.retain(|w| !w.go.is_closed());
        while state.running < self.limit {
            let Some(next) = self.next_turn(state) else {
                return;
            };
            let waiting = state.waiting.swap_remove(next);
            let tenant = waiting.tenant.name.clone();
            state.running += 1;
            *state.running_by_tenant.entry(tenant.clone()).or_default() += 1;
            let admitted = Admitted {
                admission: self.clone(),
                tenant,
                armed: true,
            };
            if let Err(mut unsent) = waiting.go.send(admitted) {
                // It stopped waiting: give the place back without re-entering the lock.
                unsent.armed = false;
                state.leave(&unsent.tenant);
            }
        }
    }

    /// The waiting job whose turn it is.
    fn next_turn(&self, state: &State) -> Option<usize> {
        let key = |w: &Waiting| {
            let aged = usize::from(w.since.elapsed() >= self.starvation);
            let running = state
                .running_by_tenant
                .get(&w.tenant.name)
                .copied()
                .unwrap_or(0);
            let share = f64::from(running) / w.tenant.weight.max(1e-6);
            (w.rank.saturating_sub(aged), share, w.seq)
        };
        (0..state.waiting.len()).min_by(|&a, &b| {
            let (a, b) = (key(&state.waiting[a]), key(&state.waiting[b]));
            a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use framefleet_common::proto::{JobSpec, Priority as WirePriority};

    /// Job `seq` of `tenant` at `priority`.
    fn job(seq: u64, tenant: &str, priority: WirePriority) -> Arc<JobRecord> {
        let spec = JobSpec {
            input_uri: "s3://bucket/in.mp4".into(),
            output_uri: format!("s3://bucket/out-{seq}.mp4"),
            priority: priority as i32,
            ..JobSpec::default()
        };
        let request = crate::jobs::validate::check(spec, &Default::default()).expect("valid");
        let tenant = Arc::new(Tenant {
            name: Arc::from(tenant),
            weight: 1.0,
            max_slots: 0,
            max_queued_jobs: 0,
        });
        Arc::new(JobRecord::new(format!("job-{seq}"), seq, request, tenant))
    }

    /// Queues `job` at `gate`; the task ends once the job may start, holding its place
    /// until `release` fires.
    fn waits(gate: &Arc<Admission>, job: Arc<JobRecord>) -> tokio::task::JoinHandle<Admitted> {
        let gate = gate.clone();
        tokio::spawn(async move { gate.enter(&job).await })
    }

    async fn until_waiting(gate: &Admission, jobs: usize) {
        while gate.lock().waiting.len() < jobs {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn the_next_job_to_start_goes_by_priority_then_tenant_share_then_arrival() {
        let gate = Admission::new(1, Duration::from_secs(60));
        let running = gate.enter(&job(0, "busy", WirePriority::Normal)).await;
        let batch = waits(&gate, job(1, "other", WirePriority::Batch));
        let busy_again = waits(&gate, job(2, "busy", WirePriority::Normal));
        let fresh = waits(&gate, job(3, "fresh", WirePriority::Normal));
        until_waiting(&gate, 3).await;
        let urgent = waits(&gate, job(4, "busy", WirePriority::Interactive));
        until_waiting(&gate, 4).await;

        drop(running);
        let started = urgent.await.expect("the interactive job starts first");
        drop(started);
        // Both normal tenants run nothing now: the earlier arrival goes first.
        drop(busy_again.await.expect("then the earlier normal job"));
        drop(fresh.await.expect("then the other normal job"));
        drop(batch.await.expect("batch last"));
    }

    #[tokio::test]
    async fn a_tenant_running_jobs_lets_another_tenant_start_first() {
        let gate = Admission::new(2, Duration::from_secs(60));
        let _first = gate.enter(&job(0, "busy", WirePriority::Normal)).await;
        let second = gate.enter(&job(1, "other", WirePriority::Normal)).await;
        let busy = waits(&gate, job(2, "busy", WirePriority::Normal));
        let other = waits(&gate, job(3, "other", WirePriority::Normal));
        until_waiting(&gate, 2).await;
        drop(second);
        let started = other.await.expect("the tenant running less starts first");
        assert!(!busy.is_finished());
        drop(started);
        drop(busy.await.expect("then the other"));
    }

    #[tokio::test]
    async fn a_job_that_stops_waiting_gives_its_place_back() {
        let gate = Admission::new(1, Duration::from_secs(60));
        let running = gate.enter(&job(0, "a", WirePriority::Normal)).await;
        let gone = waits(&gate, job(1, "a", WirePriority::Normal));
        let next = waits(&gate, job(2, "a", WirePriority::Normal));
        until_waiting(&gate, 2).await;
        gone.abort();
        let _ = gone.await;
        drop(running);
        drop(next.await.expect("the place skips the job that left"));
        assert_eq!(gate.lock().running, 0);
    }
}
