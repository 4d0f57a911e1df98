//! The gRPC side of an attempt: sends `ProcessChunk` to the worker holding the slot and
//! follows its event stream (progress into the job, then one result), with a deadline on
//! the call and on every event. A worker whose connection fails is removed from the fleet.

use std::time::Duration;

use tonic::Code;

use framefleet_common::proto::{
    chunk_event, is_permanent_chunk_error, ChunkResult, ProcessChunkRequest,
};
use framefleet_common::telemetry::propagation;

use crate::fleet::{Fleet, SlotGrant};
use crate::jobs::record::JobRecord;

/// Why the stream gave no result.
pub enum StreamError {
    /// The chunk may succeed elsewhere.
    Retry(String),
    /// The worker said it cannot succeed anywhere.
    Permanent(String),
}

/// Sends `request` to the slot's worker and follows its events to the result of chunk
/// `index` of `job`, waiting at most `deadline` for each.
pub async fn process_chunk(
    fleet: &Fleet,
    grant: &SlotGrant,
    job: &JobRecord,
    index: u32,
    request: ProcessChunkRequest,
    deadline: Duration,
) -> Result<ChunkResult, StreamError> {
    let worker = &grant.worker;
    let mut client = worker.client.clone();
    let classify = |status: tonic::Status| -> StreamError {
        if is_permanent_chunk_error(status.code()) {
            return StreamError::Permanent(status.message().to_string());
        }
        if matches!(status.code(), Code::Unavailable | Code::Unknown) {
            fleet.remove(&worker.id, "its connection failed");
        }
        StreamError::Retry(format!("worker {}: {}", worker.name, status.message()))
    };
    let silent = |what: &str| {
        StreamError::Retry(format!(
            "worker {} {what} {:.0} s",
            worker.name,
            deadline.as_secs_f64()
        ))
    };
    let mut call = tonic::Request::new(request);
    propagation::inject_current(call.metadata_mut());
    let mut stream = match tokio::time::timeout(deadline, client.process_chunk(call)).await {
        Err(_) => return Err(silent("did not answer within")),
        Ok(Err(status)) => return Err(classify(status)),
        Ok(Ok(response)) => response.into_inner(),
    };
    loop {
        match tokio::time::timeout(deadline, stream.message()).await {
            Err(_) => return Err(silent("sent nothing for")),
            Ok(Err(status)) => return Err(classify(status)),
            Ok(Ok(None)) => {
                return Err(StreamError::Retry(format!(
                    "worker {} closed the stream without a result",
                    worker.name
                )))
            }
            Ok(Ok(Some(event))) => match event.event {
                Some(chunk_event::Event::Progress(progress)) => {
                    job.chunk_progress(index, &progress)
                }
                Some(chunk_event::Event::Result(result)) => return Ok(result),
                None => {}
            },
        }
    }
}
