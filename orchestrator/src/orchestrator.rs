//! The central type: [`Orchestrator`] holds the configuration, storage, workers and jobs,
//! accepts jobs (checked by [`validate`](crate::jobs::validate), recorded in the
//! [`job store`](crate::jobs::store) before the submission is answered), cancels them
//! (recorded before acknowledged), hands each one to the [`runner`](crate::run::runner), and
//! plans jobs without running them (the dry run of `PlanJob`). At start every job in the
//! job store that had not ended runs again. [`Exposition`] is its Prometheus view.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use framefleet_common::auth::AttachToken;
use framefleet_common::config::Config;
use framefleet_common::proto::{JobSpec, RegisterWorkerRequest};
use framefleet_common::storage::Storage;
use framefleet_common::telemetry::metrics::MetricsSource;

use crate::fleet::registration::{RegisterError, RegistrationPolicy};
use crate::fleet::{Fleet, FleetOffer, WorkerAccess};
use crate::jobs::io::JobIo;
use crate::jobs::live::{KeyConflict, LiveJobs};
use crate::jobs::record::JobRecord;
use crate::jobs::store::{JobStore, JobStoreError, StoredJob};
use crate::jobs::tenant::{Tenant, Tenants};
use crate::jobs::validate::{self, InvalidSpec};
use crate::metrics::{Gauges, OrchestratorMetrics};
use crate::notify::Notifier;
use crate::planning::history::{CostHistory, HistoryError};
use crate::planning::planner::PlanError;
use crate::planning::{self, JobPlan, Target};
use crate::run::admission::Admission;
use crate::run::probe::{self, InputError};
use crate::run::runner::JobRunner;

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The spec is invalid.
    #[error(transparent)]
    Invalid(#[from] InvalidSpec),
    /// The idempotency key belongs to another job.
    #[error(transparent)]
    Conflict(#[from] KeyConflict),
    /// The orchestrator is shutting down.
    #[error("the orchestrator is shutting down and accepts no new jobs")]
    ShuttingDown,
    /// The tenant has as many jobs waiting as its quota.
    #[error(
        "tenant {tenant} already has {most} jobs queued or running, the most it may \
             (tenants.{tenant}.max_queued_jobs); submit again when some have ended"
    )]
    TenantQueueFull {
        /// The tenant.
        tenant: String,
        /// Its quota.
        most: u32,
    },
    /// The orchestrator holds as many jobs as it takes.
    #[error("{0} jobs are already queued or running, the most this orchestrator takes (limits.max_queued_jobs); submit again when some have ended")]
    QueueFull(u32),
    /// The job could not be recorded, so it was not accepted.
    #[error("the job was not accepted: {0}; try again later")]
    Store(#[from] JobStoreError),
}

