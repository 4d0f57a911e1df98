//! Loopback ports for the processes a test starts. A port is picked free here and bound
//! later by another process, so two things can race for it: a port handed out twice by
//! this harness, or one the kernel gives an outgoing connection in between. Ports are
//! therefore taken below the kernel's ephemeral range (which outgoing connections and
//! `bind(0)` draw from) and never handed out twice by one test process.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out.
const FIRST: u32 = 10_000;

/// Ports below the ephemeral range's start, when it cannot be read.
const EPHEMERAL_START: u32 = 32_768;

/// A loopback port that is free now, outside the ephemeral range, and not handed out
/// before by this process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = ephemeral_start().saturating_sub(FIRST).max(1);
    // Test processes running side by side start at different places in the span.
    let offset = (std::process::id() * 7919) % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (offset + step) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and the ephemeral range");
}

/// Where the kernel's ephemeral ports begin (`net.ipv4.ip_local_port_range`).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        assert!(ports.iter().all(|&p| u32::from(p) < ephemeral_start()));
    }
}
