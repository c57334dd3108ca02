//! [`Targets`]: which engines a direct view, or a control request, goes to.

use std::ops::Range;

/// Which engines a view talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Every engine registered when a call is made.
    All,
    /// These engines.
    List(Vec<u32>),
}

impl From<u32> for Targets {
    fn from(id: u32) -> Targets {
        Targets::List(vec![id])
    }
}

impl From<Vec<u32>> for Targets {
    fn from(ids: Vec<u32>) -> Targets {
        Targets::List(ids)
    }
}

impl From<&[u32]> for Targets {
    fn from(ids: &[u32]) -> Targets {
        Targets::List(ids.to_vec())
    }
}

impl From<Range<u32>> for Targets {
    fn from(r: Range<u32>) -> Targets {
        Targets::List(r.collect())
    }
}
