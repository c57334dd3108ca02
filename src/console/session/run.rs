//! What the session keeps of the work it sent: a `%px` run and what of it
//! has been shown, and which control request a command sends.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use zpar_client::AsyncResult;

/// One `%px` and what of it has been shown.
#[derive(Clone)]
pub(super) struct PxRun {
    /// Its result.
    pub(super) ar: AsyncResult,
    /// The execution number each engine gave it (`Out[ID:N]`).
    pub(super) counts: BTreeMap<u32, u64>,
    /// The engines it went to.
    pub(super) ids: Vec<u32>,
    /// Engines whose reply has been shown.
    pub(super) shown: Rc<RefCell<BTreeSet<Option<u32>>>>,
}

impl PxRun {
    /// Engines that have not answered yet.
    pub(super) fn waiting(&self) -> Vec<u32> {
        let answered: BTreeSet<u32> = self.ar.replies().iter().filter_map(|r| r.engine).collect();
        self.ids
            .iter()
            .copied()
            .filter(|i| !answered.contains(i))
            .collect()
    }
}

/// The control request `%abort`, `%interrupt` or `%clear` sends.
#[derive(Clone, Copy)]
pub(super) enum Control {
    /// Abort queued requests; with `running`, the running one too.
    Abort { running: bool },
    /// Interrupt the running request.
    Interrupt,
    /// Clear the namespace.
    Clear,
}
