//! Where jobs live while the orchestrator runs: by id, in submission order, and by
//! idempotency key, so a repeated submission returns the job it first created. What
//! outlives the process is in the [`job store`](crate::jobs::store); this is its live index,
//! which also adds up the cost reports of ended jobs ([`LiveJobs::summarize`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::jobs::record::JobRecord;
use crate::jobs::tenant::Tenant;
use crate::jobs::validate::ValidJob;
use framefleet_common::cost::CostSummary;
use framefleet_common::proto::Job;
use prost::Message;

/// A submission reused an idempotency key for a different job.
#[derive(Debug, thiserror::Error)]
#[error("idempotency key `{key}` was already used for job {job_id} with a different spec; use a new key")]
pub struct KeyConflict {
    /// The reused key.
    pub key: String,
    /// The job it belongs to.
    pub job_id: String,
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, Arc<JobRecord>>,
    order: Vec<String>,
    by_key: HashMap<String, String>,
    next_seq: u64,
}

impl State {
    fn job_for_key(&self, key: &str) -> Option<&Arc<JobRecord>> {
        self.by_key.get(key).and_then(|id| self.jobs.get(id))
    }
}

/// The jobs of this orchestrator.
#[derive(Default)]
pub struct LiveJobs {
    state: Mutex<State>,
}

impl LiveJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a job of `tenant`'s for `request`, or returns the one an earlier submission
    /// with the same non-empty `key` created (keys are the caller's to scope by tenant).
    /// The flag is true when the job is new.
    pub fn create(
        &self,
        key: &str,
        request: ValidJob,
        tenant: Arc<Tenant>,
    ) -> Result<(Arc<JobRecord>, bool), KeyConflict> {
        let mut state = self.lock();
        if !key.is_empty() {
            if let Some(existing) = state.job_for_key(key) {
                if existing.request.spec != request.spec {
                    return Err(KeyConflict {
                        key: key.to_string(),
                        job_id: existing.id.clone(),
                    });
                }
                return Ok((existing.clone(), false));
            }
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let id = format!("job-{}", uuid::Uuid::new_v4().simple());
        let job = Arc::new(JobRecord::new(id.clone(), seq, request, tenant));
        state.jobs.insert(id.clone(), job.clone());
        state.order.push(id.clone());
        if !key.is_empty() {
            state.by_key.insert(key.to_string(), id);
        }
        Ok((job, true))
    }

    /// Puts back a job read from the job store at start, under its key.
    pub fn restore(&self, key: &str, job: Arc<JobRecord>) {
        let mut state = self.lock();
        state.next_seq = state.next_seq.max(job.seq + 1);
        if !key.is_empty() {
            state.by_key.insert(key.to_string(), job.id.clone());
        }
        state.order.push(job.id.clone());
        state.jobs.insert(job.id.clone(), job);
    }

    /// Forgets a job that could not be recorded durably (its submission failed).
    pub fn forget(&self, id: &str) {
        let mut state = self.lock();
        state.jobs.remove(id);
        state.order.retain(|other| other != id);
        state.by_key.retain(|_, other| other != id);
    }

    /// The job an idempotency key names.
    pub fn by_key(&self, key: &str) -> Option<Arc<JobRecord>> {
        self.lock().job_for_key(key).cloned()
    }

    /// The job with this id.
    pub fn get(&self, id: &str) -> Option<Arc<JobRecord>> {
        self.lock().jobs.get(id).cloned()
    }

    /// One page of the jobs `wanted` keeps, in submission order from just after job
    /// number `after`: at most `size` jobs and, past the first, at most `max_bytes` of
    /// them encoded. Returns the page and, when more jobs may follow, the number of its
    /// last job to continue after.
    pub fn page(
        &self,
        after: Option<u64>,
        size: usize,
        max_bytes: usize,
        wanted: impl Fn(&Job) -> bool,
    ) -> (Vec<Job>, Option<u64>) {
        let mut jobs = self.list();
        jobs.retain(|job| after.is_none_or(|after| job.seq > after));
        jobs.sort_by_key(|job| job.seq);
        let (mut page, mut bytes, mut last) = (Vec::new(), 0, None);
        for job in jobs {
            let snapshot = job.snapshot();
            if !wanted(&snapshot) {
                continue;
            }
            let len = snapshot.encoded_len();
            if page.len() == size || (!page.is_empty() && bytes + len > max_bytes) {
                return (page, last);
            }
            bytes += len;
            last = Some(job.seq);
            page.push(snapshot);
        }
        (page, None)
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<Arc<JobRecord>> {
        let state = self.lock();
        state
            .order
            .iter()
            .filter_map(|id| state.jobs.get(id).cloned())
            .collect()
    }
}

/// Which ended jobs a cost summary counts.
#[derive(Debug, Clone, Default)]
pub struct SummaryFilter {
    /// Ended at or after this Unix time (0: no lower bound).
    pub ended_after: f64,
    /// Ended before this Unix time (0: no upper bound).
    pub ended_before: f64,
    /// Labels the job must carry, each with this value.
    pub labels: HashMap<String, String>,
    /// The tenant whose jobs count (`None`: every tenant's).
    pub tenant: Option<String>,
}

impl SummaryFilter {
    fn admits(&self, job: &JobRecord, ended_at: f64) -> bool {
        ended_at >= self.ended_after
            && (self.ended_before <= 0.0 || ended_at < self.ended_before)
            && self
                .tenant
                .as_deref()
                .is_none_or(|t| *job.tenant.name == *t)
            && self
                .labels
                .iter()
                .all(|(key, value)| job.request.spec.labels.get(key) == Some(value))
    }
}

impl LiveJobs {
    /// Adds up the cost reports of the ended jobs `filter` admits.
    pub fn summarize(&self, filter: &SummaryFilter) -> CostSummary {
        let mut summary = CostSummary::default();
        for job in self.list() {
            let Some(report) = job.report() else {
                continue;
            };
            if filter.admits(&job, job.snapshot().finished_at) {
                summary.add(&report);
            }
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use framefleet_common::proto::JobSpec;

    fn spec(input: &str) -> ValidJob {
        let spec = JobSpec {
            input_uri: input.into(),
            output_uri: "file:///out.mp4".into(),
            ..JobSpec::default()
        };
        crate::jobs::validate::check(spec, &Default::default()).expect("valid")
    }

    #[test]
    fn idempotency_keys_map_to_one_job() {
        let store = LiveJobs::default();
        let (first, created) = store
            .create("k1", spec("file:///a"), Tenant::default_tenant())
            .expect("new");
        assert!(created);
        let (again, created) = store
            .create("k1", spec("file:///a"), Tenant::default_tenant())
            .expect("same");
        assert!(!created);
        assert_eq!(first.id, again.id);
        let conflict = store
            .create("k1", spec("file:///b"), Tenant::default_tenant())
            .err()
            .expect("conflict");
        assert!(conflict.to_string().contains(&first.id));
        let (other, created) = store
            .create("", spec("file:///a"), Tenant::default_tenant())
            .expect("new");
        assert!(created);
        assert_ne!(other.id, first.id);
        assert_eq!(store.list().len(), 2);
        assert!(other.seq > first.seq);
    }
}
