//! Cooperative pacing of heavy jobs: a heavy thread that shares its core with a busier
//! thread (a query worker) gives the core back within a fraction of a millisecond.
//!
//! Heavy threads run under SCHED_IDLE (or a high nice value), so a query worker that wakes
//! up preempts them at once. That is not enough: the scheduler (EEVDF, Linux 6.6+) still
//! owes a waiting heavy thread its small share of CPU, and pays it at a timer tick by
//! preempting a *running* worker for a whole tick (4 ms at HZ=250). Measured under a
//! steady query load while a 1,000,000-name zone reloads on the worker's core: about one
//! such 4 ms stall every 2-3 s, each one a p99 spike for its second.
//!
//! So the long loops of heavy jobs (parsing, validating and building a zone, importing it
//! into the store, writing its image, purges) call [`tick`]. Every [`WINDOW`] of wall time
//! it compares the thread's CPU time with the wall time: when the thread was kept off the
//! CPU for a good part of the window, another thread wants this core, and the heavy thread
//! sleeps for [`PAUSE`], which hands the core straight back (a `sched_yield` would not:
//! the scheduler picks the heavy thread again when it is the one owed time). Otherwise it
//! only yields. Alone on a core it never sleeps. Work the loops do not control (a redb commit, a sort, freeing a zone) is not
//! paced.
//!
//! Pacing decides who runs *now*. A [`Brake`] decides how much: it measures how long the
//! query workers waited for a CPU while a job ran and asks the job to pause until that is
//! back within a budget. Purges use one per batch (`[store] purge_worker_wait_budget_us`);
//! paced loops consult one every 20 ms when `[runtime] heavy_worker_wait_budget_us` is set.
//!
//! Pacing is per thread and off by default: [`enable_on_current_thread`] turns it on for
//! heavy-job threads (see `HeavyPriority::apply_to_current_thread`), so the same code run
//! by the CLI or by tests is not slowed down.

use std::cell::Cell;
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};

/// Length of a pacing window (wall time between checks of the thread's CPU time).
pub const WINDOW: Duration = Duration::from_micros(250);
/// Sleep that hands the core back when the window shows contention. Short: when the core
/// frees up again, the heavy job loses little.
pub const PAUSE: Duration = Duration::from_micros(50);
/// Calls of [`tick`] between two reads of the wall clock (a tick is one record or node:
/// from a few hundred nanoseconds to ~10 us of work).
const CALLS_PER_CHECK: u32 = 16;

#[derive(Clone, Copy)]
struct State {
    calls: u32,
    wall: Instant,
    cpu: Duration,
}

/// Run-queue wait per second of a query worker above which paced loops pause (ns; 0: off).
static TICK_BRAKE_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// How often a paced loop consults its brake.
const TICK_BRAKE_STEP: Duration = Duration::from_millis(20);

/// Sets the worker-wait budget of every paced heavy loop (zero turns the brake off).
pub fn set_tick_brake(budget_per_s: Duration) {
    let ns = u64::try_from(budget_per_s.as_nanos()).unwrap_or(u64::MAX);
    TICK_BRAKE_NS.store(ns, std::sync::atomic::Ordering::Relaxed);
}

