//! The fleet's behaviour: queue order, retries avoiding failed workers, encoders, the
//! scaler's load, leases, draining.

use std::collections::HashSet;
use std::time::Duration;

use framefleet_common::codec::{EncoderRequest, VideoCodec, VideoEncoder};

use crate::jobs::tenant::Tenant;
use crate::jobs::valid_job::Priority;

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

/// A chunk of `frames` frames, index `index`, of normal job `job` of the default tenant.
fn priority(job: u64, frames: u64, index: u32) -> Ticket {
    Ticket {
        job,
        job_id: Arc::from(format!("job-{job}").as_str()),
        tenant: Tenant::default_tenant(),
        priority: Priority::Normal,
        frames,
        index,
    }
}

/// An empty fleet with 10 s leases whose levels age after a minute.
fn new_fleet() -> Arc<Fleet> {
    Fleet::new(
        Duration::from_secs(10),
        WorkerAccess::default(),
        Duration::from_secs(60),
    )
}

#[tokio::test]
async fn longest_chunk_gets_the_first_free_slot() {
    let fleet = new_fleet();
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
    let fleet = new_fleet();
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
    let fleet = new_fleet();
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
    let fleet = new_fleet();
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
    let fleet = new_fleet();
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
    let everything = |_: Option<VideoEncoder>, _: Priority| true;
    let nvenc_only = |encoder: Option<VideoEncoder>, _: Priority| encoder == nvenc;
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
    let fleet = new_fleet();
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
    let fleet = Fleet::new(
        Duration::from_millis(1),
        WorkerAccess::default(),
        Duration::from_secs(60),
    );
    let id = fleet.register(registration("a", 1)).expect("registers");
    std::thread::sleep(Duration::from_millis(5));
    fleet.reap_expired();
    assert!(fleet.is_empty());
    assert!(!fleet.heartbeat(&id));
}

