//! Crash safety: `kill -9` of a process writing the store at random points, 20 rounds.
//!
//! Each round starts `muninn db stress` (a stream of change transactions on a store-managed
//! zone, each adding BATCH tagged records and deleting half of the previous change's) or,
//! every fourth round, `muninn db import` of a 20,000-name zone, and kills it with SIGKILL
//! after a random delay. Then `muninn db check` must pass and the record count must be
//! exactly what the committed serial implies: every change is all or nothing.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{KillOnDrop, Rng, TempDir, muninn_cmd, open_store};
use hickory_proto::rr::Name;

const BIN: &str = env!("CARGO_BIN_EXE_muninn");
const BATCH: u64 = 20;
const ROUNDS: usize = 20;
const BIG_NAMES: u64 = 20_000;

const SEED: &str = "$TTL 300\n\
    @ IN SOA ns1 hostmaster 100 3600 600 86400 300\n\
    @ IN NS ns1\n\
    ns1 IN A 192.0.2.53\n";

/// Serial and record count of a zone, read with a fresh open (recovery included).
fn meta(data: &Path, zone: &str) -> Option<(u32, u64)> {
    open_store(data)
        .zone_meta(&Name::from_ascii(zone).unwrap())
        .unwrap()
        .map(|m| (m.serial, m.record_count))
}

#[test]
fn kill_9_during_writes_leaves_a_consistent_store() {
    let dir = TempDir::new("store-crash");
    let data = dir.path().join("data");
    let seed = dir.path().join("c.test.zone");
    fs::write(&seed, SEED).unwrap();
    let (code, out, err) = muninn_cmd(&["db", "import", seed.to_str().unwrap()], &data);
    assert_eq!(code, Some(0), "{out}{err}");
    let (s0, r0) = meta(&data, "c.test.").unwrap();
    assert_eq!((s0, r0), (100, 3));

    let big = dir.path().join("big.test.zone");
    let mut text =
        String::from("$TTL 300\n@ SOA ns1 h 1 3600 600 86400 300\n@ NS ns1\nns1 A 192.0.2.1\n");
    for i in 0..BIG_NAMES - 3 {
        text.push_str(&format!("n{i} A 10.{}.{}.1\n", (i >> 8) as u8, i as u8));
    }
    fs::write(&big, text).unwrap();

    let seed_value = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("rng seed {seed_value}");
    let mut rng = Rng(seed_value);
    let started = Instant::now();
    let mut killed_mid_stream = 0;
    let (mut imports_finished, mut imports_killed) = (0, 0);
    for round in 0..ROUNDS {
        let mut printed = String::new();
        if round % 4 == 3 {
            // A whole-zone import (one big transaction), killed at a random point.
            let mut import = KillOnDrop(
                Command::new(BIN)
                    .args(["db", "import"])
                    .arg(&big)
                    .arg("--data-dir")
                    .arg(&data)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            std::thread::sleep(Duration::from_millis(50 + rng.next() % 1500));
            match import.0.try_wait().unwrap() {
                Some(_) => imports_finished += 1,
                None => imports_killed += 1,
            }
            let _ = import.0.kill();
            let _ = import.0.wait();
        } else {
            let mut stress = KillOnDrop(
                Command::new(BIN)
                    .args(["db", "stress", "c.test.", "--rounds", "1000000", "--batch"])
                    .arg(BATCH.to_string())
                    .arg("--data-dir")
                    .arg(&data)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            std::thread::sleep(Duration::from_millis(100 + rng.next() % 400));
            let _ = stress.0.kill();
            let _ = stress.0.wait();
            if let Some(mut o) = stress.0.stdout.take() {
                o.read_to_string(&mut printed).unwrap();
            }
        }
        let last_printed: Option<u32> = printed
            .lines()
            .filter_map(|l| l.strip_prefix("committed "))
            .filter_map(|l| l.split(' ').next()?.parse().ok())
            .next_back();

        let (code, out, err) = muninn_cmd(&["db", "check"], &data);
        assert_eq!(code, Some(0), "round {round}: db check failed:\n{out}{err}");

        // Exact counts: change k (serial s0+k-1 -> s0+k) adds BATCH records and deletes
        // BATCH/2 of change k-1's, so n committed changes leave this many records.
        let (serial, count) = meta(&data, "c.test.").unwrap();
        let n = u64::from(serial - s0);
        let expected = r0 + BATCH * n - (BATCH / 2) * n.saturating_sub(1);
        assert_eq!(count, expected, "round {round}: serial {serial}");
        if let Some(p) = last_printed {
            // Committed changes are durable; at most one more committed before its line.
            assert!(
                serial == p || serial == p + 1,
                "round {round}: printed {p}, stored {serial}"
            );
            killed_mid_stream += 1;
        }
        // The big zone is either absent or complete, never partial.
        if let Some((_, big_count)) = meta(&data, "big.test.") {
            assert_eq!(big_count, BIG_NAMES, "round {round}: partial import");
        }
    }
    eprintln!(
        "{ROUNDS} rounds in {:?}; {killed_mid_stream} killed after committing changes; \
         imports: {imports_finished} finished, {imports_killed} killed; final {:?}",
        started.elapsed(),
        meta(&data, "c.test.")
    );
    assert!(
        killed_mid_stream >= ROUNDS / 2,
        "the writer rarely got to commit"
    );
}