thread_local! {
    static TICK_BRAKE: std::cell::RefCell<Option<Brake>> = const { std::cell::RefCell::new(None) };
    static PACER: Cell<Option<State>> = const { Cell::new(None) };
    static PAUSES: Cell<u64> = const { Cell::new(0) };
    static BRAKED: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// Turns pacing on for the calling thread (a heavy-job thread).
pub fn enable_on_current_thread() {
    PACER.with(|p| p.set(mark()));
}

/// Whether the calling thread is paced.
pub fn enabled() -> bool {
    PACER.with(|p| p.get().is_some())
}

/// Times the calling thread has paused for a busier thread (for tests and debugging).
pub fn pauses() -> u64 {
    PAUSES.with(Cell::get)
}

/// Time the calling thread's paced loops have paused for waiting query workers (see
/// [`set_tick_brake`]).
pub fn braked() -> Duration {
    BRAKED.with(Cell::get)
}

fn mark() -> Option<State> {
    Some(State {
        calls: 0,
        wall: Instant::now(),
        cpu: crate::sys::thread_cpu_time()?,
    })
}

/// One step of a long heavy loop; pauses when the core is wanted by another thread.
#[inline]
pub fn tick() {
    tick_many(1);
}

/// [`tick`] for a step worth `n` small ones (a buffer of bytes rather than a record).
#[inline]
pub fn tick_many(n: u32) {
    PACER.with(|p| {
        let Some(mut st) = p.get() else {
            return;
        };
        st.calls = st.calls.saturating_add(n);
        if st.calls < CALLS_PER_CHECK {
            p.set(Some(st));
            return;
        }
        p.set(check(st));
    });
}

#[cold]
fn check(st: State) -> Option<State> {
    let wall = st.wall.elapsed();
    if wall < WINDOW {
        return Some(State { calls: 0, ..st });
    }
    let cpu = crate::sys::thread_cpu_time()?;
    let ran = cpu.saturating_sub(st.cpu);
    // Off the CPU for more than a quarter of the window although it had work: another
    // thread is using this core (or the thread waited on I/O, where a short pause costs
    // nothing either).
    if wall.saturating_sub(ran) > wall / 4 {
        std::thread::sleep(PAUSE);
        PAUSES.with(|n| n.set(n.get() + 1));
    } else {
        // Not seen contended, but a query worker may have just woken up: sched_yield lets
        // it run now rather than at the next tick (measured on the purge benchmark, where
        // the store writer kept the CPU for whole ticks while the woken worker waited).
        // Costs about a microsecond per window when nobody else is runnable.
        std::thread::yield_now();
    }
    tick_brake();
    mark()
}

/// Every [`TICK_BRAKE_STEP`], pauses as a [`Brake`] says when one is set.
fn tick_brake() {
    let ns = TICK_BRAKE_NS.load(std::sync::atomic::Ordering::Relaxed);
    if ns == 0 {
        return;
    }
    TICK_BRAKE.with(|b| {
        let mut b = b.borrow_mut();
        let brake = b.get_or_insert_with(|| {
            let mut brake = Brake::new(Duration::from_nanos(ns));
            brake.start();
            brake
        });
        let step = brake.started.elapsed();
        if step < TICK_BRAKE_STEP {
            return;
        }
        // A window much longer than a step spans time the thread spent idle between jobs,
        // whose worker waits were not its doing: start afresh.
        if step > TICK_BRAKE_STEP.saturating_mul(10) {
            brake.start();
            return;
        }
        brake.budget_per_s = Duration::from_nanos(ns);
        let pause = brake.pause();
        if !pause.is_zero() {
            std::thread::sleep(pause);
            BRAKED.with(|t| t.set(t.get().saturating_add(pause)));
        }
        brake.start();
    });
}

/// Bytes per piece of [`extend_from_slice`].
const COPY_CHUNK_BYTES: usize = 256 * 1024;

/// `out.extend_from_slice(src)` in 256 KiB pieces with a [`tick`] between them.
///
/// A heavy thread must reach a pacing point every fraction of a millisecond: on the VMs
/// we measure on, a query worker woken while a SCHED_IDLE heavy thread runs in user space
/// was seen waiting for the next timer tick (up to 2.8 ms, perf sched timehist) rather
/// than preempting it at once, and a snapshot patch copies up to 64 MB in one go.
pub fn extend_from_slice<T: Copy>(out: &mut Vec<T>, src: &[T]) {
    let per = (COPY_CHUNK_BYTES / std::mem::size_of::<T>().max(1)).max(1);
    out.reserve(src.len());
    for piece in src.chunks(per) {
        out.extend_from_slice(piece);
        tick_many(CALLS_PER_CHECK / 2);
    }
}

/// Bytes per `read(2)` of [`read_file`].
const READ_CHUNK: u64 = 256 * 1024;

/// Reads a whole file like `std::fs::read`, in [`READ_CHUNK`] system calls with a [`tick`]
/// between them.
///
/// One `read(2)` of a whole 60 MB zone file copies it inside the kernel, where a query
/// worker woken meanwhile cannot preempt the heavy thread (the kernels we run on are built
/// without kernel preemption and reschedule only at points like the page cache's
/// per-batch check): measured, 7 waits of 1.9 ms each for the worker of a loaded server in
/// the first 100 ms of a 1,000,000-name zone reload. A 256 KiB copy takes ~50 us.
pub fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
    loop {
        let n = file.by_ref().take(READ_CHUNK).read_to_end(&mut data)?;
        if n == 0 {
            return Ok(data);
        }
        tick_many(CALLS_PER_CHECK);
    }
}

