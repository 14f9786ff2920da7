//! The systemd readiness protocol (`sd_notify(3)`): READY, RELOADING, STOPPING, WATCHDOG.
//!
//! Every call is a no-op when `NOTIFY_SOCKET` is not set (not started by systemd), and a
//! failure to notify is logged, never fatal: serving DNS matters more than telling systemd.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        warn!("sd_notify failed: {e}");
    }
}

/// All zones are loaded and the listeners are up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload started; `ready` must follow when it ends (systemd.service(5), `Type=notify`).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown started.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// When systemd asks for watchdog pings (`WatchdogSec=`), pings at half the interval from
/// a task on `rt` until `token` is cancelled. Run it on the latency runtime: a ping then
/// also proves that the runtime answering queries is not stuck.
pub fn spawn_watchdog(rt: &Handle, token: CancellationToken, tracker: &TaskTracker) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    debug!(?period, "systemd watchdog enabled");
    tracker.spawn_on(
        async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = ticker.tick() => send(&[NotifyState::Watchdog]),
                }
            }
        },
        rt,
    );
}
