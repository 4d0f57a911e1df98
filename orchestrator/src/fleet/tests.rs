//! The fleet's behaviour: queue order, retries avoiding failed workers, encoders, the
//! scaler's load, leases, draining.

use std::collections::HashSet;
use std::time::Duration;

use framefleet_common::codec::{EncoderRequest, VideoCodec, VideoEncoder};

use super::worker::host_of;
use super::*;

fn registration(name: &str, slots: u32) -> Registration {
    Registration {
        address: "http://127.0.0.1:1".into(),
        name: name.into(),
        gpu_type: "cpu".into(),
        slots,
        gpus_per_slot: 1.0,
        device: "cpu".into(),
        cold_start_seconds: 0.0,
        models: Vec::new(),
        encoders: vec![VideoEncoder::Libx264],
        decoders: Vec::new(),
        rejoining: false,
    }
}

fn priority(job_seq: u64, frames: i64, index: u32) -> QueuePriority {
    QueuePriority {
        job_seq,
        neg_frames: -frames,
        index,
    }
}

#[tokio::test]
async fn longest_chunk_gets_the_first_free_slot() {
    let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
    let id = fleet.register(registration("a", 1)).expect("registers");
    let held = fleet
        .acquire(
            priority(0, 1, 0),
            HashSet::new(),
            None,
            Duration::from_secs(1),
        )
        .await
        .expect("slot");
    let short = {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            fleet
                .acquire(
                    priority(0, 10, 1),
                    HashSet::new(),
                    None,
                    Duration::from_secs(5),
                )
                .await
        })
    };
    let long = {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            fleet
                .acquire(
                    priority(0, 90, 2),
                    HashSet::new(),
                    None,
                    Duration::from_secs(5),
                )
                .await
        })
    };
    while fleet.queue_depth() < 2 {
        tokio::task::yield_now().await;
    }
    drop(held);
    let first = long.await.expect("joins").expect("slot");
    assert_eq!(first.worker.id, id);
    assert!(!short.is_finished());
    drop(first);
    short.await.expect("joins").expect("slot");
}

#[tokio::test]
async fn retries_avoid_workers_that_failed_the_chunk() {
    let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
    let a = fleet.register(registration("a", 1)).expect("registers");
    let b = fleet.register(registration("b", 1)).expect("registers");
    let grant = fleet
        .acquire(
            priority(0, 1, 0),
            HashSet::from([a.clone()]),
            None,
            Duration::from_secs(1),
        )
        .await
        .expect("slot");
    assert_eq!(grant.worker.id, b);
    drop(grant);
    // With every worker avoided, any idle one is used rather than none.
    let grant = fleet
        .acquire(
            priority(0, 1, 0),
            HashSet::from([a, b]),
            None,
            Duration::from_secs(1),
        )
        .await;
    assert!(grant.is_ok());
}

#[tokio::test]
async fn an_empty_fleet_fails_after_the_deadline_with_a_clear_message() {
    let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
    let error = fleet
        .acquire(
            priority(0, 1, 0),
            HashSet::new(),
            None,
            Duration::from_millis(600),
        )
        .await
        .err()
        .expect("no workers");
    assert!(error.to_string().contains("no worker registered within"));
    assert_eq!(fleet.queue_depth(), 0);
}

#[tokio::test]
async fn chunks_go_only_to_workers_that_have_the_jobs_encoder() {
    let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
    let with = |name: &str, slots, encoders: &[VideoEncoder]| Registration {
        encoders: encoders.to_vec(),
        ..registration(name, slots)
    };
    let x264_only = fleet
        .register(with("a", 2, &[VideoEncoder::Libx264]))
        .expect("registers");
    let both = fleet
        .register(with(
            "b",
            1,
            &[VideoEncoder::Libx264, VideoEncoder::Libx265],
        ))
        .expect("registers");
    let hevc = Some(EncoderRequest::Codec(VideoCodec::Hevc));
    assert_eq!(fleet.offer("m", hevc).encoder, Some(VideoEncoder::Libx265));
    let h264 = Some(EncoderRequest::Codec(VideoCodec::H264));
    assert_eq!(fleet.offer("m", h264).encoder, Some(VideoEncoder::Libx264));
    let x265 = Some(VideoEncoder::Libx265);
    let wait = Duration::from_secs(5);
    let first = fleet
        .acquire(priority(0, 1, 0), HashSet::new(), x265, wait)
        .await
        .expect("slot");
    assert_eq!(first.worker.id, both);
    // The next x265 chunk waits for b, though a has two free slots.
    let second = {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            fleet
                .acquire(priority(0, 1, 1), HashSet::new(), x265, wait)
                .await
        })
    };
    while fleet.queue_depth() < 1 {
        tokio::task::yield_now().await;
    }
    let any = fleet
        .acquire(priority(1, 1, 0), HashSet::new(), None, wait)
        .await
        .expect("slot");
    assert_eq!(any.worker.id, x264_only, "a job of another encoder takes a");
    assert_eq!(fleet.queue_depth(), 1, "the x265 chunk still waits");
    drop(first);
    let second = second.await.expect("joins").expect("slot");
    assert_eq!(second.worker.id, both);
    let error = fleet
        .acquire(
            priority(0, 1, 2),
            HashSet::new(),
            Some(VideoEncoder::H264Nvenc),
            Duration::from_millis(600),
        )
        .await
        .err()
        .expect("nobody has NVENC");
    assert!(
        error.to_string().contains("no worker with h264_nvenc"),
        "{error}"
    );
}