/// A braked step is followed by at most this many times its own duration in pauses, and
/// by [`BRAKE_MAX_PAUSE`] at most, so a braked job always progresses.
const BRAKE_MAX_FACTOR: u32 = 8;
/// Longest pause a [`Brake`] asks for after one step.
pub const BRAKE_MAX_PAUSE: Duration = Duration::from_secs(1);

/// Slows a bulk job (a purge) down while it makes the query workers wait for a CPU.
///
/// SCHED_IDLE and [`tick`] decide who runs *now*. They cannot stop a job that fills every
/// idle moment of a worker's core from costing queries: each time the worker wakes up it
/// preempts a heavy thread (a context switch, caches refilled), and the core runs at 100%,
/// where queues grow. Measured on the purge benchmark at half of the maximum query rate:
/// the worker's run-queue wait rose from 0.8 ms/s to 13-16 ms/s and query p99 tripled;
/// a 300 ms pause after each batch held p99 at 1.5x.
///
/// The brake reads how long each latency worker thread waited runnable for a CPU during a
/// step (the kernel's run delay, field 2 of `/proc/self/task/TID/schedstat`). When the
/// worst worker waited more than `budget` per second of the step, it asks for the pause
/// that brings the average over step and pause back to the budget. With no query load,
/// with a zero budget, or where the kernel does not report run delays, it never pauses.
pub struct Brake {
    budget_per_s: Duration,
    started: Instant,
    waits: Vec<(String, u64)>,
}

impl Brake {
    /// A brake allowing each query worker to wait `budget_per_s` per second of a step.
    pub fn new(budget_per_s: Duration) -> Brake {
        Brake {
            budget_per_s,
            started: Instant::now(),
            waits: Vec::new(),
        }
    }

    /// Marks the start of a step.
    pub fn start(&mut self) {
        self.started = Instant::now();
        if !self.budget_per_s.is_zero() {
            self.waits = latency_worker_waits();
        }
    }

    /// The pause to take after the step begun by the last [`Brake::start`].
    pub fn pause(&self) -> Duration {
        if self.budget_per_s.is_zero() {
            return Duration::ZERO;
        }
        let step = self.started.elapsed();
        let worst = latency_worker_waits()
            .iter()
            .filter_map(|(tid, now)| {
                let (_, before) = self.waits.iter().find(|(t, _)| t == tid)?;
                now.checked_sub(*before)
            })
            .max()
            .unwrap_or(0);
        brake_pause(step, Duration::from_nanos(worst), self.budget_per_s)
    }
}

