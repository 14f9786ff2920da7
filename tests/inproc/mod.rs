//! Shared in-process server for the listener and metrics tests: a zone parsed from text,
//! the real handler and `spawn_listeners` on the test's tokio runtime, all tasks stopped by
//! cancelling one token (also on drop, so a panicking test leaves nothing running).

#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::rr::{Name, Record};
use hickory_proto::serialize::txt::Parser;
use muninn::handler::{DEFAULT_MAX_UDP_PAYLOAD, Handler};
use muninn::server::{Limits, Listeners, spawn_listeners};
use muninn::zone::{Zone, ZoneSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Master-file text of `example.com.`: SOA, NS, `ns1`, and `h0` up to `h{hosts - 1}` with
/// one A record each, at [`host_addr`].
pub fn hosts_zone_text(hosts: u32) -> String {
    let mut z = String::from(
        "$ORIGIN example.com.\n$TTL 3600\n\
         @ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n\
         @ IN NS ns1\nns1 IN A 192.0.2.1\n",
    );
    for i in 0..hosts {
        z.push_str(&format!("h{i} IN A 10.0.{}.{}\n", i / 256, i % 256));
    }
    z
}

/// Appends `count` TXT records of 100 characters each at `owner`.
pub fn push_txt(z: &mut String, owner: &str, count: usize) {
    for i in 0..count {
        z.push_str(&format!("{owner} IN TXT \"{i:02}{}\"\n", "x".repeat(98)));
    }
}

/// The address of host `h{i}` in [`hosts_zone_text`].
pub fn host_addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, (i / 256) as u8, (i % 256) as u8)
}

/// The zone `example.com.` from master-file text, as the only zone of a set.
pub fn zone_set(text: &str) -> ZoneSet {
    let origin = Name::from_str("example.com.").unwrap();
    let (origin, rrsets) = Parser::new(text, None, Some(origin)).parse().unwrap();
    let records: Vec<Record> = rrsets
        .values()
        .flat_map(|set| set.records_without_rrsigs().cloned())
        .collect();
    let mut zones = ZoneSet::new();
    zones.insert(Arc::new(Zone::build(origin, records).unwrap()));
    zones
}

/// The cancellation token and task tracker of one in-process server. Dropping it cancels.
pub struct Tasks {
    pub token: CancellationToken,
    pub tracker: TaskTracker,
}

impl Default for Tasks {
    fn default() -> Tasks {
        Tasks {
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }
}

impl Tasks {
    /// `spawn_listeners` on the current tokio runtime, under this token and tracker.
    pub fn spawn_listeners(
        &self,
        handler: Arc<Handler>,
        udp: &[SocketAddr],
        tcp: &[SocketAddr],
        limits: Limits,
        workers: usize,
    ) -> Listeners {
        spawn_listeners(
            &tokio::runtime::Handle::current(),
            handler,
            udp,
            tcp,
            limits,
            workers,
            self.token.child_token(),
            &self.tracker,
        )
        .unwrap()
    }

    /// Cancels, then waits up to 5 s for every tracked task to end (`what` names them in
    /// the failure message).
    pub async fn stop(&self, what: &str) {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(5), self.tracker.wait())
            .await
            .expect(what);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// DNS listeners only, answering from `zones` with the default UDP payload limit.
pub struct InProc {
    pub listeners: Listeners,
    pub tasks: Tasks,
}

impl InProc {
    pub fn start(
        zones: ZoneSet,
        udp: &[SocketAddr],
        tcp: &[SocketAddr],
        limits: Limits,
        workers: usize,
    ) -> InProc {
        let handler = Arc::new(Handler::new(
            Arc::new(ArcSwap::from_pointee(zones)),
            DEFAULT_MAX_UDP_PAYLOAD,
        ));
        let tasks = Tasks::default();
        let listeners = tasks.spawn_listeners(handler, udp, tcp, limits, workers);
        InProc { listeners, tasks }
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.listeners.udp_addrs()[0]
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.listeners.tcp_addrs()[0]
    }

    pub async fn stop(self) {
        self.tasks
            .stop("all listener tasks stop after cancellation")
            .await;
    }
}
