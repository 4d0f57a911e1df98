//! Where retries are decided: a chunk's attempts (each one raced against its backup, see
//! [`super::race`]) repeat with exponential backoff and jitter (backon) on other workers,
//! up to `dispatch.max_attempts`, until one is accepted. A permanent error (the worker
//! said no worker can do it) and a missing slot end the chunk at once.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use framefleet_common::config::DispatchConfig;

use super::DispatchError;
use crate::fleet::AcquireError;

/// How one attempt failed.
#[derive(Debug)]
pub enum AttemptError {
    /// It may succeed on another worker.
    Retry {
        /// What went wrong, for the log and the final error.
        message: String,
        /// The worker it ran on, avoided by the next attempt.
        worker: Option<String>,
        /// GPU-seconds it held its slot, counted as waste.
        held_gpu_seconds: f64,
    },
    /// It cannot succeed anywhere (the worker's message).
    Permanent(String),
    /// No worker slot could be had.
    NoSlot(AcquireError),
}

/// The end of one attempt and of its backup, when one was started.
#[derive(Debug)]
pub struct Raced<T> {
    /// The accepted chunk, or the error to act on.
    pub result: Result<T, AttemptError>,
    /// Attempt numbers used: 2 when a backup ran.
    pub attempts: u32,
    /// GPU-seconds of the attempt that lost the race.
    pub wasted_gpu_seconds: f64,
}

/// What the retries came to.
#[derive(Debug)]
pub struct Retried<T> {
    /// The accepted chunk.
    pub value: T,
    /// Attempts made, the accepted one included.
    pub attempts: u32,
    /// GPU-seconds of every failed or losing attempt.
    pub wasted_gpu_seconds: f64,
    /// Why each failed attempt failed, oldest first.
    pub failures: Vec<String>,
}

/// Runs `race(attempt, workers_to_avoid)` for chunk `index` until one is accepted, waiting
/// between tries as `config` says.
pub async fn until_accepted<T, F, Fut>(
    config: &DispatchConfig,
    index: u32,
    mut race: F,
) -> Result<Retried<T>, DispatchError>
where
    F: FnMut(u32, HashSet<String>) -> Fut,
    Fut: Future<Output = Raced<T>>,
{
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(config.backoff_initial_ms))
        .with_max_delay(Duration::from_millis(config.backoff_max_ms))
        .with_jitter()
        .with_max_times(config.max_attempts.saturating_sub(1) as usize)
        .build();
    let mut avoid = HashSet::new();
    let mut wasted_gpu_seconds = 0.0;
    let mut failures = Vec::new();
    let mut attempt = 1;
    loop {
        let raced = race(attempt, avoid.clone()).await;
        wasted_gpu_seconds += raced.wasted_gpu_seconds;
        attempt += raced.attempts - 1;
        let (message, worker, held_gpu_seconds) = match raced.result {
            Ok(value) => {
                return Ok(Retried {
                    value,
                    attempts: attempt,
                    wasted_gpu_seconds,
                    failures,
                })
            }
            Err(AttemptError::Retry {
                message,
                worker,
                held_gpu_seconds,
            }) => (message, worker, held_gpu_seconds),
            Err(AttemptError::Permanent(message)) => {
                return Err(DispatchError::Permanent { index, message })
            }
            Err(AttemptError::NoSlot(error)) => return Err(error.into()),
        };
        wasted_gpu_seconds += held_gpu_seconds;
        avoid.extend(worker);
        failures.push(format!("attempt {attempt}: {message}"));
        let Some(delay) = delays.next() else {
            return Err(DispatchError::Exhausted {
                index,
                attempts: attempt,
                last: message,
            });
        };
        tracing::warn!(chunk = index, attempt, error = %message, ?delay, "chunk attempt failed; retrying");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn config(max_attempts: u32) -> DispatchConfig {
        DispatchConfig {
            max_attempts,
            backoff_initial_ms: 1000,
            backoff_max_ms: 8000,
            ..DispatchConfig::default()
        }
    }

    fn failed(worker: &str) -> Raced<&'static str> {
        Raced {
            result: Err(AttemptError::Retry {
                message: format!("{worker} crashed"),
                worker: Some(worker.into()),
                held_gpu_seconds: 2.0,
            }),
            attempts: 1,
            wasted_gpu_seconds: 0.0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_attempts_back_off_avoid_their_workers_and_count_as_waste() {
        let seen = Mutex::new(Vec::new());
        let started = tokio::time::Instant::now();
        let retried = until_accepted(&config(4), 7, |attempt, avoid| {
            seen.lock().expect("lock").push((attempt, avoid.len()));
            async move {
                match attempt {
                    1 => failed("a"),
                    2 => failed("b"),
                    _ => Raced {
                        result: Ok("chunk"),
                        attempts: 1,
                        wasted_gpu_seconds: 0.0,
                    },
                }
            }
        })
        .await
        .expect("third attempt accepted");
        assert_eq!(retried.value, "chunk");
        assert_eq!(retried.attempts, 3);
        assert_eq!(retried.wasted_gpu_seconds, 4.0);
        assert_eq!(
            retried.failures,
            ["attempt 1: a crashed", "attempt 2: b crashed"]
        );
        assert_eq!(*seen.lock().expect("lock"), vec![(1, 0), (2, 1), (3, 2)]);
        // Two waits of at least the initial and the doubled delay.
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_run_out_and_permanent_errors_stop_at_once() {
        let exhausted = until_accepted(&config(3), 2, |_, _| async { failed("a") })
            .await
            .expect_err("every attempt fails");
        assert_eq!(
            exhausted.to_string(),
            "chunk 2 failed after 3 attempts; last error: a crashed"
        );
        let calls = Mutex::new(0);
        let permanent = until_accepted(&config(3), 5, |_, _| {
            *calls.lock().expect("lock") += 1;
            async {
                Raced::<()> {
                    result: Err(AttemptError::Permanent("no such model".into())),
                    attempts: 1,
                    wasted_gpu_seconds: 0.0,
                }
            }
        })
        .await
        .expect_err("permanent");
        assert_eq!(*calls.lock().expect("lock"), 1);
        assert!(
            permanent.to_string().contains("no such model"),
            "{permanent}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_raced_backup_counts_as_an_attempt_and_its_loser_as_waste() {
        let retried = until_accepted(&config(2), 0, |_, _| async {
            Raced {
                result: Ok(()),
                attempts: 2,
                wasted_gpu_seconds: 1.5,
            }
        })
        .await
        .expect("accepted");
        assert_eq!((retried.attempts, retried.wasted_gpu_seconds), (2, 1.5));
    }
}
