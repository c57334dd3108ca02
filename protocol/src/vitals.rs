//! Vitals: a process's resident memory and a thread's or process's CPU
//! share, read cheaply from the kernel for the hub's queue status (and the
//! dashboard that shows it).
//!
//! Engines put an [`EngineVitals`] on some of their heartbeat pongs; the
//! hub measures itself ([`HubVitals`]). Both are Linux readings (`/proc`
//! and the CPU-time clocks); elsewhere every figure is absent.
//!
//! ```
//! use zpar_protocol::vitals::{resident_bytes, CpuShare};
//! let mut share = CpuShare::of_this_thread();
//! let _ = share.sample(); // the first sample starts the interval
//! let busy: u64 = (0..1_000_000u64).sum();
//! assert!(busy > 0);
//! if cfg!(target_os = "linux") {
//!     assert!(resident_bytes().unwrap() > 0);
//!     assert!(share.sample().unwrap() >= 0.0);
//! }
//! ```

use serde::{Deserialize, Serialize};
use std::time::Instant;

/// What an engine reports of itself on a heartbeat pong (its second frame,
/// JSON). Packed engines share one process, so they report the same RSS.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct EngineVitals {
    /// Resident memory of the engine's process, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss: Option<u64>,
    /// Share of one core the engine's serving thread used since its last
    /// report (0.0 idle, 1.0 one core busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Seconds since the hub last heard the engine's heartbeat (set by the
    /// hub, not the engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beat_age: Option<f64>,
}

impl EngineVitals {
    /// The figures a peer reported, made safe to show: a CPU share that is
    /// not a number is dropped, one outside 0..=1 (one thread's) clamped.
    ///
    /// ```
    /// use zpar_protocol::vitals::EngineVitals;
    /// let v = EngineVitals { cpu: Some(-3.0), ..Default::default() }.checked();
    /// assert_eq!(v.cpu, Some(0.0));
    /// assert_eq!(EngineVitals { cpu: Some(f64::NAN), ..Default::default() }.checked().cpu, None);
    /// ```
    pub fn checked(self) -> EngineVitals {
        EngineVitals {
            cpu: self
                .cpu
                .filter(|c| c.is_finite())
                .map(|c| c.clamp(0.0, 1.0)),
            ..self
        }
    }
}

/// The hub's own vitals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct HubVitals {
    /// Resident memory of the hub process, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss: Option<u64>,
    /// Share of one core the hub process used over the last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
}

/// This process's resident memory in bytes (`/proc/self/statm`), or None
/// where that cannot be read.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (page > 0).then(|| pages * page as u64)
}

/// Which CPU time a [`CpuShare`] follows.
#[derive(Debug, Clone, Copy)]
enum Clock {
    /// One thread's, by its CPU-time clock (readable from any thread of the
    /// process while that thread lives).
    Thread(libc::clockid_t),
    /// The whole process's.
    Process,
}

/// The share of one core a thread or the process used between samples.
#[derive(Debug)]
pub struct CpuShare {
    clock: Option<Clock>,
    last: Option<(Instant, f64)>,
}

impl CpuShare {
    /// Follows the calling thread. Sample it only while that thread lives
    /// (the engine samples its serving thread from its heartbeat thread,
    /// which the serving thread outlives).
    pub fn of_this_thread() -> CpuShare {
        let mut id: libc::clockid_t = 0;
        // SAFETY: pthread_self is always valid for the calling thread, and
        // `id` is a valid place to write the clock id.
        let ok = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) } == 0;
        CpuShare {
            clock: ok.then_some(Clock::Thread(id)),
            last: None,
        }
    }

    /// Follows the whole process.
    pub fn of_this_process() -> CpuShare {
        CpuShare {
            clock: Some(Clock::Process),
            last: None,
        }
    }

    /// The share of one core used since the previous sample; None on the
    /// first sample or when the clock cannot be read.
    pub fn sample(&mut self) -> Option<f64> {
        let clock = match self.clock? {
            Clock::Thread(id) => id,
            Clock::Process => libc::CLOCK_PROCESS_CPUTIME_ID,
        };
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write; a clock id that went
        // stale makes the call fail, which is handled.
        if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
            return None;
        }
        let cpu = ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
        let now = Instant::now();
        let share = self.last.and_then(|(at, before)| {
            let wall = now.duration_since(at).as_secs_f64();
            (wall > 0.0).then(|| ((cpu - before) / wall).max(0.0))
        });
        self.last = Some((now, cpu));
        share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_reads_busier_than_a_sleeping_one() {
        let mut busy = CpuShare::of_this_thread();
        busy.sample();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 50 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let spinning = busy.sample().expect("a thread clock on Linux");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let sleeping = busy.sample().expect("a thread clock on Linux");
        assert!(
            spinning > sleeping,
            "spinning {spinning} vs sleeping {sleeping}"
        );
        assert!(
            sleeping < 0.5,
            "a sleeping thread used {sleeping} of a core"
        );
    }

    #[test]
    fn vitals_leave_out_what_was_not_measured() {
        let v = EngineVitals {
            rss: Some(5),
            ..Default::default()
        };
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"rss":5}"#);
        let back: EngineVitals = serde_json::from_str("{}").unwrap();
        assert_eq!(back, EngineVitals::default());
    }
}
