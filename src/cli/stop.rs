//! Stopping on a signal: the flag SIGINT and SIGTERM set, and the error a
//! command returns when it was stopped half-way.

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, LazyLock, OnceLock};

/// Set by SIGINT or SIGTERM: the hub, an engine or a foreground cluster
/// stops. A static so an engine's config can borrow it for `'static`.
pub(super) static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);

/// SIGINT and SIGTERM set [`STOP`] (signal-hook's flag handler, which only
/// stores to the atomic); blocking calls see EINTR and loops check the flag.
/// The same signals also write a byte to a pipe whose read end
/// ([`stop_signal_fd`]) nobody reads: once a signal came it stays
/// readable, so a loop that polls it (an idle engine's) wakes at once.
pub(super) fn install_signal_handlers() -> Result<()> {
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&STOP)).with_context(|| {
            format!("cannot install the handler for signal {signal}, so Ctrl-C could not stop zpar cleanly")
        })?;
    }
    if STOP_PIPE.get().is_none() {
        let (read, write) = UnixStream::pair().context("creating the stop signal's pipe")?;
        for signal in [SIGINT, SIGTERM] {
            let end = write
                .try_clone()
                .context("creating the stop signal's pipe")?;
            signal_hook::low_level::pipe::register(signal, end).with_context(|| {
                format!("cannot install the handler for signal {signal}, so Ctrl-C could not stop zpar cleanly")
            })?;
        }
        let _ = STOP_PIPE.set(read);
    }
    Ok(())
}

/// The read end of the pipe the stop signals write to (kept open for the
/// process's life, and never read).
static STOP_PIPE: OnceLock<UnixStream> = OnceLock::new();

/// A descriptor that turns readable once a stop signal came (after
/// [`install_signal_handlers`]), for a loop to poll beside its sockets.
pub(super) fn stop_signal_fd() -> Option<RawFd> {
    STOP_PIPE.get().map(|read| read.as_raw_fd())
}

/// Asked to stop (SIGINT or SIGTERM) in the middle of something: exits with
/// [`exit::INTERRUPTED`](super::exit::INTERRUPTED).
#[derive(Debug, thiserror::Error)]
#[error("interrupted {0}")]
pub struct Interrupted(pub &'static str);

/// Blocks until SIGINT or SIGTERM (checked every 100 ms), for a command
/// that serves until it is stopped (`zpar dashboard`).
pub fn wait_for_interrupt() -> Result<()> {
    install_signal_handlers()?;
    while !STOP.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}
