//! A process's memory, read from `/proc/PID/status` (Linux; NaN
//! elsewhere).

use std::time::Duration;

/// Resident set size of a process, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// Resident set size of a process at rest, in MiB: read every 100 ms until
/// two readings agree (at most 2 s). A hub hands freed memory back once it
/// has been idle for a poll period, so a reading taken the moment a
/// transfer ends still counts buffers it is about to free.
pub fn settled_rss_mib(pid: u32) -> f64 {
    let mut last = rss_mib(pid);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = rss_mib(pid);
        if (now - last).abs() < 0.05 {
            return now;
        }
        last = now;
    }
    last
}

/// The most memory `pid` has held resident since it started, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// A `kB` field of `/proc/PID/status`, in MiB (NaN if unreadable).
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}
