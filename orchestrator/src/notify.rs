//! Word when a job ends: a job with a `notify_url` gets one JSON event POSTed there when
//! it reaches SUCCEEDED, FAILED or CANCELLED:
//! `{"id", "type": "job.succeeded"|"job.failed"|"job.cancelled", "created", "job"}`, `job`
//! being the job as `framefleet status --json` prints it with its cost totals.
//!
//! - **Signed** as payment and code-hosting webhooks are: the header
//!   `Framefleet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with
//!   `notify.secret`, `t` being the time of that try, so a receiver can refuse stale ones.
//! - **At least once.** The event is kept in the job store before the job's end is
//!   recorded and until a try is answered with a 2xx; anything else is tried again with
//!   exponential backoff for `notify.retry_seconds`. A restart goes on with the events
//!   still kept. The id (`evt-` and the job's id) is the same on every try, so a receiver
//!   drops a repeat.
//! - **Only where allowed.** URLs pass `notify.allowed_hosts` at submission (private,
//!   loopback and metadata addresses refused unless listed), and again when sent: every
//!   name resolved through the same guard, every redirect checked.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use framefleet_common::config::Config;
use framefleet_common::cost::CostReport;
use framefleet_common::proto::{Job, JobState};
use framefleet_common::storage::web::{guarded_client, HostPolicy};

use crate::jobs::store::{JobStore, PendingEvent};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Framefleet-Signature";

/// First wait before a try is repeated; it doubles up to [`LONGEST_WAIT`].
const FIRST_WAIT: Duration = Duration::from_secs(1);

/// Longest wait between two tries.
const LONGEST_WAIT: Duration = Duration::from_secs(600);

/// Longest one try may take.
const TRY_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends the events of ended jobs, and keeps at it.
pub struct Notifier {
    client: reqwest::Client,
    key: hmac::Key,
    retry: Duration,
    store: JobStore,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Notifier {
    /// A notifier of `config`'s settings keeping its events in `store`; deliveries stop
    /// (their events kept) on `shutdown`.
    pub fn new(config: &Config, store: JobStore, shutdown: CancellationToken) -> Arc<Self> {
        let policy = HostPolicy::listing(&config.notify.allowed_hosts, "notify.allowed_hosts");
        Arc::new(Self {
            client: guarded_client(&policy, Duration::from_secs(10), TRY_TIMEOUT),
            key: hmac::Key::new(hmac::HMAC_SHA256, config.notify.secret.as_bytes()),
            retry: Duration::from_secs_f64(config.notify.retry_seconds),
            store,
            tasks: TaskTracker::new(),
            shutdown,
        })
    }

    /// The event of `job`, which has ended, with its `report`'s totals, for `url`.
    pub fn event(job: &Job, report: Option<&CostReport>, url: &str) -> PendingEvent {
        let created = unix_now();
        let kind = match job.state() {
            JobState::Succeeded => "job.succeeded",
            JobState::Cancelled => "job.cancelled",
            _ => "job.failed",
        };
        let mut described = job.to_json();
        if let Some(totals) = report.map(CostReport::totals) {
            described["cost"] = serde_json::json!({
                "gpu_seconds": totals.gpu_seconds,
                "wasted_gpu_seconds": totals.wasted_gpu_seconds,
                "cost_usd": totals.cost_usd,
                "wall_seconds": totals.wall_seconds,
                "frames": totals.frames,
            });
        }
        let id = format!("evt-{}", job.id);
        let body = serde_json::json!({
            "id": id,
            "type": kind,
            "created": created.floor() as u64,
            "job": described,
        });
        PendingEvent {
            id,
            url: url.to_string(),
            body: body.to_string(),
            created,
        }
    }

    /// Keeps `event` in the job store, then delivers it in the background.
    pub async fn send(self: &Arc<Self>, event: PendingEvent) {
        if let Err(error) = self.store.save_event(event.clone()).await {
            tracing::error!(event = %event.id, %error, "the event could not be kept; sending it once without a retry after a restart");
        }
        self.deliver_later(event);
    }

    /// Goes on delivering the events the job store kept from before a restart.
    pub async fn resume(self: &Arc<Self>) {
        match self.store.pending_events().await {
            Ok(events) => events.into_iter().for_each(|e| self.deliver_later(e)),
            Err(error) => {
                tracing::error!(%error, "the pending job events could not be read; they are not sent")
            }
        }
    }

    /// Waits for the deliveries in flight to stop (they stop on shutdown).
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn deliver_later(self: &Arc<Self>, event: PendingEvent) {
        let notifier = self.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = notifier.deliver(&event) => {}
                () = notifier.shutdown.cancelled() => {}
            }
        });
    }

    /// Tries `event` until a 2xx or until its retries run out, then forgets it.
    async fn deliver(&self, event: &PendingEvent) {
        let deadline = event.created + self.retry.as_secs_f64();
        let mut wait = FIRST_WAIT;
        loop {
            let outcome = self.try_once(event).await;
            let failure = match outcome {
                Ok(()) => {
                    tracing::info!(event = %event.id, url = %event.url, "job event delivered");
                    break;
                }
                Err(failure) => failure,
            };
            if unix_now() + wait.as_secs_f64() > deadline {
                tracing::error!(event = %event.id, url = %event.url, %failure, "job event given up after notify.retry_seconds");
                break;
            }
            tracing::warn!(event = %event.id, url = %event.url, %failure, retry_in = wait.as_secs_f64(), "job event not delivered; trying again");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LONGEST_WAIT);
        }
        if let Err(error) = self.store.forget_event(&event.id).await {
            tracing::warn!(event = %event.id, %error, "a delivered job event could not be forgotten; it may be sent again after a restart");
        }
    }

    /// One POST of `event`, signed now; a failure says what came back.
    async fn try_once(&self, event: &PendingEvent) -> Result<(), String> {
        let signature = signature(&self.key, unix_now().floor() as u64, &event.body);
        let response = self
            .client
            .post(&event.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(event.body.clone())
            .send()
            .await
            .map_err(|e| format!("{e:#}"))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }
}

/// The signature header's value for `body` sent at `time` (Unix seconds):
/// `t=<time>,v1=<hex HMAC-SHA256 of "<time>.<body>">`.
pub fn signature(key: &hmac::Key, time: u64, body: &str) -> String {
    let tag = hmac::sign(key, format!("{time}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={time},v1={hex}")
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_time_dot_body() {
        // Python's hmac.new(b"secret", b"1700000000.{}", hashlib.sha256).hexdigest().
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"secret");
        assert_eq!(
            signature(&key, 1_700_000_000, "{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }
}
