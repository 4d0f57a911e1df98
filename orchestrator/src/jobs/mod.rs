//! Jobs as the orchestrator holds them, below every stage that runs them:
//!
//! - [`validate`]: a submitted (or stored) spec checked once into a [`ValidJob`]
//!   ([`valid_job`]), the typed job every later stage reads; its frame choice in [`frames`];
//! - [`record`]: one job's state, progress and report while it lives; [`tenant`]: whom it
//!   belongs to and that tenant's share;
//! - [`live`]: the live set, by id, submission order and idempotency key;
//! - [`store`]: the durable record a restart resumes from, in SQLite ([`sqlite_file`]
//!   opens it and the cost history's database);
//! - [`accepted`]: an accepted chunk, stored and at run time; [`run_log`]: what a run
//!   records per input; [`io`]: a job's counted storage traffic.
//!
//! [`ValidJob`]: valid_job::ValidJob

pub mod accepted;
pub mod frames;
pub mod io;
pub mod live;
pub mod record;
pub mod run_log;
pub mod sqlite_file;
pub mod store;
pub mod tenant;
pub mod valid_job;
pub mod validate;
