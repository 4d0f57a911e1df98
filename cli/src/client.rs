//! What every command that talks to an orchestrator shares: where it is and how to prove
//! who we are ([`Connection`]), connecting, following a job's `WatchJob` stream, turning a
//! gRPC status into a message for people, and writing a cost report's waterfall.

use anyhow::Context as _;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use framefleet_common::auth::{self, AttachToken};
use framefleet_common::config::TlsConfig;
use framefleet_common::cost::CostReport;
use framefleet_common::proto::orchestrator_client::OrchestratorClient;
use framefleet_common::proto::{GetCostReportResponse, Job, WatchJobRequest};

/// A client of the `Orchestrator` service that presents the client token.
pub type Client = OrchestratorClient<InterceptedService<Channel, AttachToken>>;

/// Where the orchestrator is and how to prove who we are.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Orchestrator URL (`https://` for TLS).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub orchestrator: String,
    /// Bearer token the orchestrator requires (its `auth.client_token`).
    #[arg(long, env = "FRAMEFLEET_AUTH__CLIENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM of the CA that signed the orchestrator's certificate, for `https://`.
    #[arg(long, env = "FRAMEFLEET_TLS__CA_PATH")]
    pub ca: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Connection {
    /// A client of the orchestrator this names.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let tls = TlsConfig {
            ca_path: self.ca.clone().unwrap_or_default(),
            ..TlsConfig::default()
        };
        let token = AttachToken::new(self.token.as_deref().unwrap_or_default());
        connect(&self.orchestrator, &tls, token).await
    }
}

/// Connects to the orchestrator at `url`.
pub async fn connect(url: &str, tls: &TlsConfig, token: AttachToken) -> anyhow::Result<Client> {
    let channel = auth::endpoint(url, tls)?
        .connect()
        .await
        .with_context(|| format!("cannot reach the orchestrator at {url}; is it running?"))?;
    Ok(OrchestratorClient::with_interceptor(channel, token))
}

/// The `WatchJob` stream of job `job_id`: its snapshot now and at every change.
pub async fn watch_stream(
    client: &mut Client,
    job_id: &str,
) -> anyhow::Result<tonic::Streaming<Job>> {
    let stream = client
        .watch_job(WatchJobRequest {
            job_id: job_id.to_string(),
        })
        .await
        .map_err(status_error)?;
    Ok(stream.into_inner())
}

/// The report a `GetCostReport` reply carries.
pub fn report_of(reply: GetCostReportResponse) -> anyhow::Result<CostReport> {
    reply
        .report
        .context("the orchestrator's reply holds no cost report; is it an older version?")
}

/// Writes `report`'s HTML waterfall to `path`.
pub fn write_waterfall(path: &std::path::Path, report: &CostReport) -> anyhow::Result<()> {
    std::fs::write(path, crate::waterfall::html(report))
        .with_context(|| format!("cannot write the HTML report to {}", path.display()))
}

/// A gRPC error as a one-line message for people.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", status.message(), status.code())
}
