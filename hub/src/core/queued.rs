//! A load-balanced task as the hub holds it: waiting in the queue, or in
//! flight on an engine with what it takes to run it again elsewhere.

use zpar_protocol::{Header, RawMessage};

/// A load-balanced task the hub holds until it can run, or keeps beside
/// its pending entry so it can run again if its engine is lost.
pub struct QueuedTask {
    /// The request as it came (forwarded as these frames).
    pub raw: RawMessage,
    /// Its header, the parent of its reply.
    pub header: Header,
    /// The identities to reply to; the first is the client's.
    pub identities: Vec<Vec<u8>>,
    /// Run only after these succeeded.
    pub after: Vec<String>,
    /// Run where these ran.
    pub follow: Vec<String>,
    /// Engines it may run on (None: any).
    pub allowed: Option<Vec<u32>>,
    /// Re-runs left if its engine dies.
    pub retries: u32,
    /// How many times it has been sent to an engine before (0 at first).
    pub attempt: u32,
    /// Since when (Unix seconds) it has been ready to run with no engine
    /// registered to run it; None while an engine could take it or a
    /// dependency holds it back. After [`super::CoreConfig::no_engine_limit`]
    /// it fails with `NoEngines`.
    pub no_engine_since: Option<f64>,
}

impl QueuedTask {
    /// The requesting client's identity.
    pub fn client(&self) -> &[u8] {
        self.identities.first().map_or(&[][..], Vec::as_slice)
    }

    /// A copy to keep while this one runs (dependencies were met already).
    pub fn for_retry(&self) -> QueuedTask {
        QueuedTask {
            raw: self.raw.duplicate(),
            header: self.header.clone(),
            identities: self.identities.clone(),
            after: Vec::new(),
            follow: Vec::new(),
            allowed: self.allowed.clone(),
            retries: self.retries,
            attempt: self.attempt,
            no_engine_since: None,
        }
    }
}
