//! Saying what a wait is for: any wait of the command line that lasts more
//! than about a second shows it, so a person can tell a wait from a hang.
//!
//! On a terminal a spinner names what is awaited; otherwise a line goes to
//! standard error after a second and again every 10 s.
//!
//! ```
//! let notice = zpar::wait::WaitNotice::start("the hub at tcp://127.0.0.1:5555");
//! // ... block on the wait ...
//! drop(notice); // the spinner or the lines stop here
//! ```

use std::io::IsTerminal;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a wait stays silent.
const QUIET: Duration = Duration::from_secs(1);
/// How often a line repeats when standard error is not a terminal.
const EVERY: Duration = Duration::from_secs(10);

/// A running notice; it stops when dropped.
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
    if !matches!(
        stopped.recv_timeout(QUIET),
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
            stopped.recv_timeout(EVERY),
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
