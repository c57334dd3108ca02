//! Ctrl-C while a command runs. std has no signal API; libc's `signal` is
//! linked anyway, and the handler only sets an atomic flag that the waiting
//! loops check every few tens of milliseconds. At the prompt rustyline reads
//! Ctrl-C as a key itself (and puts our handler back afterwards).

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Routes SIGINT to the flag instead of ending the process.
pub fn install() {
    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }
    const SIGINT: i32 = 2;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        signal(SIGINT, on_sigint);
    }
}

/// Whether Ctrl-C was pressed since the last call; clears the flag.
pub fn take() -> bool {
    INTERRUPTED.swap(false, Ordering::SeqCst)
}

/// Forgets a Ctrl-C pressed before now.
pub fn clear() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}
