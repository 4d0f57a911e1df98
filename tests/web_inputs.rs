//! `https://` and `http://` inputs against a real web server: nginx from Debian, started
//! here on 127.0.0.1 with ranged responses. A job reads its input from the server in
//! ranges (about one copy, frame-exact output); a URL at a private address is refused
//! unless `storage.allowed_hosts` lists its host; an object replaced between two reads
//! (or between a job's probe and its chunk) fails the read instead of mixing two files; a
//! redirect to the cloud metadata address is
//! not followed.

use framefleet_testkit as support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use framefleet_common::config::StorageConfig;
use framefleet_common::storage::{ObjectUri, Storage};
use support::*;

/// nginx serving a folder on a loopback port, stopped when dropped.
struct Nginx {
    child: Child,
    port: u16,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start() -> Nginx {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("www");
        std::fs::create_dir_all(&root).expect("web root");
        let port = free_port();
        let config = dir.path().join("nginx.conf");
        std::fs::write(
            &config,
            format!(
                "daemon off;\nmaster_process off;\npid {dir}/nginx.pid;\n\
                 error_log {dir}/error.log warn;\nevents {{}}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n\
                 proxy_temp_path {dir}/proxy;\n  fastcgi_temp_path {dir}/fastcgi;\n\
                 uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
                 server {{\n    listen 127.0.0.1:{port};\n    root {root};\n\
                 location = /moved.mp4 {{ return 302 http://169.254.169.254/latest/meta-data; }}\n\
                 }}\n}}\n",
                dir = dir.path().display(),
                root = root.display(),
            ),
        )
        .expect("nginx config");
        let child = Command::new(nginx_binary())
            .arg("-c")
            .arg(&config)
            .arg("-p")
            .arg(dir.path())
            .spawn()
            .expect("nginx starts (apt install nginx-light)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            port,
            root,
            _dir: dir,
        }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

/// A config file allowing `hosts`.
fn config_allowing(dir: &Path, hosts: &[String]) -> PathBuf {
    let path = dir.join("framefleet.toml");
    let list: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    std::fs::write(
        &path,
        format!("[storage]\nallowed_hosts = [{}]\n", list.join(", ")),
    )
    .expect("config");
    path
}

#[test]
fn a_job_reads_its_input_from_a_web_server_in_ranges() {
    let server = Nginx::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let input = server.root.join("clip.mp4");
    clip_with_audio(&input, "320x240", 25, 6, 25);
    let local_copy = dir.path().join("copy.mp4");
    std::fs::copy(&input, &local_copy).expect("copy");
    let config = config_allowing(dir.path(), &[server.host()]);
    let output = dir.path().join("out.mp4");
    let report = dir.path().join("report.json");
    succeeds(
        framefleet_local()
            .arg(server.url("clip.mp4"))
            .arg(&output)
            .arg("--config")
            .arg(&config)
            .args([
                "--workers",
                "2",
                "--chunks",
                "3",
                "--lossless",
                "--preset",
                "ultrafast",
                "--scale",
                "1",
            ])
            .arg("--report-json")
            .arg(&report),
    );
    assert_exact(&local_copy, &output, (320, 240));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("JSON");
    let size = std::fs::metadata(&input).expect("input").len() as f64;
    let read = report["totals"]["input_bytes_read"]
        .as_f64()
        .expect("bytes read");
    assert!(
        read > size * 0.9 && read < size * 1.45,
        "read {read} bytes of a {size}-byte input"
    );
    assert!(chunk_sum(&report, "requests") >= 3.0);
}

#[test]
fn a_private_address_is_refused_unless_its_host_is_allowed() {
    let server = Nginx::start();
    let dir = tempfile::tempdir().expect("temp dir");
    clip_with_audio(&server.root.join("clip.mp4"), "64x48", 25, 1, 25);
    let config = config_allowing(dir.path(), &[]);
    let result = framefleet_local()
        .arg(server.url("clip.mp4"))
        .arg(dir.path().join("out.mp4"))
        .arg("--config")
        .arg(&config)
        .args(["--workers", "1"])
        .output()
        .expect("framefleet runs");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(
        stderr.contains("127.0.0.1") && stderr.contains("storage.allowed_hosts"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_object_fails_the_read_and_redirects_to_metadata_are_not_followed() {
    let server = Nginx::start();
    let path = server.root.join("clip.bin");
    std::fs::write(&path, vec![7u8; 100_000]).expect("object");
    let storage = Storage::new(&StorageConfig {
        allowed_hosts: vec![server.host()],
        max_attempts: 2,
        ..StorageConfig::default()
    });
    let uri: ObjectUri = server.url("clip.bin").parse().expect("a web URI");
    assert_eq!(storage.size(&uri).await.expect("size"), 100_000);
    let first = storage
        .read_range(&uri, 0, 1000)
        .await
        .expect("first range");
    assert_eq!(first.len(), 1000);
    // Replaced by another file: another size, another ETag.
    std::fs::write(&path, vec![8u8; 120_000]).expect("replaced");
    let error = storage
        .read_range(&uri, 50_000, 1000)
        .await
        .expect_err("the object changed");
    assert!(
        error.to_string().contains("changed while the job read it"),
        "{error}"
    );
    // A chunk told the version its job's probe saw refuses the new one; a new job (a fresh
    // handle) reads the new one.
    let probed = storage.web_version(&uri).expect("a version");
    assert_eq!(probed.0, 100_000);
    let chunk = storage.counted();
    chunk.pin_web_version(&uri, (probed.0, &probed.1));
    let error = chunk
        .read_range(&uri, 0, 1000)
        .await
        .expect_err("another version than the probe's");
    assert!(
        error.to_string().contains("changed while the job read it"),
        "{error}"
    );
    let next_job = storage.counted();
    assert_eq!(next_job.size(&uri).await.expect("size"), 120_000);
    let moved: ObjectUri = server.url("moved.mp4").parse().expect("a web URI");
    let error = storage
        .size(&moved)
        .await
        .expect_err("a redirect to metadata");
    assert!(error.to_string().contains("redirect refused"), "{error}");
    let missing: ObjectUri = server.url("missing.mp4").parse().expect("a web URI");
    let error = storage.size(&missing).await.expect_err("missing");
    assert!(error.to_string().contains("does not exist"), "{error}");
}
