//! Saying what a wait is for: any wait of the command line that lasts more
//! than about a second shows it, so a person can tell a wait from a hang.
//!
//! On a terminal a spinner names what is awaited; otherwise a line goes to
//! standard error after a second and again every 10 s. A wait for a file no
//! hub could write is not started at all ([`could_be_written`]).
//!
//! ```
//! let notice = zpar::wait::WaitNotice::start("the hub at tcp://127.0.0.1:5555");
//! // ... block on the wait ...
//! drop(notice); // the spinner or the lines stop here
//! ```

use std::io::IsTerminal;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a wait stays silent.
const QUIET: Duration = Duration::from_secs(1);
/// How often a line repeats when standard error is not a terminal.
const EVERY: Duration = Duration::from_secs(10);
/// For tests: milliseconds that replace both [`QUIET`] and [`EVERY`], so a
/// test sees the notice at once and often.
pub const PERIOD_VAR: &str = "ZPAR_WAIT_NOTICE_MS";

/// The silence before the first line and the period of the next ones.
fn timings() -> (Duration, Duration) {
    match std::env::var(PERIOD_VAR)
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        Some(ms) => (Duration::from_millis(ms), Duration::from_millis(ms)),
        None => (QUIET, EVERY),
    }
}

/// A running notice; it stops when dropped, and dropping it waits for its
/// thread, so nothing is printed afterwards.
pub struct WaitNotice {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WaitNotice {
    /// Starts saying, after a second, that we wait for `what`.
    pub fn start(what: impl Into<String>) -> WaitNotice {
        let what = what.into();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("zpar-wait-notice".into())
            .spawn(move || notice(&what, &stopped))
            .ok();
        WaitNotice {
            stop: Some(stop),
            thread,
        }
    }
}

fn notice(what: &str, stopped: &mpsc::Receiver<()>) {
    let started = Instant::now();
    let (quiet, every) = timings();
    if !matches!(
        stopped.recv_timeout(quiet),
        Err(mpsc::RecvTimeoutError::Timeout)
    ) {
        return;
    }
    if std::io::stderr().is_terminal() {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.set_message(format!("waiting for {what}"));
        spinner.enable_steady_tick(Duration::from_millis(100));
        let _ = stopped.recv();
        spinner.finish_and_clear();
        return;
    }
    loop {
        eprintln!(
            "zpar: waiting for {what} ({}s so far)",
            started.elapsed().as_secs()
        );
        if !matches!(
            stopped.recv_timeout(every),
            Err(mpsc::RecvTimeoutError::Timeout)
        ) {
            return;
        }
    }
}

impl Drop for WaitNotice {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Before waiting for a hub to write `file`: fails at once, saying what is
/// missing, when no hub could write it, because its folder does not exist
/// (a profile's `security` folder may be missing still: the hub creates it
/// in its profile, so then the profile folder counts).
pub fn could_be_written(file: &Path) -> anyhow::Result<()> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let creatable =
        dir.file_name().is_some_and(|n| n == "security") && dir.parent().is_some_and(Path::is_dir);
    if dir.is_dir() || creatable {
        return Ok(());
    }
    anyhow::bail!(
        "no folder {}, so no hub will write {} there: check the path (a hub writes its \
         connection files into its profile's security folder)",
        dir.display(),
        file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_a_folder_that_is_not_there_is_not_waited_for() {
        let dir = std::env::temp_dir();
        assert!(could_be_written(&dir.join("x.json")).is_ok());
        assert!(could_be_written(Path::new("x.json")).is_ok());
        assert!(could_be_written(&dir.join("security/zpar-engine.json")).is_ok());
        let missing = dir.join(format!("zpar-no-such-{}", std::process::id()));
        let err = could_be_written(&missing.join("security/x.json")).unwrap_err();
        assert!(err.to_string().contains("no folder"), "{err}");
        assert!(could_be_written(&missing.join("x.json")).is_err());
    }
}
