//! Each connection decision, for the audit trail and the metrics. Sent on a bounded channel and
//! dropped (counted) when the consumer falls behind: a sandbox opening connections in a loop
//! must not make the proxy wait or grow without bound.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allowed,
    Refused,
}

/// One connection (or DNS question) decided: what the sandbox asked for and what it was told.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EgressEvent {
    pub sandbox: String,
    /// The name it gave (TLS SNI, HTTP Host, DNS question); none for an address alone.
    pub name: Option<String>,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub decision: Decision,
    /// The policy entry that decided, or why it failed.
    pub rule: String,
    /// Bytes the sandbox sent and received (allowed connections, counted when they end).
    pub bytes_out: u64,
    pub bytes_in: u64,
}

const DEPTH: usize = 4096;

#[derive(Clone)]
pub struct Events {
    tx: mpsc::Sender<EgressEvent>,
    pub counters: Arc<Counters>,
}

#[derive(Default)]
pub struct Counters {
    pub allowed: AtomicU64,
    pub refused: AtomicU64,
    /// Events the consumer was too slow for.
    pub dropped: AtomicU64,
}

impl Events {
    pub fn new() -> (Self, mpsc::Receiver<EgressEvent>) {
        let (tx, rx) = mpsc::channel(DEPTH);
        (
            Self {
                tx,
                counters: Arc::default(),
            },
            rx,
        )
    }

    pub fn send(&self, event: EgressEvent) {
        let c = match event.decision {
            Decision::Allowed => &self.counters.allowed,
            Decision::Refused => &self.counters.refused,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(event).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
