//! [`BinaryTreeCommunicator`], the script type, and the rule every
//! collective call keeps: it uses up exactly [`CALL_ROUNDS`] rounds. The
//! script path (`script.rs`) and the named path (`native.rs`) add its
//! calls.

use super::env::RhaiResult;
use super::tree::Comm;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// The script type. Clones share one communicator.
#[derive(Clone)]
pub struct BinaryTreeCommunicator(pub(super) Rc<RefCell<Comm>>);

/// Tree rounds (sequence numbers) each collective call uses up, whichever
/// path it takes and wherever it fails: a large named allreduce runs a
/// roster and then a barrier or the ring (whose call takes the second
/// number), every other call one round. Engines stay in step after a
/// failure that only some of them saw.
const CALL_ROUNDS: u64 = 2;

impl BinaryTreeCommunicator {
    /// Runs one collective call; afterwards the communicator's rounds are
    /// at the call's last number, whatever happened.
    pub(super) fn call<R>(&self, body: impl FnOnce() -> RhaiResult<R>) -> RhaiResult<R> {
        let base = self.0.borrow().collective.as_ref().map(|m| m.seq());
        let result = body();
        if let Some(base) = base {
            if let Some(m) = self.0.borrow_mut().collective.as_mut() {
                m.skip_to(base + CALL_ROUNDS);
            }
        }
        result
    }

    /// The base timeout of a call: its own, or the communicator's.
    pub(super) fn timeout_or_default(&self, timeout: Option<Duration>) -> Duration {
        timeout.unwrap_or(self.0.borrow().timeout)
    }
}