/// The pause after a step of length `step` in which the worst query worker waited
/// `waited`: (step + pause) x budget = waited, within the caps.
fn brake_pause(step: Duration, waited: Duration, budget_per_s: Duration) -> Duration {
    let budget = budget_per_s.as_secs_f64();
    if budget <= 0.0 || waited.as_secs_f64() <= budget * step.as_secs_f64() {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(waited.as_secs_f64() / budget)
        .unwrap_or(BRAKE_MAX_PAUSE)
        .saturating_sub(step)
        .min(step.saturating_mul(BRAKE_MAX_FACTOR))
        .min(BRAKE_MAX_PAUSE)
}

/// (thread id, nanoseconds waited on a run queue) of every latency worker thread.
fn latency_worker_waits() -> Vec<(String, u64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let dir = task.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            if !comm.starts_with(crate::runtime::LATENCY_THREAD_PREFIX) {
                return None;
            }
            // "run ns, run-queue wait ns, timeslices" (Documentation/scheduler/sched-stats).
            let stat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
            let wait = stat.split_ascii_whitespace().nth(1)?.parse().ok()?;
            Some((dir.file_name()?.to_string_lossy().into_owned(), wait))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let t = Instant::now();
        while t.elapsed() < d {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn brake_pauses_to_bring_the_wait_back_to_the_budget() {
        let ms = Duration::from_millis;
        let budget = ms(2); // per second
        // Within the budget: no pause.
        assert_eq!(brake_pause(ms(200), ms(0), budget), Duration::ZERO);
        assert_eq!(
            brake_pause(ms(200), Duration::from_micros(400), budget),
            Duration::ZERO
        );
        // 3 ms waited in 200 ms: 1.5 s of step and pause would average 2 ms/s, but one
        // pause is capped at 1 s.
        assert_eq!(brake_pause(ms(200), ms(3), budget), ms(1000));
        // 1.2 ms in 200 ms: (200 + 400) ms x 2 ms/s = 1.2 ms.
        let p = brake_pause(ms(200), Duration::from_micros(1200), budget);
        assert!(p.abs_diff(ms(400)) < ms(1), "{p:?}");
        // Capped at 8 steps.
        assert_eq!(brake_pause(ms(10), ms(5), budget), ms(80));
        // No budget: never.
        assert_eq!(brake_pause(ms(10), ms(5), Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn brake_pauses_while_a_latency_worker_waits_for_a_cpu() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, mpsc};
        // Twice as many spinning threads as CPUs: a thread named like a latency worker that
        // wants a CPU meanwhile waits on a run queue part of the time.
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let spinners: Vec<_> = (0..cpus * 2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let (exit_tx, exit_rx) = mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name(format!("{}test", crate::runtime::LATENCY_THREAD_PREFIX))
            .spawn(move || {
                let me = std::fs::read_link("/proc/thread-self").unwrap();
                ready_tx
                    .send(me.file_name().unwrap().to_string_lossy().into_owned())
                    .unwrap();
                spin(Duration::from_millis(200));
                done_tx.send(()).unwrap();
                let _ = exit_rx.recv();
            })
            .unwrap();
        let tid = ready_rx.recv().unwrap();
        let mut brake = Brake::new(Duration::from_micros(1));
        brake.start();
        assert!(
            brake.waits.iter().any(|(t, _)| *t == tid),
            "{:?} lacks {tid}",
            brake.waits
        );
        done_rx.recv().unwrap();
        let pause = brake.pause();
        let mut off = Brake::new(Duration::ZERO);
        off.start();
        let off_pause = off.pause();
        stop.store(true, Ordering::Relaxed);
        exit_tx.send(()).unwrap();
        worker.join().unwrap();
        for s in spinners {
            s.join().unwrap();
        }
        assert!(
            pause > Duration::ZERO && pause <= BRAKE_MAX_PAUSE,
            "{pause:?}"
        );
        assert_eq!(off_pause, Duration::ZERO);
    }

    #[test]
    fn extend_from_slice_copies_everything() {
        std::thread::spawn(|| {
            enable_on_current_thread();
            let src: Vec<u64> = (0..(COPY_CHUNK_BYTES as u64 / 8 * 5 + 7)).collect();
            let mut out = vec![7u64];
            extend_from_slice(&mut out, &src);
            assert_eq!(out.len(), src.len() + 1);
            assert_eq!(out.first(), Some(&7));
            assert_eq!(out.get(1..), Some(&src[..]));
            let mut empty: Vec<u8> = Vec::new();
            extend_from_slice(&mut empty, &[]);
            assert!(empty.is_empty());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn read_file_reads_everything() {
        let dir = std::env::temp_dir().join(format!("muninn-pace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data");
        // Not a multiple of the chunk size, and more than a few chunks.
        let data: Vec<u8> = (0..(READ_CHUNK as usize * 3 + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        std::thread::spawn(move || {
            enable_on_current_thread();
            assert_eq!(read_file(&path).unwrap(), data);
            std::fs::write(&path, b"").unwrap();
            assert!(read_file(&path).unwrap().is_empty());
            assert!(read_file(&path.with_extension("missing")).is_err());
        })
        .join()
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn off_unless_enabled() {
        std::thread::spawn(|| {
            assert!(!enabled());
            for _ in 0..10_000 {
                tick();
            }
            assert_eq!(pauses(), 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pauses_after_being_kept_off_the_cpu() {
        std::thread::spawn(|| {
            enable_on_current_thread();
            assert!(enabled());
            // Working alone: CPU time keeps up with wall time, no pause.
            for _ in 0..20 {
                spin(Duration::from_micros(20));
                for _ in 0..CALLS_PER_CHECK {
                    tick();
                }
            }
            let alone = pauses();
            // Off the CPU for a whole window (as when preempted): the next check pauses.
            std::thread::sleep(WINDOW * 4);
            for _ in 0..CALLS_PER_CHECK {
                tick();
            }
            assert_eq!(pauses(), alone + 1);
            // The window restarts after a pause: working alone again, no pause.
            for _ in 0..CALLS_PER_CHECK {
                tick();
            }
            assert_eq!(pauses(), alone + 1);
            // A busy test machine may preempt the spinning loop above; allow a few.
            assert!(alone <= 5, "{alone} pauses while running alone");
        })
        .join()
        .unwrap();
    }
}
