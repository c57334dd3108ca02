//! Ctrl-C while a command runs. signal-hook's flag handler sets an atomic
//! flag (all a signal handler may safely do) that the waiting loops check
//! every few tens of milliseconds. At the prompt rustyline reads Ctrl-C as a
//! key itself: its raw mode turns the terminal's signal keys off.

use anyhow::{Context, Result};
use signal_hook::consts::SIGINT;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

static INTERRUPTED: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);

/// Routes SIGINT to the flag instead of ending the process.
pub fn install() -> Result<()> {
    signal_hook::flag::register(SIGINT, Arc::clone(&INTERRUPTED))
        .context("cannot install the Ctrl-C handler, so Ctrl-C could not interrupt a command")?;
    Ok(())
}

/// Whether Ctrl-C was pressed since the last call; clears the flag.
pub fn take() -> bool {
    INTERRUPTED.swap(false, Ordering::SeqCst)
}

/// Forgets a Ctrl-C pressed before now.
pub fn clear() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}
