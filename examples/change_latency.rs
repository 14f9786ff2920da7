//! Change latency on a store-managed zone: how long after `Store::apply` returns a change
//! is served over UDP, for a large zone.
//!
//! The zone file (e.g. from `benches/gen_zone.sh`) is parsed and imported into a fresh
//! store in a temporary directory as a store-managed zone; then the real loader, snapshot
//! updater, handler and UDP listener run in process, on the server's runtimes (heavy-job
//! threads under SCHED_IDLE unless `--no-idle-heavy`). Each change is one `apply` (cycling
//! through: add a new name, change the address of an existing `hN`, delete a name added
//! before); from the moment `apply` returns, a client polls the name over UDP until the
//! answer shows the change. Also timed: the full rebuild from the store (what every change
//! cost before zone patches) and `Zone::patch` alone. Prints one `key=value` line.
//!
//!   cargo run --release --example change_latency -- --zone /tmp/big.zone --origin example.com.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use clap::Parser;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use muninn::config::{Overrides, RuntimeConfig};
use muninn::handler::{DEFAULT_MAX_UDP_PAYLOAD, Handler};
use muninn::reload::ZoneLoader;
use muninn::runtime::Runtimes;
use muninn::server::{Limits, spawn_listeners};
use muninn::store::{Change, Import, Managed, NewRecord, RecordFilter, Source, Store};
use muninn::zone::{Zone, ZoneSet};

#[derive(Parser, Debug)]
#[command(about = "Latency from Store::apply to the change being served, for a large zone")]
struct Args {
    /// Zone file (names hN with A records, as benches/gen_zone.sh writes).
    #[arg(long)]
    zone: PathBuf,
    #[arg(long, default_value = "example.com.")]
    origin: String,
    /// Changes to apply and time.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// Full rebuilds from the store to time, for comparison.
    #[arg(long, default_value_t = 3)]
    rebuilds: usize,
    /// Run the heavy-job threads (snapshot updater, store writer) at normal priority
    /// instead of the default SCHED_IDLE.
    #[arg(long)]
    no_idle_heavy: bool,
}

/// A directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p-th percentile (0..=100) of sorted samples, in ms.
fn pct(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) * p + 50) / 100;
    ms(sorted[i.min(sorted.len() - 1)])
}

