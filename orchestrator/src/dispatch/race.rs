//! The backup race: while an attempt runs, it is compared with its job's other chunks
//! every [`STRAGGLER_CHECK`]; once it is a straggler ([`super::straggler`]), a backup
//! attempt starts on another worker and the first to be accepted wins. The loser is
//! cancelled (dropped) and the GPU-seconds it held are counted as waste; when the first
//! to end failed, the other is awaited.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::retry::{AttemptError, Raced};

/// How often a running attempt is compared with its peers.
pub const STRAGGLER_CHECK: Duration = Duration::from_millis(500);

/// What an attempt holds once it has a slot: since when, on which worker and how many
/// GPUs, so an attempt cancelled as the loser of a race can be charged as waste.
#[derive(Default)]
pub struct AttemptClock {
    held: Mutex<Option<(Instant, String, f64)>>,
}

impl AttemptClock {
    /// The attempt got a slot of `gpus` GPUs on `worker`.
    pub fn start(&self, worker: &str, gpus: f64) {
        *self.lock() = Some((Instant::now(), worker.to_string(), gpus));
    }

    fn worker(&self) -> Option<String> {
        self.lock().as_ref().map(|(_, worker, _)| worker.clone())
    }

    fn held_gpu_seconds(&self) -> f64 {
        self.lock().as_ref().map_or(0.0, |(since, _, gpus)| {
            since.elapsed().as_secs_f64() * *gpus
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String, f64)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs `start(attempt, avoid, clock)`; if `is_straggler(elapsed)` turns true before it
/// ends, also runs `start(attempt + 1, ...)` avoiding the first one's worker, and keeps the
/// first accepted (or the last error when both fail).
pub async fn with_backup<T, F, Fut>(
    attempt: u32,
    avoid: HashSet<String>,
    start: F,
    is_straggler: impl Fn(Duration) -> bool,
) -> Raced<T>
where
    F: Fn(u32, HashSet<String>, Arc<AttemptClock>) -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let primary_clock = Arc::new(AttemptClock::default());
    let primary = start(attempt, avoid.clone(), primary_clock.clone());
    tokio::pin!(primary);
    let started = Instant::now();
    loop {
        tokio::select! {
            result = &mut primary => return Raced { result, attempts: 1, wasted_gpu_seconds: 0.0 },
            _ = tokio::time::sleep(STRAGGLER_CHECK) => {
                if is_straggler(started.elapsed()) {
                    break;
                }
            }
        }
    }
    tracing::warn!(
        attempt,
        seconds = started.elapsed().as_secs_f64(),
        "the chunk runs far slower than its peers did; starting a backup attempt on another worker"
    );
    let mut avoid = avoid;
    avoid.extend(primary_clock.worker());
    let backup_clock = Arc::new(AttemptClock::default());
    let backup = start(attempt + 1, avoid, backup_clock.clone());
    tokio::pin!(backup);
    let (first, primary_first) = tokio::select! {
        result = &mut primary => (result, true),
        result = &mut backup => (result, false),
    };
    if first.is_ok() {
        let loser = if primary_first {
            &backup_clock
        } else {
            &primary_clock
        };
        return Raced {
            result: first,
            attempts: 2,
            wasted_gpu_seconds: loser.held_gpu_seconds(),
        };
    }
    // The first to end failed (its GPU-seconds are in its error): wait for the other.
    let second = if primary_first {
        backup.await
    } else {
        primary.await
    };
    let wasted_gpu_seconds = match &first {
        Err(AttemptError::Retry {
            held_gpu_seconds, ..
        }) => *held_gpu_seconds,
        _ => 0.0,
    };
    Raced {
        result: second,
        attempts: 2,
        wasted_gpu_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attempt on the first worker not avoided of `workers`, holding one GPU for the
    /// seconds that worker takes, then accepted.
    async fn run_on(
        workers: &[(&str, u64)],
        avoid: HashSet<String>,
        clock: Arc<AttemptClock>,
    ) -> Result<String, AttemptError> {
        let (worker, seconds) = workers
            .iter()
            .find(|(name, _)| !avoid.contains(*name))
            .copied()
            .expect("a free worker");
        clock.start(worker, 1.0);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        Ok(worker.to_string())
    }

    #[tokio::test(start_paused = true)]
    async fn a_straggler_gets_a_backup_elsewhere_and_the_loser_is_waste() {
        let workers = [("slow", 100), ("fast", 5)];
        let started = Instant::now();
        let raced = with_backup(
            1,
            HashSet::new(),
            |_, avoid, clock| run_on(&workers, avoid, clock),
            |elapsed| elapsed >= Duration::from_secs(10),
        )
        .await;
        assert_eq!(raced.result.expect("backup accepted"), "fast");
        assert_eq!(raced.attempts, 2);
        // The backup started at 10 s and ended at 15 s; the slow attempt held 15 s.
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        assert!(
            (raced.wasted_gpu_seconds - 15.0).abs() < 1e-9,
            "{}",
            raced.wasted_gpu_seconds
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_in_step_with_its_peers_runs_alone() {
        let workers = [("only", 30)];
        let raced = with_backup(
            3,
            HashSet::new(),
            |_, avoid, clock| run_on(&workers, avoid, clock),
            |_| false,
        )
        .await;
        assert_eq!(raced.result.expect("accepted"), "only");
        assert_eq!((raced.attempts, raced.wasted_gpu_seconds), (1, 0.0));
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_first_to_end_fails_the_other_is_awaited() {
        let raced = with_backup(
            1,
            HashSet::new(),
            |attempt, _, clock| async move {
                clock.start(&format!("w{attempt}"), 1.0);
                if attempt == 1 {
                    tokio::time::sleep(Duration::from_secs(40)).await;
                    return Ok(attempt);
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                Err(AttemptError::Retry {
                    message: "backup crashed".into(),
                    worker: Some("w2".into()),
                    held_gpu_seconds: 2.0,
                })
            },
            |elapsed| elapsed >= Duration::from_secs(20),
        )
        .await;
        assert_eq!(raced.result.expect("primary accepted"), 1);
        assert_eq!((raced.attempts, raced.wasted_gpu_seconds), (2, 2.0));
    }
}
