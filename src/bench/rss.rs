//! A process's memory, read from `/proc/PID/status`, and the CPU time it
//! used, from `/proc/PID/stat` (Linux; NaN elsewhere).

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

/// CPU time `pid` has used so far (user and system, all its threads), in
/// seconds (NaN if unreadable).
pub fn cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces), from
            // field 3 on: utime and stime are fields 14 and 15.
            let rest = &s[s.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user = fields.get(11)?.parse::<f64>().ok()?;
            let system = fields.get(12)?.parse::<f64>().ok()?;
            Some((user + system) / ticks)
        })
        .unwrap_or(f64::NAN)
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
