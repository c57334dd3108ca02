//! Stopping on a signal: the flag SIGINT and SIGTERM set, and the error a
//! command returns when it was stopped half-way.

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, LazyLock};

/// Set by SIGINT or SIGTERM: the hub, an engine or a foreground cluster
/// stops. A static so an engine's config can borrow it for `'static`.
pub(super) static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);

/// SIGINT and SIGTERM set [`STOP`] (signal-hook's flag handler, which only
/// stores to the atomic); blocking calls see EINTR and loops check the flag.
pub(super) fn install_signal_handlers() -> Result<()> {
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&STOP)).with_context(|| {
            format!("cannot install the handler for signal {signal}, so Ctrl-C could not stop zpar cleanly")
        })?;
    }
    Ok(())
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