#[tokio::test]
async fn the_load_elsewhere_counts_only_chunks_of_the_encoders_asked_about() {
    let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
    let l4 = Registration {
        gpu_type: "L4".into(),
        encoders: vec![VideoEncoder::Libx264, VideoEncoder::H264Nvenc],
        ..registration("l4", 2)
    };
    fleet.register(l4).expect("registers");
    fleet.register(registration("cpu", 2)).expect("registers");
    let wait = Duration::from_secs(5);
    let nvenc = Some(VideoEncoder::H264Nvenc);
    let x264 = Some(VideoEncoder::Libx264);
    let on_l4 = fleet
        .acquire(priority(0, 1, 0), HashSet::new(), nvenc, wait)
        .await
        .expect("slot");
    let mut held = Vec::new();
    for index in 0..2 {
        let grant = fleet
            .acquire(
                priority(1, 1, index),
                HashSet::from([on_l4.worker.id.clone()]),
                x264,
                wait,
            )
            .await
            .expect("slot");
        assert_eq!(grant.worker.name, "cpu");
        held.push(grant);
    }
    let everything = |_: Option<VideoEncoder>| true;
    let nvenc_only = |encoder: Option<VideoEncoder>| encoder == nvenc;
    let from_l4 = fleet.load(Some("L4"), everything);
    assert_eq!(
        (
            from_l4.busy_here,
            from_l4.busy_elsewhere,
            from_l4.busy_workers
        ),
        (1, 2, 1)
    );
    assert_eq!(fleet.load(Some("L4"), nvenc_only).busy_elsewhere, 0);
    assert_eq!(fleet.load(Some("cpu"), nvenc_only).busy_elsewhere, 1);
    drop(on_l4);
    assert_eq!(fleet.load(Some("cpu"), nvenc_only).busy_elsewhere, 0);
    drop(held);
    assert_eq!(fleet.load(None, everything), FleetLoad::default());
}

#[tokio::test]
async fn registrations_stop_at_the_fleet_bound() {
    let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
    for index in 0..MAX_WORKERS {
        fleet
            .register(registration(&format!("w{index}"), 1))
            .expect("registers");
    }
    let refused = fleet
        .register(registration("one too many", 1))
        .expect_err("refused");
    assert!(refused.to_string().contains("10000 workers"), "{refused}");
}

#[tokio::test]
async fn lapsed_leases_drop_workers() {
    let fleet = Fleet::new(Duration::from_millis(1), WorkerAccess::default());
    let id = fleet.register(registration("a", 1)).expect("registers");
    std::thread::sleep(Duration::from_millis(5));
    fleet.reap_expired();
    assert!(fleet.is_empty());
    assert!(!fleet.heartbeat(&id));
}

#[tokio::test]
async fn the_offer_counts_free_and_warm_slots_machines_and_the_gpu_type() {
    let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
    assert_eq!(fleet.offer("m", None).slots, 0);
    fleet.register(registration("a", 2)).expect("registers");
    let mut other_host = registration("b", 1);
    other_host.address = "http://10.0.0.7:50051".into();
    other_host.gpu_type = "L4".into();
    fleet.register(other_host).expect("registers");
    fleet.chunk_accepted("a", "m");
    let held = fleet
        .acquire(
            priority(0, 1, 0),
            HashSet::new(),
            None,
            Duration::from_secs(1),
        )
        .await
        .expect("slot");
    let offer = fleet.offer("m", None);
    assert_eq!((offer.slots, offer.hosts), (2, 2));
    assert_eq!(offer.gpu_type, "cpu");
    let expected_warm = if held.worker.name == "a" { 1 } else { 2 };
    assert_eq!(offer.warm_slots, expected_warm);
    assert_eq!(fleet.offer("other", None).warm_slots, 0);
    assert_eq!(host_of("http://127.0.0.1:1"), "127.0.0.1");
    assert_eq!(host_of("worker-3.fleet:50051"), "worker-3.fleet");
}

#[tokio::test]
async fn a_deregistered_worker_drains_its_chunks_listed_and_then_leaves() {
    let fleet = Fleet::new(Duration::from_secs(10), WorkerAccess::default());
    let busy = fleet
        .register(Registration {
            device: "cuda".into(),
            cold_start_seconds: 12.5,
            models: vec!["realesr-animevideov3-x2".into()],
            ..registration("a", 1)
        })
        .expect("registers");
    let grant = fleet
        .acquire(
            priority(0, 1, 0),
            HashSet::new(),
            None,
            Duration::from_secs(1),
        )
        .await
        .expect("slot");
    let idle = fleet.register(registration("b", 2)).expect("registers");
    fleet.chunk_accepted("a", "lanczos");
    fleet.drain(&busy);
    fleet.drain(&idle);
    let listed = fleet.workers();
    assert_eq!(listed.len(), 1, "the idle worker left at once: {listed:?}");
    let a = &listed[0];
    assert_eq!((a.name.as_str(), a.device.as_str()), ("a", "cuda"));
    assert_eq!((a.slots, a.busy_slots, a.draining), (1, 1, true));
    assert_eq!((a.cold_start_seconds, a.chunks_done), (12.5, 1));
    assert_eq!(a.models, ["lanczos", "realesr-animevideov3-x2"]);
    // No new chunk goes to a draining worker: with it the only one, the fleet is empty.
    assert!(fleet.is_empty());
    assert_eq!(fleet.slots(), (1, 1));
    fleet.reap_expired();
    assert_eq!(
        fleet.workers().len(),
        1,
        "its chunk's stream, not its lease, decides"
    );
    drop(grant);
    assert!(
        fleet.workers().is_empty(),
        "gone once its chunk is handed back"
    );
}
