//! The durable record of jobs: what was accepted, how far each job got, and how it ended,
//! written before the orchestrator acknowledges it, so a restart (even after `kill -9`)
//! resumes every job that had not ended.
//!
//! [`JobStoreBackend`] is the small contract a store must meet; [`SqliteJobStore`] is the
//! embedded default. SQLite because it is crash-safe by design (an atomic commit survives a killed
//! process, and with `synchronous = FULL` a power cut), needs no server, is compiled into
//! the binary (`rusqlite` with `bundled`), and is well kept; a shared database can take its
//! place behind the trait when several orchestrators run. [`JobStore`] is what the async
//! code holds: it runs each write on a blocking thread and awaits it.
//!
//! What is kept: per job its spec, idempotency key, submission order, latest snapshot
//! (state, plan, progress), a cancel request, how many times it was started, and at the end
//! its cost report; per accepted chunk its range, the worker's result and its objects.
//! Chunk rows go when the job ends: only a running job needs them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prost::Message;
use rusqlite::{params, Connection};

use framefleet_common::cost::CostReport;
use framefleet_common::proto::{ChunkRange, ChunkResult, Job, JobSpec};
use framefleet_common::storage::ObjectUri;

use crate::jobs::accepted::AcceptedChunk;
use crate::jobs::sqlite_file::{self, SqliteOpenError};

/// The job store failed: the orchestrator cannot keep its promises without it.
#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    /// The database refused an operation.
    #[error("the job store at {path} failed: {source}; check that the file is writable and the disk is not full")]
    Database {
        /// The store's location.
        path: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] SqliteOpenError),
    /// A stored row could not be read back.
    #[error("the job store at {path} holds an unreadable record for job {job}: {reason}")]
    Corrupt {
        /// The store's location.
        path: String,
        /// The job whose row is bad.
        job: String,
        /// What was wrong.
        reason: String,
    },
    /// The blocking task running a store operation died.
    #[error("a job store operation crashed: {0}")]
    Crashed(String),
}

/// A job as the job store holds it (the run-time record is [`crate::jobs::record::JobRecord`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredJob {
    /// Job id.
    pub id: String,
    /// Submission order.
    pub seq: u64,
    /// The submission's idempotency key (may be empty).
    pub idempotency_key: String,
    /// What was asked.
    pub spec: JobSpec,
    /// The latest recorded snapshot.
    pub snapshot: Job,
    /// The cost report, once the job has ended.
    pub report: Option<CostReport>,
    /// Chunks accepted and not yet consumed by the job's end, by index.
    pub chunks: Vec<AcceptedChunk>,
    /// A client asked to cancel it.
    pub cancel_requested: bool,
    /// How many times an orchestrator started running it.
    pub runs: u32,
}

/// An event about a job, kept until its receiver took it (a 2xx) or its retries ran out,
/// so a restart goes on delivering it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// The event's id, the same on every try.
    pub id: String,
    /// Where it is POSTed.
    pub url: String,
    /// The JSON body.
    pub body: String,
    /// When it was made, Unix seconds (its retries end `notify.retry_seconds` after).
    pub created: f64,
}

/// What a durable job store does. Every method returns only once the change is durable.
pub trait JobStoreBackend: Send + Sync {
    /// Records a newly accepted job.
    fn insert(&self, job: &StoredJob) -> Result<(), JobStoreError>;
    /// Replaces a job's snapshot (state, plan, progress).
    fn save_snapshot(&self, id: &str, snapshot: &Job) -> Result<(), JobStoreError>;
    /// Records an accepted chunk.
    fn save_chunk(&self, id: &str, chunk: &AcceptedChunk) -> Result<(), JobStoreError>;
    /// Records a cancel request.
    fn request_cancel(&self, id: &str) -> Result<(), JobStoreError>;
    /// Counts one more start of a job's run and returns the new count.
    fn begin_run(&self, id: &str) -> Result<u32, JobStoreError>;
    /// Records a job's terminal snapshot and report and forgets its chunks.
    fn finish(
        &self,
        id: &str,
        snapshot: &Job,
        report: Option<&CostReport>,
    ) -> Result<(), JobStoreError>;
    /// Every job, in submission order.
    fn load(&self) -> Result<Vec<StoredJob>, JobStoreError>;
    /// Keeps an event to deliver (replacing one of the same id).
    fn save_event(&self, event: &PendingEvent) -> Result<(), JobStoreError>;
    /// Forgets an event delivered or given up on.
    fn forget_event(&self, id: &str) -> Result<(), JobStoreError>;
    /// Every event still to deliver, oldest first.
    fn pending_events(&self) -> Result<Vec<PendingEvent>, JobStoreError>;
    /// True when what is written outlives the process.
    fn is_durable(&self) -> bool;
}