#[tokio::test]
async fn the_offer_counts_free_and_warm_slots_machines_and_the_gpu_type() {
    let fleet = new_fleet();
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
    let fleet = new_fleet();
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

/// A tenant `name` of `weight`, holding at most `max_slots` (0: no cap).
fn tenant(name: &str, weight: f64, max_slots: u32) -> Arc<Tenant> {
    Arc::new(Tenant {
        name: Arc::from(name),
        weight,
        max_slots,
        max_queued_jobs: 0,
    })
}

/// A chunk of 100 frames, index `index`, of job `job` of `tenant` at `priority`.
fn chunk_of(job: u64, tenant: &Arc<Tenant>, priority: Priority, index: u32) -> Ticket {
    Ticket {
        job,
        job_id: Arc::from(format!("job-{job}").as_str()),
        tenant: tenant.clone(),
        priority,
        frames: 100,
        index,
    }
}

/// `ticket` queued on `fleet` in a task of its own.
fn queue(fleet: &Arc<Fleet>, ticket: Ticket) -> tokio::task::JoinHandle<SlotGrant> {
    let fleet = fleet.clone();
    tokio::spawn(async move {
        fleet
            .acquire(ticket, HashSet::new(), None, Duration::from_secs(30))
            .await
            .expect("slot")
    })
}

/// Waits until `chunks` are queued.
async fn until_queued(fleet: &Fleet, chunks: usize) {
    while fleet.queue_depth() < chunks {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_short_job_takes_the_next_slot_behind_a_long_one() {
    let fleet = new_fleet();
    fleet.register(registration("a", 1)).expect("registers");
    let normal = Tenant::default_tenant();
    let held = queue(&fleet, chunk_of(0, &normal, Priority::Normal, 0))
        .await
        .expect("joins");
    let long: Vec<_> = (1..=5)
        .map(|i| queue(&fleet, chunk_of(0, &normal, Priority::Normal, i)))
        .collect();
    until_queued(&fleet, 5).await;
    let short = queue(&fleet, chunk_of(1, &normal, Priority::Normal, 0));
    until_queued(&fleet, 6).await;
    drop(held);
    let grant = tokio::time::timeout(Duration::from_secs(5), short)
        .await
        .expect("the short job's chunk takes the freed slot")
        .expect("joins");
    assert!(long.iter().all(|chunk| !chunk.is_finished()));
    drop(grant);
    // Then the long job goes on, and the two would take turns were both still waiting.
    let next = tokio::time::timeout(Duration::from_secs(5), futures_first(long)).await;
    drop(next.expect("the long job's next chunk takes the slot"));
}

/// The first of `chunks` to get its slot.
async fn futures_first(chunks: Vec<tokio::task::JoinHandle<SlotGrant>>) -> SlotGrant {
    loop {
        if let Some(done) = chunks.iter().position(|c| c.is_finished()) {
            let mut chunks = chunks;
            return chunks.swap_remove(done).await.expect("joins");
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn an_interactive_chunk_takes_the_next_slot_ahead_of_queued_batch_work() {
    let fleet = new_fleet();
    fleet.register(registration("a", 1)).expect("registers");
    let someone = Tenant::default_tenant();
    let held = queue(&fleet, chunk_of(0, &someone, Priority::Batch, 0))
        .await
        .expect("joins");
    let batch: Vec<_> = (1..=3)
        .map(|i| queue(&fleet, chunk_of(0, &someone, Priority::Batch, i)))
        .collect();
    until_queued(&fleet, 3).await;
    let interactive = queue(&fleet, chunk_of(1, &someone, Priority::Interactive, 0));
    until_queued(&fleet, 4).await;
    assert_eq!(fleet.waiting_at(Priority::Batch), 3);
    assert_eq!(fleet.waiting_at(Priority::Interactive), 1);
    assert_eq!(
        fleet.chunks_ahead(0),
        Some(1),
        "the interactive chunk goes first"
    );
    assert_eq!(fleet.chunks_ahead(1), Some(0));
    assert_eq!(fleet.chunks_ahead(7), None, "no chunk of job 7 waits");
    // A new interactive job shares the one slot with the interactive job waiting and the
    // batch job holding it: a share of one, as small as a share gets.
    assert_eq!(fleet.fair_slots(Priority::Interactive), 1);
    drop(held);
    tokio::time::timeout(Duration::from_secs(5), interactive)
        .await
        .expect("the interactive chunk takes the freed slot")
        .expect("joins");
    assert!(batch.iter().all(|chunk| !chunk.is_finished()));
}

#[tokio::test]
async fn batch_work_still_gets_a_slot_once_its_level_has_starved() {
    let fleet = Fleet::new(
        Duration::from_secs(10),
        WorkerAccess::default(),
        Duration::from_millis(200),
    );
    fleet.register(registration("a", 1)).expect("registers");
    let someone = Tenant::default_tenant();
    let held = queue(&fleet, chunk_of(1, &someone, Priority::Interactive, 0))
        .await
        .expect("joins");
    let batch = queue(&fleet, chunk_of(0, &someone, Priority::Batch, 0));
    let urgent: Vec<_> = (1..=4)
        .map(|i| queue(&fleet, chunk_of(1, &someone, Priority::Interactive, i)))
        .collect();
    until_queued(&fleet, 5).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    drop(held);
    tokio::time::timeout(Duration::from_secs(5), batch)
        .await
        .expect("the starved batch chunk takes the slot")
        .expect("joins");
    assert!(urgent.iter().all(|chunk| !chunk.is_finished()));
}

#[tokio::test]
async fn slots_split_by_tenant_weight_and_a_capped_tenant_holds_no_one_up() {
    let fleet = new_fleet();
    let (light, heavy) = (tenant("light", 1.0, 0), tenant("heavy", 3.0, 0));
    let mut chunks = Vec::new();
    for i in 0..8 {
        chunks.push(queue(&fleet, chunk_of(1, &light, Priority::Normal, i)));
        chunks.push(queue(&fleet, chunk_of(2, &heavy, Priority::Normal, i)));
    }
    until_queued(&fleet, 16).await;
    fleet.register(registration("a", 8)).expect("registers");
    assert_eq!(
        fleet.fair_slots(Priority::Normal),
        2,
        "8 slots shared by two jobs and a third arriving"
    );
    {
        let state = fleet.lock();
        assert_eq!(
            (state.queue.held_by("light"), state.queue.held_by("heavy")),
            (2, 6),
            "8 slots split 1:3"
        );
    }
    fleet.close();

    let fleet = new_fleet();
    let (capped, other) = (tenant("capped", 5.0, 1), tenant("other", 1.0, 0));
    let mut chunks = Vec::new();
    for i in 0..4 {
        chunks.push(queue(&fleet, chunk_of(1, &capped, Priority::Normal, i)));
        chunks.push(queue(&fleet, chunk_of(2, &other, Priority::Normal, i)));
    }
    until_queued(&fleet, 8).await;
    fleet.register(registration("a", 3)).expect("registers");
    {
        let state = fleet.lock();
        assert_eq!(
            (state.queue.held_by("capped"), state.queue.held_by("other")),
            (1, 2),
            "the capped tenant stops at 1 and the rest go on"
        );
    }
    let listed = &fleet.workers()[0];
    let mut whose: Vec<(String, String)> = listed
        .running
        .iter()
        .map(|c| (c.tenant.clone(), c.priority.clone()))
        .collect();
    whose.sort();
    assert_eq!(listed.busy_slots, 3);
    assert_eq!(
        whose,
        [
            ("capped", "normal"),
            ("other", "normal"),
            ("other", "normal")
        ]
        .map(|(t, p)| (t.to_string(), p.to_string()))
    );
}