/// One UDP query; the rcode and the A addresses of the answer.
fn ask(sock: &UdpSocket, id: u16, qname: &Name) -> anyhow::Result<(ResponseCode, Vec<[u8; 4]>)> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(qname.clone(), RecordType::A));
    sock.send(&msg.to_vec()?)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf)?;
        let resp = Message::from_vec(buf.get(..n).context("short read")?)?;
        if resp.metadata.id != id {
            continue;
        }
        let ips = resp
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.octets()),
                _ => None,
            })
            .collect();
        return Ok((resp.metadata.response_code, ips));
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let origin = Name::from_ascii(&args.origin)?;
    let scratch =
        Scratch(std::env::temp_dir().join(format!("muninn-change-latency-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0)?;
    let data = scratch.0.join("data");

    // Parse and import (setup, not measured beyond a line of context).
    let t = Instant::now();
    let include_root = args.zone.parent().unwrap_or(Path::new("."));
    let zone = muninn::zone::file::load_zone(&args.zone, &origin, include_root)?;
    let names = zone.name_count();
    let parse = t.elapsed();
    let t = Instant::now();
    {
        let store = Store::open_dir(&data, Default::default())?;
        store.import_blocking(Import {
            zone: Arc::new(zone),
            managed: Managed::Store,
            file: None,
            fingerprint: None,
            source: Source::Import,
        })?;
    }
    let import = t.elapsed();

    let config = scratch.0.join("muninn.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[zones]\ndirectory = \"\"\n\
             [[zones.zone]]\nname = \"{origin}\"\nmanaged = \"store\"\n",
            data.display()
        ),
    )?;
    let runtime = RuntimeConfig {
        heavy_idle_scheduling: !args.no_idle_heavy,
        ..RuntimeConfig::default()
    };
    let rt = Runtimes::build(&runtime)?;
    let zones = Arc::new(ArcSwap::from_pointee(ZoneSet::new()));
    let mut loader = ZoneLoader::new(Some(config), Overrides::default(), zones.clone())
        .with_updater_runtime(rt.admin.handle().clone());
    let report = rt.heavy.block_on(loader.reload())?;
    if report.failed() > 0 {
        bail!("zone did not load: {report:?}");
    }
    let store = loader.store().context("no store")?.clone();
    let token = tokio_util::sync::CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    let listeners = spawn_listeners(
        rt.latency.handle(),
        Arc::new(Handler::new(zones.clone(), DEFAULT_MAX_UDP_PAYLOAD)),
        &[listen],
        &[],
        Limits::default(),
        runtime.effective_workers(),
        token.child_token(),
        &tracker,
    )?;
    let server = *listeners.udp_addrs().first().context("no UDP listener")?;
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;

    // The old path: a full rebuild from the store.
    let mut rebuild_times = Vec::new();
    for _ in 0..args.rebuilds {
        let t = Instant::now();
        let (z, _) = store.build_zone(&origin)?;
        rebuild_times.push(t.elapsed());
        drop(z);
    }
    rebuild_times.sort();

    let key = LowerName::new(&origin);
    let served =
        |zones: &ArcSwap<ZoneSet>| -> Option<Arc<Zone>> { zones.load().get(&key).cloned() };
    let mut id: u16 = 1;
    let (mut commit, mut latency, mut patch) = (Vec::new(), Vec::new(), Vec::new());
    let mut polls = 0usize;
    let mut max_patch_bytes = 0usize;
    for i in 0..args.changes {
        let ip = [198, 51, 100, (i % 250) as u8];
        let rec = |owner: &Name| NewRecord {
            name: owner.clone(),
            ttl: 300,
            data: RData::A(A::new(ip[0], ip[1], ip[2], ip[3])),
            tags: Vec::new(),
        };
        let delete = |owner: &Name, rtype| RecordFilter {
            name: owner.clone(),
            rtype,
            data: None,
        };
        let (qname, change, expect): (Name, Change, Option<[u8; 4]>) = match i % 3 {
            0 => {
                let n = Name::from_ascii(format!("chg{i}"))?.append_domain(&origin)?;
                let add = vec![rec(&n)];
                (
                    n,
                    Change {
                        add,
                        delete: vec![],
                    },
                    Some(ip),
                )
            }
            1 => {
                let n = Name::from_ascii(format!("h{i}"))?.append_domain(&origin)?;
                let del = vec![delete(&n, Some(RecordType::A))];
                (
                    n.clone(),
                    Change {
                        add: vec![rec(&n)],
                        delete: del,
                    },
                    Some(ip),
                )
            }
            _ => {
                let n = Name::from_ascii(format!("chg{}", i - 2))?.append_domain(&origin)?;
                let del = vec![delete(&n, None)];
                (
                    n,
                    Change {
                        add: vec![],
                        delete: del,
                    },
                    None,
                )
            }
        };
        let before = served(&zones).context("zone not served")?;
        let t0 = Instant::now();
        let event = store.apply_blocking(&origin, change)?;
        let t1 = Instant::now();
        loop {
            id = id.wrapping_add(1);
            polls += 1;
            let (rcode, ips) = ask(&sock, id, &qname)?;
            let done = match expect {
                Some(ip) => rcode == ResponseCode::NoError && ips == [ip],
                None => rcode == ResponseCode::NXDomain,
            };
            if done {
                break;
            }
            if t1.elapsed() > Duration::from_secs(30) {
                bail!("change {i} to {qname} not served after 30 s");
            }
        }
        latency.push(t1.elapsed());
        commit.push(t1 - t0);
        // Zone::patch alone, on the snapshot the change was made against.
        let t = Instant::now();
        let p = before.patch(&event);
        patch.push(t.elapsed());
        if let Ok(p) = p {
            max_patch_bytes = max_patch_bytes.max(p.patch_size());
        }
    }
    let final_zone = served(&zones).context("zone not served")?;
    latency.sort();
    commit.sort();
    patch.sort();
    println!(
        "names={names} changes={} served_p50_ms={:.3} served_p99_ms={:.3} served_max_ms={:.3} \
         commit_p50_ms={:.3} commit_p99_ms={:.3} patch_p50_ms={:.3} patch_p99_ms={:.3} \
         polls={polls} rebuild_min_ms={:.1} rebuild_max_ms={:.1} max_patch_bytes={max_patch_bytes} \
         final_patch_bytes={} idle_heavy={} parse_ms={:.0} import_ms={:.0}",
        latency.len(),
        pct(&latency, 50),
        pct(&latency, 99),
        pct(&latency, 100),
        pct(&commit, 50),
        pct(&commit, 99),
        pct(&patch, 50),
        pct(&patch, 99),
        rebuild_times.first().map_or(f64::NAN, |d| ms(*d)),
        rebuild_times.last().map_or(f64::NAN, |d| ms(*d)),
        final_zone.patch_size(),
        !args.no_idle_heavy,
        ms(parse),
        ms(import),
    );
    token.cancel();
    drop((final_zone, store, loader, listeners));
    rt.shutdown();
    Ok(())
}
