//! Word when a job ends, against a real HTTP receiver on 127.0.0.1: one signed event per
//! ended job, tried again while the receiver answers 500, the same id on every try, kept
//! in the job store across a restart until delivered; a URL on a loopback address is
//! refused at submission unless `notify.allowed_hosts` lists it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::hmac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use framefleet_common::config::Config;
use framefleet_common::proto::JobSpec;
use framefleet_orchestrator::jobs::validate;
use framefleet_orchestrator::Orchestrator;

/// A real MP4 from the probe corpus.
const CLIP: &str = "../fuzz/corpus/probe/index-first.mp4";

const SECRET: &str = "a-webhook-secret";

/// What the receiver got: each request's signature header and body.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// The statuses a receiver answers with, in turn (the last one over and over).
type Answers = Arc<Mutex<Vec<u16>>>;

/// An HTTP/1.1 receiver answering each request with the next of its answers; returns its
/// URL, what it received, and its answers to change.
async fn receiver(answers: Vec<u16>) -> (String, Received, Answers) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().expect("address"));
    let received = Received::default();
    let answers = Arc::new(Mutex::new(answers));
    let (log, script) = (received.clone(), answers.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let Some((signature, body)) = read_request(&mut socket).await else {
                continue;
            };
            log.lock().expect("log").push((signature, body));
            let status = {
                let mut script = script.lock().expect("answers");
                if script.len() > 1 {
                    script.remove(0)
                } else {
                    script[0]
                }
            };
            let reply =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    });
    (url, received, answers)
}

/// One request's `Framefleet-Signature` header and body.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = socket.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&data).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let header = |name: &str| {
            head.lines()
                .find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_string())
                })
                .unwrap_or_default()
        };
        let length: usize = header("content-length").parse().unwrap_or(0);
        if body.len() >= length {
            return Some((header("framefleet-signature"), body[..length].to_string()));
        }
    }
}

fn config(root: &Path, store: &Path) -> Config {
    let mut config = Config::default();
    config.storage.local_roots = vec![root.display().to_string()];
    config.orchestrator.store_path = store.display().to_string();
    config.dispatch.worker_wait_seconds = 600.0;
    config.notify.secret = SECRET.into();
    config.notify.allowed_hosts = vec!["127.0.0.1".into()];
    config.notify.retry_seconds = 120.0;
    config
}

fn spec(root: &Path, url: &str) -> JobSpec {
    JobSpec {
        input_uri: format!("file://{}", root.join("in.mp4").display()),
        output_uri: format!("file://{}", root.join("out.mp4").display()),
        notify_url: url.into(),
        ..JobSpec::default()
    }
}

/// Checks `signature` (`t=..,v1=..`) of `body` with the secret; returns its time.
fn verified(signature: &str, body: &str) -> u64 {
    let (time, mac) = signature
        .split_once(",v1=")
        .and_then(|(t, mac)| Some((t.strip_prefix("t=")?.parse::<u64>().ok()?, mac)))
        .expect("t=<time>,v1=<hex>");
    let bytes: Vec<u8> = (0..mac.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&mac[i..i + 2], 16).expect("hex"))
        .collect();
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    hmac::verify(&key, format!("{time}.{body}").as_bytes(), &bytes).expect("a valid signature");
    time
}

/// Waits until `received` holds `count` requests (at most 30 s).
async fn until_received(received: &Received, count: usize) {
    for _ in 0..300 {
        if received.lock().expect("log").len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the receiver got fewer than {count} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_job_sends_one_signed_event_through_retries_and_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::copy(CLIP, root.join("in.mp4")).expect("clip");
    let store = dir.path().join("jobs.sqlite");

    // Refused at submission: a loopback receiver that notify.allowed_hosts does not list.
    let mut strict = config(&root, &store);
    strict.notify.allowed_hosts.clear();
    let refused = validate::check(spec(&root, "http://127.0.0.1:9/hooks"), &strict)
        .expect_err("a loopback notify_url");
    assert!(
        refused.to_string().contains("notify.allowed_hosts"),
        "{refused}"
    );

    // The receiver fails twice, then takes it: three tries of one event.
    let (url, received, _) = receiver(vec![500, 500, 200]).await;
    let shutdown = CancellationToken::new();
    let orchestrator = Orchestrator::open(config(&root, &store), shutdown.clone())
        .await
        .expect("opens");
    let tenant = orchestrator.tenants.default_tenant();
    let (job, _) = orchestrator
        .submit("", spec(&root, &url), tenant.clone())
        .await
        .expect("accepted");
    orchestrator.cancel(&job).await.expect("cancelled");
    until_received(&received, 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tries = received.lock().expect("log").clone();
    assert_eq!(tries.len(), 3, "no try after the 200");
    for (signature, body) in &tries {
        verified(signature, body);
        let event: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(event["id"], format!("evt-{}", job.id));
        assert_eq!(event["type"], "job.cancelled");
        assert_eq!(event["job"]["job_id"], job.id.as_str());
        assert_eq!(event["job"]["state"], "CANCELLED");
        assert!(event["created"].as_u64().is_some() && event["job"]["cost"].is_object());
    }

    // A receiver that is down when the orchestrator stops gets the event after a restart.
    let (url, received, answers) = receiver(vec![500]).await;
    let (second, _) = orchestrator
        .submit("", spec(&root, &url), tenant)
        .await
        .expect("accepted");
    orchestrator.cancel(&second).await.expect("cancelled");
    until_received(&received, 1).await;
    shutdown.cancel();
    orchestrator.drain().await;

    let tried = received.lock().expect("log").len();
    *answers.lock().expect("answers") = vec![200];
    let shutdown = CancellationToken::new();
    let reopened = Orchestrator::open(config(&root, &store), shutdown.clone())
        .await
        .expect("reopens");
    until_received(&received, tried + 1).await;
    let (signature, body) = received.lock().expect("log")[tried].clone();
    verified(&signature, &body);
    assert!(body.contains(&format!("evt-{}", second.id)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        received.lock().expect("log").len(),
        tried + 1,
        "delivered once"
    );
    shutdown.cancel();
    reopened.drain().await;
}
