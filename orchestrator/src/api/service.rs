//! The orchestrator's gRPC services: `Orchestrator` for users and `Fleet` for workers.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use framefleet_common::proto::fleet_server::Fleet as FleetApi;
use framefleet_common::proto::orchestrator_server::Orchestrator as OrchestratorApi;
use framefleet_common::proto::{
    CancelJobRequest, DeregisterRequest, DeregisterResponse, GetCostReportRequest,
    GetCostReportResponse, GetJobRequest, HeartbeatRequest, HeartbeatResponse, Job, JobState,
    ListJobsRequest, ListJobsResponse, ListWorkersRequest, ListWorkersResponse, PlanJobRequest,
    PlanJobResponse, RegisterWorkerRequest, RegisterWorkerResponse, SubmitJobRequest,
    SubmitJobResponse, SummarizeCostsRequest, SummarizeCostsResponse, WatchJobRequest,
};

use crate::api::callers::Caller;
use crate::jobs::live::SummaryFilter;
use crate::jobs::record::JobRecord;
use crate::jobs::validate::MAX_JOB_ID_BYTES;
use crate::orchestrator::{DryRunError, Orchestrator, SubmitError};
use crate::planning::Target;
use framefleet_common::text::{bounded_status, printable};

/// Jobs in a page of `ListJobs` when the request gives no size, and the most it may ask.
const DEFAULT_PAGE_JOBS: u32 = 100;
const MAX_PAGE_JOBS: u32 = 1000;
/// A page of jobs stops before this many bytes (past its first job), well under the
/// 4 MiB a gRPC client decodes by default.
const MAX_PAGE_BYTES: usize = 2 << 20;
/// How a page token starts: the number of the page's last job follows.
const PAGE_TOKEN_PREFIX: &str = "after-";

/// The job number a page token continues after (`None`: from the first job).
fn parse_page_token(token: &str) -> Result<Option<u64>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix(PAGE_TOKEN_PREFIX)
        .and_then(|seq| seq.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            Status::invalid_argument(
                "page_token is not one this orchestrator gave; list again without it",
            )
        })
}

/// The `Orchestrator` gRPC service.
pub struct OrchestratorService {
    orchestrator: Arc<Orchestrator>,
}

impl OrchestratorService {
    /// A service over `orchestrator`.
    pub fn new(orchestrator: Arc<Orchestrator>) -> Self {
        Self { orchestrator }
    }

    /// Job `id`, when `caller` may see it (another tenant's job is not found, as if it did
    /// not exist).
    fn job(&self, caller: &Caller, id: &str) -> Result<Arc<JobRecord>, Status> {
        if id.len() > MAX_JOB_ID_BYTES {
            return Err(Status::invalid_argument(format!(
                "a job id of {} bytes names no job (ids have at most {MAX_JOB_ID_BYTES}); list \
                 jobs to see the ids",
                id.len()
            )));
        }
        let job = self
            .orchestrator
            .jobs
            .get(id)
            .filter(|job| caller.may_see(&job.tenant.name));
        job.ok_or_else(|| {
            Status::not_found(format!(
                "no job with id `{}`; list jobs to see the ids",
                printable(id)
            ))
        })
    }
}

