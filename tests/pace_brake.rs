//! The worker-wait brake of paced heavy loops (`[runtime] heavy_worker_wait_budget_us`):
//! a paced loop pauses while a query worker waits for a CPU, and never otherwise. Its own
//! test binary: the budget is process-wide.

mod common;

use std::time::{Duration, Instant};

use muninn::pace;

/// Runs a paced loop for `run_for` on a fresh thread; returns the time it spent braked.
fn paced_loop(run_for: Duration) -> Duration {
    std::thread::spawn(move || {
        pace::enable_on_current_thread();
        let t = Instant::now();
        while t.elapsed() < run_for {
            pace::tick();
        }
        pace::braked()
    })
    .join()
    .unwrap()
}

#[test]
fn paced_loops_pause_only_while_a_query_worker_waits() {
    pace::set_tick_brake(Duration::from_micros(1));

    // No thread of this process is a query worker.
    assert_eq!(paced_loop(Duration::from_millis(200)), Duration::ZERO);

    // A query worker kept waiting for its CPU.
    let waiting = common::WaitingWorker::start();
    let braked = paced_loop(Duration::from_millis(500));
    // Off again: never.
    pace::set_tick_brake(Duration::ZERO);
    let off = paced_loop(Duration::from_millis(100));
    drop(waiting);
    assert!(braked > Duration::ZERO, "{braked:?}");
    assert_eq!(off, Duration::ZERO);
}
