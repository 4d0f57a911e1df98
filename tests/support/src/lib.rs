//! The end-to-end tests' harness, built once for every test binary: real components
//! only. Each module is named for what it starts or checks:
//!
//! - [`garage`]: the S3 server (one per test binary) and [`objects`] on it;
//! - [`child`], [`process`] and [`cluster`]: child processes, framefleet ones, and an
//!   orchestrator with its workers;
//! - [`jobs`]: jobs through the `Orchestrator` gRPC service, and their reports; [`local`]:
//!   jobs through `framefleet local`;
//! - [`ports`]: loopback ports for the processes a test starts;
//! - [`media`]: clips made with FFmpeg; [`ffprobe`]: what ffprobe reads back; [`models`]:
//!   the Real-ESRGAN weights, imported;
//! - [`exactness`]: frames, timestamps and audio compared with the input;
//! - [`faults`]: proxies that break storage traffic; [`netns`]: network namespaces whose
//!   links a test cuts (partitions).
//!
//! Everything is re-exported at the top, so a test says `use framefleet_testkit::*`.

pub mod child;
pub mod cluster;
pub mod exactness;
pub mod faults;
pub mod ffprobe;
pub mod garage;
pub mod jobs;
pub mod local;
pub mod media;
pub mod models;
pub mod netns;
pub mod objects;
pub mod ports;
pub mod process;

pub use child::*;
pub use cluster::*;
pub use exactness::*;
pub use faults::*;
pub use ffprobe::*;
pub use garage::*;
pub use jobs::*;
pub use local::*;
pub use media::*;
pub use models::*;
pub use netns::*;
pub use objects::*;
pub use ports::*;
pub use process::*;
