//! Process metrics read from /proc at scrape time (Linux), named as the Prometheus client
//! libraries name them (`process_*`), so standard dashboards work.

use std::fs;

/// `/proc` reports CPU times and start time in USER_HZ ticks, which the kernel fixes at
/// 100 per second for user space on Linux (`jiffies_to_clock_t`), whatever its own HZ.
const USER_HZ: f64 = 100.0;

/// What could be read; a field is `None` when its source was unreadable.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub threads: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads the current process's figures.
    pub fn read() -> ProcessStats {
        let mut p = ProcessStats::default();
        if let Some(f) = fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| stat_fields(&stat))
        {
            p.cpu_seconds = Some((f.utime + f.stime) as f64 / USER_HZ);
            p.threads = Some(f.threads);
            p.virtual_bytes = Some(f.vsize);
            p.start_time_seconds =
                boot_time().map(|boot| boot as f64 + f.starttime as f64 / USER_HZ);
        }
        p.resident_bytes = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| vm_rss_bytes(&s));
        p.open_fds = fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64);
        p.max_fds = fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| max_open_files(&s));
        p
    }
}

struct StatFields {
    utime: u64,
    stime: u64,
    threads: u64,
    starttime: u64,
    vsize: u64,
}

/// Fields of `/proc/self/stat` (proc(5)). The command name (field 2) may contain spaces
/// and parentheses, so counting starts after its last `)`: field 3 is then index 0.
fn stat_fields(stat: &str) -> Option<StatFields> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let num = |field: usize| -> Option<u64> { f.get(field.checked_sub(3)?)?.parse().ok() };
    Some(StatFields {
        utime: num(14)?,
        stime: num(15)?,
        threads: num(20)?,
        starttime: num(22)?,
        vsize: num(23)?,
    })
}

/// `btime` of /proc/stat: boot time in seconds since the epoch.
fn boot_time() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS:   1234 kB` of /proc/self/status.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut parts = line.split_ascii_whitespace();
    let kb: u64 = parts.next()?.parse().ok()?;
    (parts.next() == Some("kB")).then_some(kb * 1024)
}

/// The soft limit of `Max open files` in /proc/self/limits.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_ascii_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_name() {
        // Fields 3.. of a real line, command name with a space and a parenthesis.
        let line = "4242 (a) b) S 1 4242 4242 0 -1 4194304 120 0 0 0 250 50 0 0 20 0 7 0 \
                    12345 104857600 300 18446744073709551615";
        let f = stat_fields(line).unwrap();
        assert_eq!((f.utime, f.stime), (250, 50));
        assert_eq!(f.threads, 7);
        assert_eq!(f.starttime, 12345);
        assert_eq!(f.vsize, 104_857_600);
        assert!(stat_fields("garbage").is_none());
        assert!(stat_fields("1 (x) S 1 2").is_none());
    }

    #[test]
    fn parses_status_and_limits() {
        assert_eq!(
            vm_rss_bytes("Name:\tx\nVmRSS:\t  2048 kB\nThreads:\t3\n"),
            Some(2048 * 1024)
        );
        assert_eq!(vm_rss_bytes("VmRSS: lots\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn reads_this_process() {
        let p = ProcessStats::read();
        assert!(p.resident_bytes.unwrap() > 0);
        assert!(p.open_fds.unwrap() >= 3);
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap());
        assert!(p.threads.unwrap() >= 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.unwrap();
        assert!(start <= now + 1.0 && start > now - 86_400.0 * 365.0);
    }
}
