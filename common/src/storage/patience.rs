//! Waiting out a storage outage: an operation of a job that failed only because storage
//! could not be reached (the probe, a chunk check, the stitch) is tried again, with
//! exponential backoff, for up to `orchestrator.storage_patience_seconds`, so a job that
//! could wait for storage to come back is not failed (nor its chunks run again) meanwhile.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// First wait between two tries.
const FIRST_DELAY: Duration = Duration::from_millis(500);

/// Longest wait between two tries.
const MAX_DELAY: Duration = Duration::from_secs(15);

/// Runs `operation` until it succeeds, fails in a way `unreachable` does not call a storage
/// outage, or `patience` would run out before the next try; `what` names it in the log.
pub async fn through_outages<T, E, F, Fut>(
    patience: Duration,
    what: &str,
    unreachable: impl Fn(&E) -> bool,
    mut operation: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut delay = FIRST_DELAY;
    loop {
        match operation().await {
            Err(error) if unreachable(&error) && started.elapsed() + delay < patience => {
                tracing::warn!(%error, ?delay, "storage unreachable during {what}; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_DELAY);
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn outages_are_waited_out_within_the_patience_and_verdicts_are_not() {
        let tries = AtomicU32::new(0);
        let outage_then_ok = through_outages(
            Duration::from_secs(60),
            "a test",
            |e: &&str| *e == "unreachable",
            || async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0..=2 => Err("unreachable"),
                    _ => Ok(7),
                }
            },
        )
        .await;
        assert_eq!((outage_then_ok, tries.load(Ordering::SeqCst)), (Ok(7), 4));

        let tries = AtomicU32::new(0);
        let verdict = through_outages(
            Duration::from_secs(60),
            "a test",
            |e: &&str| *e == "unreachable",
            || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>("wrong frame count")
            },
        )
        .await;
        assert_eq!(
            (verdict, tries.load(Ordering::SeqCst)),
            (Err("wrong frame count"), 1)
        );

        let started = tokio::time::Instant::now();
        let endless = through_outages(
            Duration::from_secs(10),
            "a test",
            |_: &&str| true,
            || async { Err::<(), _>("unreachable") },
        )
        .await;
        assert_eq!(endless, Err("unreachable"));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
