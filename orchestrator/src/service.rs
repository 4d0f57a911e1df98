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

use crate::job::JobRecord;
use crate::live_jobs::SummaryFilter;
use crate::orchestrator::{DryRunError, Orchestrator, SubmitError};
use crate::planning::Target;

/// The `Orchestrator` gRPC service.
pub struct OrchestratorService {
    orchestrator: Arc<Orchestrator>,
}

impl OrchestratorService {
    /// A service over `orchestrator`.
    pub fn new(orchestrator: Arc<Orchestrator>) -> Self {
        Self { orchestrator }
    }

    fn job(&self, id: &str) -> Result<Arc<JobRecord>, Status> {
        self.orchestrator.jobs.get(id).ok_or_else(|| {
            Status::not_found(format!("no job with id `{id}`; list jobs to see the ids"))
        })
    }
}

#[tonic::async_trait]
impl OrchestratorApi for OrchestratorService {
    async fn submit_job(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<SubmitJobResponse>, Status> {
        let request = request.into_inner();
        let spec = request
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no job spec"))?;
        let (job, created) = self
            .orchestrator
            .submit(&request.idempotency_key, spec)
            .await
            .map_err(|e| match e {
                SubmitError::Invalid(e) => Status::invalid_argument(e.to_string()),
                SubmitError::Conflict(e) => Status::already_exists(e.to_string()),
                SubmitError::ShuttingDown | SubmitError::Store(_) => {
                    Status::unavailable(e.to_string())
                }
                SubmitError::QueueFull(_) => Status::resource_exhausted(e.to_string()),
            })?;
        Ok(Response::new(SubmitJobResponse {
            job_id: job.id.clone(),
            created,
        }))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        Ok(Response::new(
            self.job(&request.into_inner().job_id)?.snapshot(),
        ))
    }

    type WatchJobStream = ReceiverStream<Result<Job, Status>>;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let job = self.job(&request.into_inner().job_id)?;
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
        let job = self.job(&request.into_inner().job_id)?;
        self.orchestrator
            .cancel(&job)
            .await
            .map_err(|e| Status::unavailable(format!("the cancel was not recorded: {e}")))?;
        Ok(Response::new(job.snapshot()))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let wanted = request.into_inner().state;
        let jobs = self
            .orchestrator
            .jobs
            .list()
            .iter()
            .map(|job| job.snapshot())
            .filter(|job| wanted == JobState::Unspecified as i32 || job.state == wanted)
            .collect();
        Ok(Response::new(ListJobsResponse { jobs }))
    }

    async fn get_cost_report(
        &self,
        request: Request<GetCostReportRequest>,
    ) -> Result<Response<GetCostReportResponse>, Status> {
        let job = self.job(&request.into_inner().job_id)?;
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
            })?;
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
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
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