/// Why the orchestrator could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The job store cannot be opened or read.
    #[error(transparent)]
    Store(#[from] JobStoreError),
    /// The cost history cannot be opened.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// `orchestrator.worker_hosts` holds an entry that is no host.
    #[error(transparent)]
    WorkerHosts(#[from] RegisterError),
}

/// Why a dry run could not plan a job.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    /// The spec is invalid.
    #[error(transparent)]
    Invalid(#[from] InvalidSpec),
    /// The input cannot be read or processed.
    #[error(transparent)]
    Input(#[from] InputError),
    /// No plan could be made.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// The orchestrator: configuration, storage, workers and jobs.
pub struct Orchestrator {
    /// Configuration it was started with.
    pub config: Arc<Config>,
    /// Registered workers.
    pub fleet: Arc<Fleet>,
    /// Jobs.
    pub jobs: LiveJobs,
    /// The tenants sharing the fleet, from the configuration.
    pub tenants: Tenants,
    /// Counters and gauges for the Prometheus endpoint.
    pub metrics: Arc<OrchestratorMetrics>,
    /// Wakes whoever waits for work to arrive (the autoscaler's `StreamIsActive`) when a
    /// job is accepted.
    pub arrivals: tokio::sync::Notify,
    store: JobStore,
    runner: Arc<JobRunner>,
    /// What worker registrations are checked against.
    registrations: RegistrationPolicy,
    /// Submissions are recorded one at a time, so a repeated idempotency key is answered
    /// only once the job it names is durable.
    submissions: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
}

impl Orchestrator {
    /// Opens the job store named by `orchestrator.store_path` and the cost history
    /// (`planner.history_path`, else beside the jobs), and resumes every job in the store
    /// that had not ended; jobs stop (or stay for the next start) on `shutdown`.
    pub async fn open(config: Config, shutdown: CancellationToken) -> Result<Arc<Self>, OpenError> {
        let registrations = RegistrationPolicy::new(&config)?;
        let store = JobStore::open_sqlite(&config.orchestrator.store_path)?;
        let stored = store.load().await?;
        let history_path = [
            &config.planner.history_path,
            &config.orchestrator.store_path,
        ]
        .into_iter()
        .find(|p| !p.is_empty())
        .map(Path::new);
        let history = CostHistory::open(history_path, config.planner.history_samples)?;
        let config = Arc::new(config);
        let tenants = Tenants::from_config(&config);
        let fleet = Fleet::new(
            Duration::from_secs_f64(config.orchestrator.lease_seconds),
            WorkerAccess {
                tls: config.tls.clone(),
                token: AttachToken::new(&config.auth.fleet_token),
            },
            Duration::from_secs_f64(config.dispatch.starvation_seconds),
        );
        let metrics = Arc::<OrchestratorMetrics>::default();
        let runner = Arc::new(JobRunner {
            storage: Storage::new(&config.storage),
            fleet: fleet.clone(),
            metrics: metrics.clone(),
            store: store.clone(),
            history,
            admission: Admission::new(
                config.limits.max_running_jobs,
                Duration::from_secs_f64(config.dispatch.starvation_seconds),
            ),
            notifier: Notifier::new(&config, store.clone(), shutdown.clone()),
            shutdown: shutdown.clone(),
            tasks: TaskTracker::new(),
            blocking: TaskTracker::new(),
            config: config.clone(),
        });
        let orchestrator = Arc::new(Self {
            config,
            fleet,
            jobs: LiveJobs::default(),
            tenants,
            metrics,
            arrivals: tokio::sync::Notify::new(),
            store,
            runner,
            registrations,
            submissions: tokio::sync::Mutex::new(()),
            shutdown,
        });
        for job in stored {
            orchestrator.resume(job)?;
        }
        orchestrator.runner.notifier.resume().await;
        Ok(orchestrator)
    }

    /// Puts a job read from the job store back among the live ones and, when it had not
    /// ended, runs it again.
    fn resume(&self, stored: StoredJob) -> Result<(), JobStoreError> {
        let ended = stored.snapshot.state().is_terminal();
        let checked = if ended {
            Err(None)
        } else {
            validate::check(stored.spec.clone(), &self.config).map_err(Some)
        };
        let (request, refusal) = match checked {
            Ok(request) => (request, None),
            Err(refusal) => {
                let request = validate::check_ended(stored.spec, &self.config).map_err(|e| {
                    JobStoreError::Corrupt {
                        path: self.config.orchestrator.store_path.clone(),
                        job: stored.id.clone(),
                        reason: e.to_string(),
                    }
                })?;
                (request, refusal)
            }
        };
        let record = Arc::new(JobRecord::restore(
            stored.id,
            stored.seq,
            request,
            stored.snapshot,
            stored.report,
            &self.tenants,
        ));
        self.jobs.restore(&stored.idempotency_key, record.clone());
        if record.state().is_terminal() {
            return Ok(());
        }
        if let Some(refusal) = refusal {
            tracing::warn!(job = %record.id, %refusal, "a stored job no longer passes the submission checks; it fails instead of resuming");
            self.runner.refuse(record, refusal);
            return Ok(());
        }
        tracing::info!(job = %record.id, chunks_done = stored.chunks.len(), "resuming a job from the job store");
        if stored.cancel_requested {
            record.cancel.cancel();
        }
        self.runner.start(record, stored.chunks);
        Ok(())
    }

    /// Validates and accepts a job of `tenant`'s (or returns the one its idempotency key
    /// names among that tenant's) and starts it. A new job is in the job store before this
    /// returns.
    pub async fn submit(
        &self,
        idempotency_key: &str,
        spec: JobSpec,
        tenant: Arc<Tenant>,
    ) -> Result<(Arc<JobRecord>, bool), SubmitError> {
        if self.shutdown.is_cancelled() {
            return Err(SubmitError::ShuttingDown);
        }
        validate::idempotency_key(idempotency_key)?;
        let request = validate::check(spec, &self.config)?;
        let key = scoped_key(&tenant, idempotency_key);
        let _one_at_a_time = self.submissions.lock().await;
        let repeated = !key.is_empty() && self.jobs.by_key(&key).is_some();
        if !repeated {
            self.check_quotas(&tenant)?;
        }
        let (job, created) = self.jobs.create(&key, request, tenant)?;
        if created {
            let stored = StoredJob {
                id: job.id.clone(),
                seq: job.seq,
                idempotency_key: key,
                spec: job.request.spec.clone(),
                snapshot: job.snapshot(),
                report: None,
                chunks: Vec::new(),
                cancel_requested: false,
                runs: 0,
            };
            if let Err(error) = self.store.insert(stored).await {
                self.jobs.forget(&job.id);
                return Err(error.into());
            }
            tracing::info!(job = %job.id, inputs = job.request.inputs.len(), input = %job.request.inputs[0].input, output = %job.request.inputs[0].output, "job accepted");
            self.metrics.job_submitted();
            self.runner.start(job.clone(), Vec::new());
            self.arrivals.notify_waiters();
        }
        Ok((job, created))
    }

    /// Refuses a new job when the orchestrator (`limits.max_queued_jobs`) or `tenant`
    /// (`tenants.NAME.max_queued_jobs`) has as many queued or running as it may.
    fn check_quotas(&self, tenant: &Tenant) -> Result<(), SubmitError> {
        let open: Vec<Arc<JobRecord>> = self
            .jobs
            .list()
            .into_iter()
            .filter(|j| !j.state().is_terminal())
            .collect();
        let most = self.config.limits.max_queued_jobs;
        if open.len() >= most as usize {
            return Err(SubmitError::QueueFull(most));
        }
        let theirs = open.iter().filter(|j| j.tenant.name == tenant.name).count();
        if tenant.max_queued_jobs > 0 && theirs >= tenant.max_queued_jobs as usize {
            return Err(SubmitError::TenantQueueFull {
                tenant: tenant.name.to_string(),
                most: tenant.max_queued_jobs,
            });
        }
        Ok(())
    }

    /// Resolves once the orchestrator is shutting down.
    pub async fn shutting_down(&self) {
        self.shutdown.cancelled().await;
    }

    /// Adds a worker to the fleet and, on its first registration, keeps its cold start in
    /// the cost history (what an autoscaled fleet's new workers are planned to take).
    pub async fn register_worker(
        &self,
        request: RegisterWorkerRequest,
    ) -> Result<String, RegisterError> {
        let worker = self.registrations.check(request).await?;
        let first = !worker.rejoining && worker.cold_start_seconds > 0.0;
        let (gpu_type, name, seconds) = (
            worker.gpu_type.clone(),
            worker.name.clone(),
            worker.cold_start_seconds,
        );
        let id = self.fleet.register(worker)?;
        if first {
            if let Err(error) = self
                .runner
                .history
                .record_cold_start(&gpu_type, &name, seconds)
                .await
            {
                tracing::warn!(%error, "a worker's cold start could not be kept");
            }
        }
        Ok(id)
    }

    /// A dry run: checks `spec`, probes its input and plans it for `target` from the cost
    /// history, dispatching and writing nothing.
    pub async fn plan_dry_run(
        &self,
        spec: JobSpec,
        target: &Target,
    ) -> Result<JobPlan, DryRunError> {
        let request = validate::check_dry_run(spec, &self.config)?;
        let [pair] = request.inputs.as_slice() else {
            return Err(InvalidSpec(
                "a dry run plans one input; plan each input of the list on its own".into(),
            )
            .into());
        };
        let io = JobIo::new(&self.runner.storage);
        let probe_started = Instant::now();
        let (info, _) = probe::probe_within_limits(
            &io.input,
            &pair.input,
            &self.config.limits,
            &self.runner.blocking,
            self.shutdown.child_token(),
        )
        .await?;
        probe::check_output_size(&info, request.processor.scale, &self.config.limits)?;
        let plan = planning::plan_job(
            &self.config,
            &self.runner.history,
            FleetOffer {
                fair_slots: self.fleet.fair_slots(request.priority),
                ..self
                    .fleet
                    .offer(&request.processor.model, request.encoder())
            },
            target,
            &request,
            &info.video,
            probe_started.elapsed().as_secs_f64(),
        )
        .await?;
        Ok(plan)
    }

    /// Cancels a job that has not ended; the request is in the job store before this
    /// returns, so a restart does not bring the job back.
    pub async fn cancel(&self, job: &JobRecord) -> Result<(), JobStoreError> {
        if !job.state().is_terminal() {
            self.store.request_cancel(&job.id).await?;
            tracing::info!(job = %job.id, "job cancel requested");
            job.cancel.cancel();
        }
        Ok(())
    }

    /// Stops accepting jobs and waits for running ones to reach a terminal state (or, with
    /// a durable job store, to stop where they are) and for their blocking work to end.
    pub async fn drain(&self) {
        self.fleet.close();
        self.runner.drain().await;
    }

    /// The live state the metrics' gauges show.
    fn gauges(&self) -> Gauges {
        let (slots, busy_slots) = self.fleet.slots();
        Gauges {
            job_states: self.jobs.list().iter().map(|job| job.state()).collect(),
            chunks_waiting: self.fleet.queue_depth(),
            workers: self.fleet.len(),
            slots,
            busy_slots,
        }
    }
}

/// An idempotency key scoped to its tenant, so tenants cannot reach (or learn of) each
/// other's jobs through a key: tenant `default` keeps the bare key (as before tenants),
/// others prefix theirs with their name and a space, which no key holds.
fn scoped_key(tenant: &Tenant, key: &str) -> String {
    if key.is_empty() || &*tenant.name == Tenant::DEFAULT {
        key.to_string()
    } else {
        format!("{} {key}", tenant.name)
    }
}

/// The `/metrics` view of a running orchestrator. It holds the orchestrator weakly, so
/// the endpoint never keeps a stopped one alive.
pub struct Exposition {
    orchestrator: Weak<Orchestrator>,
}

impl Exposition {
    /// The view of `orchestrator`.
    pub fn new(orchestrator: &Arc<Orchestrator>) -> Self {
        Self {
            orchestrator: Arc::downgrade(orchestrator),
        }
    }
}

impl MetricsSource for Exposition {
    fn render(&self) -> Result<String, std::fmt::Error> {
        let Some(orchestrator) = self.orchestrator.upgrade() else {
            return Ok(String::new());
        };
        orchestrator.metrics.render(&orchestrator.gauges())
    }
}