/// The embedded store: one SQLite file (or memory, for one-shot runs).
pub struct SqliteJobStore {
    connection: Mutex<Connection>,
    path: String,
    durable: bool,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        idempotency_key TEXT NOT NULL,
        spec BLOB NOT NULL,
        snapshot BLOB NOT NULL,
        report TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        runs INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS chunks (
        job_id TEXT NOT NULL REFERENCES jobs(id),
        chunk_index INTEGER NOT NULL,
        range BLOB NOT NULL,
        result BLOB NOT NULL,
        output TEXT NOT NULL,
        output_bytes INTEGER NOT NULL,
        audio TEXT, -- the packet log of copied streams (named when it held audio only)
        attempts INTEGER NOT NULL,
        wasted_gpu_seconds REAL NOT NULL,
        PRIMARY KEY (job_id, chunk_index)
    );
    CREATE TABLE IF NOT EXISTS events (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        body TEXT NOT NULL,
        created REAL NOT NULL
    );
";

impl SqliteJobStore {
    /// Opens (creating when needed) the store at `path`; `None` keeps it in memory, which
    /// does not survive the process.
    pub fn open(path: Option<&Path>) -> Result<Self, JobStoreError> {
        let setup = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; {SCHEMA}"
        );
        let connection = sqlite_file::open(path, "the job store", &setup)?;
        Ok(Self {
            connection: Mutex::new(connection),
            path: sqlite_file::shown(path),
            durable: path.is_some(),
        })
    }

