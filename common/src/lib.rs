//! framefleet-common: the pieces every framefleet process shares.
//!
//! - [`proto`]: the generated gRPC code for `proto/framefleet/v1`, the only wire contract
//!   between the CLI, the orchestrator and the workers.
//! - [`config`]: one configuration for every binary (built-in defaults, then
//!   `framefleet.toml`, then `FRAMEFLEET_*` environment variables), validated at start.
//! - [`storage`]: object URIs (`file://`, `s3://`) and the storage client: ranged reads for
//!   FFmpeg, multipart uploads, prefix deletes, with byte accounting.
//! - [`media`]: FFmpeg set-up, bounded packet reading and the probe that lists every frame's
//!   timestamp of a video.
//! - [`phases`]: per-phase figures of a chunk's pipeline, read by phase.
//! - [`cost`]: the cost report a job produces and the GPU price table.
//! - [`codec`]: the video encoders chunks are written with, and how a job chooses one.
//! - [`telemetry`]: tracing set-up shared by the binaries.
//! - [`signals`]: the Ctrl-C / SIGTERM future servers shut down on.
//! - [`reflection`]: gRPC reflection (v1 and v1alpha) listing a server's own services.
//! - [`auth`]: bearer tokens and TLS for the gRPC servers and their clients.
//! - [`text`]: error texts bounded for gRPC statuses, request text escaped for printing.

pub mod auth;
pub mod codec;
pub mod config;
pub mod cost;
pub mod media;
pub mod phases;
pub mod proto;
pub mod reflection;
pub mod signals;
pub mod storage;
pub mod telemetry;
pub mod text;
