//! Network partitions on one machine: a worker in a network namespace of its own reaches
//! the orchestrator over one veth link and the S3 server over another, and a test cuts and
//! restores either with `ip link set`. The orchestrator and Garage stay on loopback; a
//! TCP relay on the host end of each link carries the worker's connections to them, and
//! the orchestrator dials the worker straight over the control link. A cut link drops
//! packets silently, as a real partition does: nothing is reset, calls just go unanswered.
//! Needs root (`ip netns`); the CI runs the tests as root.

use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::child::Process;
use crate::garage::{garage, storage_env, Garage};
use crate::ports::free_port;
use crate::process::{framefleet_binary, spawn_quiet};

/// One of the two links of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// To the orchestrator (and the orchestrator's calls to the worker).
    Control,
    /// To the S3 server.
    Storage,
}

/// A network namespace with its two links and their relays; deleted on drop.
pub struct Namespace {
    name: String,
    index: u8,
    relays: Vec<JoinHandle<()>>,
    /// The orchestrator as the namespace reaches it (`http://10.201.N.1:PORT`).
    pub orchestrator_url: String,
    /// The S3 server as the namespace reaches it.
    pub s3_endpoint: String,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("the ip command (iproute2) runs");
    assert!(
        status.success(),
        "ip {} failed: partition tests need root and iproute2",
        args.join(" ")
    );
}

impl Namespace {
    /// Creates a namespace linked to this one, relaying its connections to the
    /// orchestrator at `orchestrator_port` on loopback and to the tests' Garage.
    pub async fn create(orchestrator_port: u16) -> Namespace {
        static NEXT: AtomicU8 = AtomicU8::new(0);
        let index = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ff{}-{index}", std::process::id());
        ip(&["netns", "add", &name]);
        let namespace = Namespace {
            name,
            index,
            relays: Vec::new(),
            orchestrator_url: String::new(),
            s3_endpoint: String::new(),
        };
        namespace.exec(&["ip", "link", "set", "lo", "up"]);
        for link in [Link::Control, Link::Storage] {
            namespace.add_link(link);
        }
        namespace.relay_to(orchestrator_port, garage()).await
    }

    async fn relay_to(mut self, orchestrator_port: u16, garage: &Garage) -> Namespace {
        let s3_port: u16 = garage
            .endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("Garage's S3 port");
        let (control, task) = relay(&self.host_address(Link::Control), orchestrator_port).await;
        self.relays.push(task);
        self.orchestrator_url = format!("http://{}:{control}", self.host_address(Link::Control));
        let (storage, task) = relay(&self.host_address(Link::Storage), s3_port).await;
        self.relays.push(task);
        self.s3_endpoint = format!("http://{}:{storage}", self.host_address(Link::Storage));
        self
    }

    fn exec(&self, command: &[&str]) {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(command);
        ip(&args);
    }

    fn subnet(link: Link) -> u8 {
        match link {
            Link::Control => 201,
            Link::Storage => 202,
        }
    }

    fn interface(&self, link: Link, end: char) -> String {
        let kind = match link {
            Link::Control => 'c',
            Link::Storage => 's',
        };
        format!(
            "ff{kind}{:x}-{}{end}",
            std::process::id() & 0xffff,
            self.index
        )
    }

    /// This machine's address on `link`.
    pub fn host_address(&self, link: Link) -> String {
        format!("10.{}.{}.1", Self::subnet(link), self.index)
    }

    /// The namespace's address on `link`.
    pub fn inner_address(&self, link: Link) -> String {
        format!("10.{}.{}.2", Self::subnet(link), self.index)
    }

    fn add_link(&self, link: Link) {
        let (host, inner) = (self.interface(link, 'h'), self.interface(link, 'n'));
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner]);
        ip(&["link", "set", &inner, "netns", &self.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", self.host_address(link)),
            "dev",
            &host,
        ]);
        ip(&["link", "set", &host, "up"]);
        let address = format!("{}/30", self.inner_address(link));
        self.exec(&["ip", "addr", "add", &address, "dev", &inner]);
        self.exec(&["ip", "link", "set", &inner, "up"]);
    }

    /// Cuts `link`: packets over it are dropped from now on.
    pub fn cut(&self, link: Link) {
        ip(&["link", "set", &self.interface(link, 'h'), "down"]);
    }

    /// Restores `link`.
    pub fn restore(&self, link: Link) {
        ip(&["link", "set", &self.interface(link, 'h'), "up"]);
    }

    /// Starts a worker named `name` inside the namespace, registered with the orchestrator
    /// over the control link and reading storage over the storage link, with extra
    /// `FRAMEFLEET_*` `settings`; its log goes to `log` when given.
    pub fn start_worker(
        &self,
        name: &str,
        settings: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Process {
        let listen = format!("{}:{}", self.inner_address(Link::Control), free_port());
        let mut all: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.push((
            "FRAMEFLEET_STORAGE__S3_ENDPOINT".into(),
            self.s3_endpoint.clone(),
        ));
        let mut inside = Command::new("ip");
        inside
            .args(["netns", "exec", &self.name])
            .arg(framefleet_binary())
            .args(["worker", "--orchestrator", &self.orchestrator_url])
            .args(["--listen", &listen, "--name", name])
            .envs(storage_env())
            .env("RUST_LOG", "warn");
        spawn_quiet(&mut inside, &all, log)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for relay in &self.relays {
            relay.abort();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Relays every connection to `address`:0 to `target_port` on loopback; returns the port
/// it listens on.
async fn relay(address: &str, target_port: u16) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind((address, 0))
        .await
        .expect("the relay binds the host end of the link");
    let port = listener.local_addr().expect("relay address").port();
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target_port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (port, task)
}