#[tonic::async_trait]
impl OrchestratorApi for OrchestratorService {
    async fn submit_job(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<SubmitJobResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let spec = request
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no job spec"))?;
        let (job, created) = self
            .orchestrator
            .submit(&request.idempotency_key, spec, caller.tenant().clone())
            .await
            .map_err(|e| match e {
                SubmitError::Invalid(e) => Status::invalid_argument(e.to_string()),
                SubmitError::Conflict(e) => Status::already_exists(e.to_string()),
                SubmitError::ShuttingDown | SubmitError::Store(_) => {
                    Status::unavailable(e.to_string())
                }
                SubmitError::QueueFull(_) | SubmitError::TenantQueueFull { .. } => {
                    Status::resource_exhausted(e.to_string())
                }
            })
            .map_err(bounded_status)?;
        Ok(Response::new(SubmitJobResponse {
            job_id: job.id.clone(),
            created,
        }))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(
            self.job(&caller, &request.into_inner().job_id)?.snapshot(),
        ))
    }

    type WatchJobStream = ReceiverStream<Result<Job, Status>>;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let caller = Caller::of(&request)?;
        let job = self.job(&caller, &request.into_inner().job_id)?;
        let (updates, stream) = mpsc::channel(16);
        let mut changes = job.subscribe();
        tokio::spawn(async move {
            loop {
                let snapshot = changes.borrow_and_update().clone();
                let terminal = snapshot.state().is_terminal();
                if updates.send(Ok(snapshot)).await.is_err() || terminal {
                    return;
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = updates.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<Job>, Status> {
        let caller = Caller::of(&request)?;
        let job = self.job(&caller, &request.into_inner().job_id)?;
        self.orchestrator.cancel(&job).await.map_err(|e| {
            bounded_status(Status::unavailable(format!(
                "the cancel was not recorded: {e}"
            )))
        })?;
        Ok(Response::new(job.snapshot()))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let wanted = request.state;
        let size = match request.page_size {
            0 => DEFAULT_PAGE_JOBS,
            asked => asked.min(MAX_PAGE_JOBS),
        };
        let after = parse_page_token(&request.page_token)?;
        let (jobs, last) =
            self.orchestrator
                .jobs
                .page(after, size as usize, MAX_PAGE_BYTES, |job| {
                    (wanted == JobState::Unspecified as i32 || job.state == wanted)
                        && caller.may_see(&job.tenant)
                });
        Ok(Response::new(ListJobsResponse {
            jobs,
            next_page_token: last
                .map(|seq| format!("{PAGE_TOKEN_PREFIX}{seq}"))
                .unwrap_or_default(),
        }))
    }

    async fn get_cost_report(
        &self,
        request: Request<GetCostReportRequest>,
    ) -> Result<Response<GetCostReportResponse>, Status> {
        let caller = Caller::of(&request)?;
        let job = self.job(&caller, &request.into_inner().job_id)?;
        let report = job.report().ok_or_else(|| {
            Status::failed_precondition(format!(
                "job {} is {}; its cost report is written when it ends",
                job.id,
                job.state().label()
            ))
        })?;
        Ok(Response::new(GetCostReportResponse {
            job_id: job.id.clone(),
            json: report.to_json(),
            report: Some(report),
        }))
    }

    async fn summarize_costs(
        &self,
        request: Request<SummarizeCostsRequest>,
    ) -> Result<Response<SummarizeCostsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let bounds = [request.ended_after, request.ended_before];
        if bounds.iter().any(|t| !t.is_finite() || *t < 0.0) {
            return Err(Status::invalid_argument(
                "ended_after and ended_before are Unix times in seconds (0 for no bound)",
            ));
        }
        let summary = self.orchestrator.jobs.summarize(&SummaryFilter {
            ended_after: request.ended_after,
            ended_before: request.ended_before,
            labels: request.labels,
            tenant: match &caller {
                Caller::Tenant(tenant) => Some(tenant.name.to_string()),
                Caller::Operator(_) => None,
            },
        });
        Ok(Response::new(SummarizeCostsResponse {
            json: summary.to_json(),
            summary: Some(summary),
        }))
    }

    async fn plan_job(
        &self,
        request: Request<PlanJobRequest>,
    ) -> Result<Response<PlanJobResponse>, Status> {
        let request = request.into_inner();
        let spec = request
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no job spec"))?;
        let target = Target {
            local_workers: request.workers,
            gpu_type: request.gpu_type,
        };
        let plan = self
            .orchestrator
            .plan_dry_run(spec, &target)
            .await
            .map_err(|e| match e {
                DryRunError::Invalid(_) => Status::invalid_argument(e.to_string()),
                DryRunError::Input(_) | DryRunError::Plan(_) => {
                    Status::failed_precondition(e.to_string())
                }
            })
            .map_err(bounded_status)?;
        Ok(Response::new(plan.response()))
    }

    async fn list_workers(
        &self,
        _request: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        Ok(Response::new(ListWorkersResponse {
            workers: self.orchestrator.fleet.workers(),
        }))
    }
}

/// The `Fleet` gRPC service.
pub struct FleetService {
    orchestrator: Arc<Orchestrator>,
}

impl FleetService {
    /// A service over `orchestrator`'s fleet.
    pub fn new(orchestrator: Arc<Orchestrator>) -> Self {
        Self { orchestrator }
    }
}

#[tonic::async_trait]
impl FleetApi for FleetService {
    async fn register_worker(
        &self,
        request: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerResponse>, Status> {
        let worker_id = self
            .orchestrator
            .register_worker(request.into_inner())
            .await
            .map_err(|e| bounded_status(Status::invalid_argument(e.to_string())))?;
        Ok(Response::new(RegisterWorkerResponse {
            worker_id,
            lease_seconds: self.orchestrator.fleet.lease().as_secs_f64(),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let fleet = &self.orchestrator.fleet;
        Ok(Response::new(HeartbeatResponse {
            known: fleet.heartbeat(&request.into_inner().worker_id),
            lease_seconds: fleet.lease().as_secs_f64(),
        }))
    }

    async fn deregister(
        &self,
        request: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        self.orchestrator
            .fleet
            .drain(&request.into_inner().worker_id);
        Ok(Response::new(DeregisterResponse {}))
    }
}