    fn with<T>(
        &self,
        operation: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, JobStoreError> {
        let mut connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        operation(&mut connection).map_err(|source| JobStoreError::Database {
            path: self.path.clone(),
            source,
        })
    }

    fn corrupt(&self, job: &str, reason: impl ToString) -> JobStoreError {
        JobStoreError::Corrupt {
            path: self.path.clone(),
            job: job.to_string(),
            reason: reason.to_string(),
        }
    }

    fn decode_chunk(&self, job: &str, row: ChunkRow) -> Result<AcceptedChunk, JobStoreError> {
        let parse = |uri: &str| {
            uri.parse::<ObjectUri>()
                .map_err(|e| self.corrupt(job, format!("chunk object `{uri}`: {e}")))
        };
        Ok(AcceptedChunk {
            range: ChunkRange::decode(row.range.as_slice())
                .map_err(|e| self.corrupt(job, format!("chunk range: {e}")))?,
            result: ChunkResult::decode(row.result.as_slice())
                .map_err(|e| self.corrupt(job, format!("chunk result: {e}")))?,
            output: parse(&row.output)?,
            output_bytes: u64::try_from(row.output_bytes)
                .map_err(|e| self.corrupt(job, format!("chunk size: {e}")))?,
            packet_log: row.audio.as_deref().map(parse).transpose()?,
            attempts: row.attempts,
            wasted_gpu_seconds: row.wasted_gpu_seconds,
        })
    }
}

struct JobRow {
    id: String,
    seq: i64,
    key: String,
    spec: Vec<u8>,
    snapshot: Vec<u8>,
    report: Option<String>,
    cancel_requested: bool,
    runs: u32,
}

struct ChunkRow {
    job_id: String,
    range: Vec<u8>,
    result: Vec<u8>,
    output: String,
    output_bytes: i64,
    /// The chunk's packet log (the `audio` column).
    audio: Option<String>,
    attempts: u32,
    wasted_gpu_seconds: f64,
}

impl JobStoreBackend for SqliteJobStore {
    fn insert(&self, job: &StoredJob) -> Result<(), JobStoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO jobs (id, seq, idempotency_key, spec, snapshot, runs) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    job.id,
                    job.seq as i64,
                    job.idempotency_key,
                    job.spec.encode_to_vec(),
                    job.snapshot.encode_to_vec(),
                    job.runs,
                ],
            )
            .map(drop)
        })
    }

    fn save_snapshot(&self, id: &str, snapshot: &Job) -> Result<(), JobStoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET snapshot = ?2 WHERE id = ?1",
                params![id, snapshot.encode_to_vec()],
            )
            .map(drop)
        })
    }

    fn save_chunk(&self, id: &str, chunk: &AcceptedChunk) -> Result<(), JobStoreError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO chunks \
                 (job_id, chunk_index, range, result, output, output_bytes, audio, attempts, \
                  wasted_gpu_seconds) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    id,
                    chunk.range.index,
                    chunk.range.encode_to_vec(),
                    chunk.result.encode_to_vec(),
                    chunk.output.to_string(),
                    chunk.output_bytes as i64,
                    chunk.packet_log.as_ref().map(ToString::to_string),
                    chunk.attempts,
                    chunk.wasted_gpu_seconds,
                ],
            )
            .map(drop)
        })
    }

    fn request_cancel(&self, id: &str) -> Result<(), JobStoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1",
                params![id],
            )
            .map(drop)
        })
    }

    fn begin_run(&self, id: &str) -> Result<u32, JobStoreError> {
        self.with(|c| {
            c.query_row(
                "UPDATE jobs SET runs = runs + 1 WHERE id = ?1 RETURNING runs",
                params![id],
                |row| row.get(0),
            )
        })
    }

    fn finish(
        &self,
        id: &str,
        snapshot: &Job,
        report: Option<&CostReport>,
    ) -> Result<(), JobStoreError> {
        let report = report
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| self.corrupt(id, format!("the report does not serialize: {e}")))?;
        self.with(|c| {
            let transaction = c.transaction()?;
            transaction.execute(
                "UPDATE jobs SET snapshot = ?2, report = ?3 WHERE id = ?1",
                params![id, snapshot.encode_to_vec(), report],
            )?;
            transaction.execute("DELETE FROM chunks WHERE job_id = ?1", params![id])?;
            transaction.commit()
        })
    }

    fn load(&self) -> Result<Vec<StoredJob>, JobStoreError> {
        let (jobs, chunks) = self.with(|c| {
            let jobs = c
                .prepare(
                    "SELECT id, seq, idempotency_key, spec, snapshot, report, cancel_requested, runs \
                     FROM jobs ORDER BY seq",
                )?
                .query_map([], |row| {
                    Ok(JobRow {
                        id: row.get(0)?,
                        seq: row.get(1)?,
                        key: row.get(2)?,
                        spec: row.get(3)?,
                        snapshot: row.get(4)?,
                        report: row.get(5)?,
                        cancel_requested: row.get(6)?,
                        runs: row.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let chunks = c
                .prepare(
                    "SELECT job_id, range, result, output, output_bytes, audio, attempts, \
                     wasted_gpu_seconds FROM chunks ORDER BY job_id, chunk_index",
                )?
                .query_map([], |row| {
                    Ok(ChunkRow {
                        job_id: row.get(0)?,
                        range: row.get(1)?,
                        result: row.get(2)?,
                        output: row.get(3)?,
                        output_bytes: row.get(4)?,
                        audio: row.get(5)?,
                        attempts: row.get(6)?,
                        wasted_gpu_seconds: row.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((jobs, chunks))
        })?;
        let mut loaded = Vec::with_capacity(jobs.len());
        for row in jobs {
            let id = row.id;
            let report = row
                .report
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| self.corrupt(&id, format!("report: {e}")))?;
            loaded.push(StoredJob {
                seq: u64::try_from(row.seq).map_err(|e| self.corrupt(&id, e))?,
                idempotency_key: row.key,
                spec: JobSpec::decode(row.spec.as_slice())
                    .map_err(|e| self.corrupt(&id, format!("spec: {e}")))?,
                snapshot: Job::decode(row.snapshot.as_slice())
                    .map_err(|e| self.corrupt(&id, format!("snapshot: {e}")))?,
                report,
                chunks: Vec::new(),
                cancel_requested: row.cancel_requested,
                runs: row.runs,
                id,
            });
        }
        for row in chunks {
            let job_id = row.job_id.clone();
            let chunk = self.decode_chunk(&job_id, row)?;
            if let Some(job) = loaded.iter_mut().find(|job| job.id == job_id) {
                job.chunks.push(chunk);
            }
        }
        Ok(loaded)
    }

    fn is_durable(&self) -> bool {
        self.durable
    }

    fn save_event(&self, event: &PendingEvent) -> Result<(), JobStoreError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO events (id, url, body, created) VALUES (?1, ?2, ?3, ?4)",
                params![event.id, event.url, event.body, event.created],
            )
            .map(|_| ())
        })
    }

    fn forget_event(&self, id: &str) -> Result<(), JobStoreError> {
        self.with(|c| {
            c.execute("DELETE FROM events WHERE id = ?1", params![id])
                .map(|_| ())
        })
    }

    fn pending_events(&self) -> Result<Vec<PendingEvent>, JobStoreError> {
        self.with(|c| {
            let mut statement =
                c.prepare("SELECT id, url, body, created FROM events ORDER BY created, id")?;
            let rows = statement.query_map([], |row| {
                Ok(PendingEvent {
                    id: row.get(0)?,
                    url: row.get(1)?,
                    body: row.get(2)?,
                    created: row.get(3)?,
                })
            })?;
            rows.collect()
        })
    }
}

/// The job store as async code uses it: each operation runs on a blocking thread, and the
/// caller goes on only once it is durable.
#[derive(Clone)]
pub struct JobStore {
    backend: Arc<dyn JobStoreBackend>,
}

impl JobStore {
    /// A job store over `backend`.
    pub fn new(backend: Arc<dyn JobStoreBackend>) -> Self {
        Self { backend }
    }

    /// The SQLite job store at `path` (in memory when `path` is empty).
    pub fn open_sqlite(path: &str) -> Result<Self, JobStoreError> {
        let path = (!path.is_empty()).then(|| PathBuf::from(path));
        Ok(Self::new(Arc::new(SqliteJobStore::open(path.as_deref())?)))
    }

    /// True when jobs outlive the process.
    pub fn is_durable(&self) -> bool {
        self.backend.is_durable()
    }

    async fn run<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&dyn JobStoreBackend) -> Result<T, JobStoreError> + Send + 'static,
    ) -> Result<T, JobStoreError> {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || operation(backend.as_ref()))
            .await
            .map_err(|e| JobStoreError::Crashed(e.to_string()))?
    }

    /// See [`JobStoreBackend::insert`].
    pub async fn insert(&self, job: StoredJob) -> Result<(), JobStoreError> {
        self.run(move |s| s.insert(&job)).await
    }

    /// See [`JobStoreBackend::save_snapshot`].
    pub async fn save_snapshot(&self, id: &str, snapshot: Job) -> Result<(), JobStoreError> {
        let id = id.to_string();
        self.run(move |s| s.save_snapshot(&id, &snapshot)).await
    }

    /// See [`JobStoreBackend::save_chunk`].
    pub async fn save_chunk(&self, id: &str, chunk: AcceptedChunk) -> Result<(), JobStoreError> {
        let id = id.to_string();
        self.run(move |s| s.save_chunk(&id, &chunk)).await
    }

    /// See [`JobStoreBackend::request_cancel`].
    pub async fn request_cancel(&self, id: &str) -> Result<(), JobStoreError> {
        let id = id.to_string();
        self.run(move |s| s.request_cancel(&id)).await
    }

    /// See [`JobStoreBackend::begin_run`].
    pub async fn begin_run(&self, id: &str) -> Result<u32, JobStoreError> {
        let id = id.to_string();
        self.run(move |s| s.begin_run(&id)).await
    }

    /// See [`JobStoreBackend::finish`].
    pub async fn finish(
        &self,
        id: &str,
        snapshot: Job,
        report: Option<CostReport>,
    ) -> Result<(), JobStoreError> {
        let id = id.to_string();
        self.run(move |s| s.finish(&id, &snapshot, report.as_ref()))
            .await
    }

    /// See [`JobStoreBackend::load`].
    pub async fn load(&self) -> Result<Vec<StoredJob>, JobStoreError> {
        self.run(|s| s.load()).await
    }

    /// See [`JobStoreBackend::save_event`].
    pub async fn save_event(&self, event: PendingEvent) -> Result<(), JobStoreError> {
        self.run(move |s| s.save_event(&event)).await
    }

    /// See [`JobStoreBackend::forget_event`].
    pub async fn forget_event(&self, id: &str) -> Result<(), JobStoreError> {
        let id = id.to_string();
        self.run(move |s| s.forget_event(&id)).await
    }

    /// See [`JobStoreBackend::pending_events`].
    pub async fn pending_events(&self) -> Result<Vec<PendingEvent>, JobStoreError> {
        self.run(|s| s.pending_events()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_common::proto::JobState;

    fn job(id: &str, seq: u64) -> StoredJob {
        StoredJob {
            id: id.into(),
            seq,
            idempotency_key: format!("key-{id}"),
            spec: JobSpec {
                input_uri: "file:///in.mp4".into(),
                output_uri: "file:///out.mp4".into(),
                ..JobSpec::default()
            },
            snapshot: Job {
                id: id.into(),
                state: JobState::Queued as i32,
                ..Job::default()
            },
            report: None,
            chunks: Vec::new(),
            cancel_requested: false,
            runs: 0,
        }
    }

    fn chunk(index: u32) -> AcceptedChunk {
        AcceptedChunk {
            range: ChunkRange {
                index,
                start_frame: u64::from(index) * 10,
                end_frame: u64::from(index) * 10 + 10,
                ..ChunkRange::default()
            },
            result: ChunkResult {
                frames: 10,
                worker_name: "w".into(),
                gpu_seconds: 1.5,
                ..ChunkResult::default()
            },
            output: ObjectUri::File(format!("/s/chunks/{index:05}.mp4").into()),
            output_bytes: 12345,
            packet_log: Some(ObjectUri::File(
                format!("/s/chunks/{index:05}.packets").into(),
            )),
            attempts: 2,
            wasted_gpu_seconds: 0.25,
        }
    }

    #[test]
    fn what_is_written_is_read_back_by_a_new_process() {
        let directory = tempfile::tempdir().expect("temp dir");
        let path = directory.path().join("state/jobs.sqlite3");
        {
            let store = SqliteJobStore::open(Some(&path)).expect("open");
            assert!(store.is_durable());
            store.insert(&job("a", 0)).expect("insert a");
            store.insert(&job("b", 1)).expect("insert b");
            store.save_chunk("a", &chunk(1)).expect("chunk 1");
            store.save_chunk("a", &chunk(0)).expect("chunk 0");
            assert_eq!(store.begin_run("a").expect("run"), 1);
            assert_eq!(store.begin_run("a").expect("run"), 2);
            store.request_cancel("b").expect("cancel");
            let mut ended = job("b", 1).snapshot;
            ended.state = JobState::Cancelled as i32;
            let report = CostReport {
                job_id: "b".into(),
                ..CostReport::default()
            };
            store.save_chunk("b", &chunk(0)).expect("chunk");
            store.finish("b", &ended, Some(&report)).expect("finish");
        }
        let store = SqliteJobStore::open(Some(&path)).expect("reopen");
        let jobs = store.load().expect("load");
        assert_eq!(jobs.len(), 2);
        let (a, b) = (&jobs[0], &jobs[1]);
        assert_eq!(a.id, "a");
        assert_eq!(a.spec, job("a", 0).spec);
        assert_eq!(a.idempotency_key, "key-a");
        assert_eq!(a.runs, 2);
        assert_eq!(a.chunks, vec![chunk(0), chunk(1)]);
        assert!(a.report.is_none());
        assert_eq!(b.snapshot.state, JobState::Cancelled as i32);
        assert!(b.cancel_requested);
        assert_eq!(b.report.as_ref().map(|r| r.job_id.as_str()), Some("b"));
        assert!(b.chunks.is_empty(), "an ended job keeps no chunk rows");
    }

    #[test]
    fn a_duplicate_job_id_is_refused_and_an_unwritable_path_is_named() {
        let store = SqliteJobStore::open(None).expect("memory");
        assert!(!store.is_durable());
        store.insert(&job("a", 0)).expect("insert");
        assert!(store.insert(&job("a", 1)).is_err());
        let error = SqliteJobStore::open(Some(Path::new("/proc/framefleet/jobs.sqlite3")))
            .err()
            .expect("unwritable");
        assert!(error.to_string().contains("/proc/framefleet"), "{error}");
    }
}
