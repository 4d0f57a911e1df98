//! The cost history: what every computed chunk and every finished job cost, by kind of
//! job ([`crate::planning::samples::kind`]), kept in SQLite so `auto` plans improve with use and
//! survive restarts. The orchestrator keeps it in its job store's file (tables of their
//! own beside the jobs) unless `planner.history_path` names another; `framefleet local`
//! keeps one per user, so one machine's plans learn from its own jobs.
//!
//! Samples are only added; the model reads the newest `planner.history_samples` of a kind.
//! Workers' cold starts (process start to registered, models loaded) are kept by GPU
//! type: what a chunk waits when an autoscaled fleet must start a worker for it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

use crate::jobs::sqlite_file::{self, SqliteOpenError};
use crate::planning::cost_model::History;
use crate::planning::samples::{ChunkSample, JobCosts, JobSample};

/// The cost history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// SQLite refused an operation.
    #[error("the cost history at {path} failed: {source}; check that the file is writable and the disk is not full")]
    Database {
        /// The history's location.
        path: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The history could not be opened.
    #[error(transparent)]
    Open(#[from] SqliteOpenError),
    /// The blocking task running an operation died.
    #[error("a cost history operation crashed: {0}")]
    Crashed(String),
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS cost_chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        recorded_at REAL NOT NULL,
        host TEXT NOT NULL,
        sharing INTEGER NOT NULL,
        pixels INTEGER NOT NULL,
        frames INTEGER NOT NULL,
        span_seconds REAL NOT NULL,
        stream_seconds REAL NOT NULL,
        model_load_seconds REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS cost_chunks_by_kind ON cost_chunks (kind, id);
    CREATE TABLE IF NOT EXISTS cost_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        recorded_at REAL NOT NULL,
        chunks INTEGER NOT NULL,
        frames INTEGER NOT NULL,
        pixels INTEGER NOT NULL,
        probe_seconds REAL NOT NULL,
        dispatch_seconds REAL NOT NULL,
        stitch_seconds REAL NOT NULL,
        other_seconds REAL NOT NULL,
        wall_seconds REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS cost_jobs_by_kind ON cost_jobs (kind, id);
    CREATE TABLE IF NOT EXISTS cost_cold_starts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        gpu_type TEXT NOT NULL,
        recorded_at REAL NOT NULL,
        worker TEXT NOT NULL,
        seconds REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS cost_cold_starts_by_type ON cost_cold_starts (gpu_type, id);
";

/// The history, shared by the jobs that add to it and the plans that read it; each
/// operation runs on a blocking thread.
#[derive(Clone)]
pub struct CostHistory {
    connection: Arc<Mutex<Connection>>,
    path: String,
    samples: u32,
}

impl CostHistory {
    /// Opens (creating when needed) the history at `path`, or one in memory; the model
    /// reads the newest `samples` samples of a kind.
    pub fn open(path: Option<&Path>, samples: u32) -> Result<Self, HistoryError> {
        let setup = format!("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; {SCHEMA}");
        let connection = sqlite_file::open(path, "the cost history", &setup)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            path: sqlite_file::shown(path),
            samples,
        })
    }

    /// Where it is kept.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Adds what a run cost.
    pub async fn record(&self, costs: JobCosts) -> Result<(), HistoryError> {
        self.run(move |c| insert(c, &costs)).await
    }

    /// The newest samples of `kind`, oldest first.
    pub async fn history(&self, kind: &str) -> Result<History, HistoryError> {
        let (kind, limit) = (kind.to_string(), self.samples);
        self.run(move |c| select(c, &kind, limit)).await
    }

    /// Adds one worker's cold start (`seconds`, process start to registered) on
    /// `gpu_type`.
    pub async fn record_cold_start(
        &self,
        gpu_type: &str,
        worker: &str,
        seconds: f64,
    ) -> Result<(), HistoryError> {
        let (gpu_type, worker) = (gpu_type.to_string(), worker.to_string());
        self.run(move |c| {
            c.execute(
                "INSERT INTO cost_cold_starts (gpu_type, recorded_at, worker, seconds) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![gpu_type, unix_now(), worker, seconds],
            )
            .map(|_| ())
        })
        .await
    }

    /// The newest cold starts measured on `gpu_type`, oldest first.
    pub async fn cold_starts(&self, gpu_type: &str) -> Result<Vec<f64>, HistoryError> {
        let (gpu_type, limit) = (gpu_type.to_string(), self.samples);
        self.run(move |c| {
            let mut seconds = c
                .prepare(
                    "SELECT seconds FROM cost_cold_starts WHERE gpu_type = ?1 \
                     ORDER BY id DESC LIMIT ?2",
                )?
                .query_map(params![gpu_type, limit], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<f64>>>()?;
            seconds.reverse();
            Ok(seconds)
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, HistoryError> {
        let (connection, path) = (self.connection.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(|p| p.into_inner());
            operation(&mut connection).map_err(|source| HistoryError::Database { path, source })
        })
        .await
        .map_err(|e| HistoryError::Crashed(e.to_string()))?
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn insert(connection: &mut Connection, costs: &JobCosts) -> rusqlite::Result<()> {
    let now = unix_now();
    let transaction = connection.transaction()?;
    for chunk in &costs.chunks {
        transaction.execute(
            "INSERT INTO cost_chunks (kind, recorded_at, host, sharing, pixels, frames, \
             span_seconds, stream_seconds, model_load_seconds) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                costs.kind,
                now,
                chunk.host,
                chunk.sharing,
                chunk.pixels as i64,
                chunk.frames as i64,
                chunk.span_seconds,
                chunk.stream_seconds,
                chunk.model_load_seconds,
            ],
        )?;
    }
    if let Some(job) = &costs.job {
        transaction.execute(
            "INSERT INTO cost_jobs (kind, recorded_at, chunks, frames, pixels, probe_seconds, \
             dispatch_seconds, stitch_seconds, other_seconds, wall_seconds) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                costs.kind,
                now,
                job.chunks,
                job.frames as i64,
                job.pixels as i64,
                job.probe_seconds,
                job.dispatch_seconds,
                job.stitch_seconds,
                job.other_seconds,
                job.wall_seconds,
            ],
        )?;
    }
    transaction.commit()
}

fn select(connection: &mut Connection, kind: &str, limit: u32) -> rusqlite::Result<History> {
    let mut chunks = connection
        .prepare(
            "SELECT host, sharing, pixels, frames, span_seconds, stream_seconds, \
             model_load_seconds FROM cost_chunks WHERE kind = ?1 ORDER BY id DESC LIMIT ?2",
        )?
        .query_map(params![kind, limit], |row| {
            Ok(ChunkSample {
                host: row.get(0)?,
                sharing: row.get(1)?,
                pixels: row.get::<_, i64>(2)?.max(0) as u64,
                frames: row.get::<_, i64>(3)?.max(0) as u64,
                span_seconds: row.get(4)?,
                stream_seconds: row.get(5)?,
                model_load_seconds: row.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut jobs = connection
        .prepare(
            "SELECT chunks, frames, pixels, probe_seconds, dispatch_seconds, stitch_seconds, \
             other_seconds, wall_seconds FROM cost_jobs WHERE kind = ?1 ORDER BY id DESC LIMIT ?2",
        )?
        .query_map(params![kind, limit], |row| {
            Ok(JobSample {
                chunks: row.get(0)?,
                frames: row.get::<_, i64>(1)?.max(0) as u64,
                pixels: row.get::<_, i64>(2)?.max(0) as u64,
                probe_seconds: row.get(3)?,
                dispatch_seconds: row.get(4)?,
                stitch_seconds: row.get(5)?,
                other_seconds: row.get(6)?,
                wall_seconds: row.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    chunks.reverse();
    jobs.reverse();
    Ok(History { chunks, jobs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs(kind: &str, frames: u64) -> JobCosts {
        JobCosts {
            kind: kind.into(),
            job: Some(JobSample {
                chunks: 1,
                frames,
                pixels: 100,
                probe_seconds: 0.1,
                dispatch_seconds: 0.2,
                stitch_seconds: 0.3,
                other_seconds: 0.4,
                wall_seconds: 5.0,
            }),
            chunks: vec![ChunkSample {
                host: "h".into(),
                sharing: 1,
                pixels: 100,
                frames,
                span_seconds: 4.0,
                stream_seconds: 3.0,
                model_load_seconds: 0.5,
            }],
        }
    }

    #[tokio::test]
    async fn samples_survive_a_reopen_by_kind_newest_last_and_capped() {
        let directory = tempfile::tempdir().expect("temp dir");
        let path = directory.path().join("state/history.sqlite3");
        {
            let history = CostHistory::open(Some(&path), 2).expect("open");
            for frames in [10, 20, 30] {
                history.record(costs("a", frames)).await.expect("record");
            }
            history.record(costs("b", 99)).await.expect("record");
        }
        let history = CostHistory::open(Some(&path), 2).expect("reopen");
        let a = history.history("a").await.expect("read");
        let frames: Vec<u64> = a.jobs.iter().map(|j| j.frames).collect();
        assert_eq!(frames, vec![20, 30]);
        assert_eq!(a.chunks.len(), 2);
        assert_eq!(a.chunks[1], costs("a", 30).chunks[0]);
        history
            .record_cold_start("L4", "w1", 40.0)
            .await
            .expect("record");
        history
            .record_cold_start("L4", "w2", 30.0)
            .await
            .expect("record");
        history
            .record_cold_start("L4", "w3", 20.0)
            .await
            .expect("record");
        history
            .record_cold_start("T4", "w4", 9.0)
            .await
            .expect("record");
        assert_eq!(history.cold_starts("L4").await.expect("read"), [30.0, 20.0]);
        assert!(history.cold_starts("A10G").await.expect("read").is_empty());
        assert_eq!(
            history.history("c").await.expect("read"),
            History::default()
        );
        let error = CostHistory::open(Some(Path::new("/proc/framefleet/h.sqlite3")), 2)
            .err()
            .expect("unwritable");
        assert!(error.to_string().contains("/proc/framefleet"), "{error}");
    }
}
