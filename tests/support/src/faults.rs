//! Fault proxies between framefleet and storage: one that cuts connections after some
//! bytes, one that fails every n-th request, one that a test takes down for a while.

use crate::garage::garage;

/// A loopback TCP proxy in front of Garage that breaks ranged GETs: up to `cuts` responses
/// with status 206 and a body longer than `after_bytes` are cut after `after_bytes` bytes of
/// body, as a network reset mid-transfer would. Only the first response of each connection
/// is looked at, so how many cuts happen depends on connection reuse.
pub struct CuttingProxy {
    /// S3 endpoint to give clients, e.g. `http://127.0.0.1:40123`.
    pub endpoint: String,
    cuts_left: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CuttingProxy {
    /// Cuts that may still happen.
    pub fn cuts_left(&self) -> usize {
        self.cuts_left.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Starts a [`CuttingProxy`] on the current runtime.
pub async fn cutting_proxy(cuts: usize, after_bytes: usize) -> CuttingProxy {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let (listener, endpoint) = proxy_listener().await;
    let cuts_left = Arc::new(AtomicUsize::new(cuts));
    let budget = cuts_left.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let budget = budget.clone();
            tokio::spawn(relay(client, move |partial, length| {
                let cut = partial
                    && length > after_bytes
                    && budget
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                            left.checked_sub(1)
                        })
                        .is_ok();
                cut.then_some(after_bytes)
            }));
        }
    });
    CuttingProxy {
        endpoint,
        cuts_left,
    }
}

/// A loopback proxy in front of Garage that fails a share of requests: of every
/// `every` connections one has its request answered `503 SlowDown` without reaching
/// Garage, or closed without an answer (the two alternate). The rest are relayed.
pub struct FaultyProxy {
    /// S3 endpoint to give clients.
    pub endpoint: String,
    faults: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultyProxy {
    /// Requests failed so far.
    pub fn faults(&self) -> usize {
        self.faults.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Starts a [`FaultyProxy`] on the current runtime.
pub async fn faulty_proxy(every: usize) -> FaultyProxy {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (listener, endpoint) = proxy_listener().await;
    let faults = Arc::new(AtomicUsize::new(0));
    let counted = faults.clone();
    tokio::spawn(async move {
        let mut connections = 0usize;
        while let Ok((mut client, _)) = listener.accept().await {
            connections += 1;
            if connections % every != 0 {
                tokio::spawn(relay(client, |_, _| None));
                continue;
            }
            let fault = counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Take the request head first, as a failing server would.
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                if fault % 2 == 0 {
                    let body =
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
                                <Message>injected by the test proxy</Message></Error>";
                    let response = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/xml\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.write_all(response.as_bytes()).await;
                    let _ = client.shutdown().await;
                } else {
                    // A reset: the socket closes with unread request bytes pending, or
                    // with nothing sent back at all.
                    drop(client);
                }
            });
        }
    });
    FaultyProxy { endpoint, faults }
}

/// A loopback relay in front of Garage that a test takes down and brings back: while down
/// it closes the connections it carries and drops every new one, as an S3 server that
/// cannot be reached.
pub struct OutageRelay {
    /// S3 endpoint to give clients.
    pub endpoint: String,
    down: tokio::sync::watch::Sender<bool>,
}

impl OutageRelay {
    /// Takes storage down for this relay's clients.
    pub fn take_down(&self) {
        self.down.send_replace(true);
    }

    /// Brings it back.
    pub fn bring_back(&self) {
        self.down.send_replace(false);
    }
}

/// Starts an [`OutageRelay`] on the current runtime, up.
pub async fn outage_relay() -> OutageRelay {
    let (listener, endpoint) = proxy_listener().await;
    let garage_address = garage().endpoint.trim_start_matches("http://").to_string();
    let (down, watching) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if *watching.borrow() {
                continue;
            }
            let (address, mut watching) = (garage_address.clone(), watching.clone());
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(address).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = watching.wait_for(|down| *down) => {}
                }
            });
        }
    });
    OutageRelay { endpoint, down }
}

pub(crate) async fn proxy_listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    (listener, endpoint)
}

/// Relays one client connection to Garage. The response head is read first: `cut` sees
/// whether it is a ranged GET's (206) and its length, and may return how many body bytes
/// to pass before the connection is cut. Relayed responses ask the client not to reuse the
/// connection, so every request arrives on a connection of its own and can be looked at.
pub(crate) async fn relay(
    client: tokio::net::TcpStream,
    cut: impl FnOnce(bool, usize) -> Option<usize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let upstream = garage().endpoint.trim_start_matches("http://").to_string();
    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut head = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let body_start = loop {
        let Ok(n) = server_read.read(&mut buffer).await else {
            return;
        };
        if n == 0 {
            return;
        }
        head.extend_from_slice(&buffer[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head_text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
    let length: usize = head_text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if let Some(after_bytes) = cut(head.starts_with(b"HTTP/1.1 206"), length) {
        let keep = (body_start + after_bytes).min(head.len());
        let _ = client_write.write_all(&head[..keep]).await;
        let mut sent = keep - body_start;
        while sent < after_bytes {
            let Ok(n) = server_read.read(&mut buffer).await else {
                break;
            };
            if n == 0 {
                break;
            }
            let take = n.min(after_bytes - sent);
            let _ = client_write.write_all(&buffer[..take]).await;
            sent += take;
        }
        requests.abort();
        return;
    }
    let mut relayed = head[..body_start - 2].to_vec();
    relayed.extend_from_slice(b"connection: close\r\n\r\n");
    relayed.extend_from_slice(&head[body_start..]);
    if client_write.write_all(&relayed).await.is_err() {
        return;
    }
    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    requests.abort();
}
