//! Allreduce of large numeric arrays through shared memory, for a
//! communicator whose engines all run on one host, and the *roster* round
//! that every large named allreduce starts with.
//!
//! Over TCP, a tree allreduce of an 8 MB array moves 48 MB through loopback
//! with four engines (every child's array up, the result down to each), and
//! on one host that is all the time it takes. Here no array crosses a socket:
//!
//! 1. every engine copies its array into a segment of its own in
//!    `/dev/shm` (`zpar-<pid>-<uuid>`, mapped, kept for the communicator's
//!    life, grown as needed, removed when the communicator is dropped and
//!    swept by pid after a `kill -9`);
//! 2. a small tree allreduce (the *roster*) tells every engine every
//!    engine's host, segments and address, in the tree's fold order, and
//!    checks that they all reduce an array of the same type and length;
//! 3. engine `r` of `n` folds slice `r` of the array: it reads that slice of
//!    every engine's array, in fold order, and writes the result at its
//!    place in a second segment of its own, for results (a reduce-scatter);
//! 4. a second small allreduce (a barrier) says every slice is written;
//! 5. every engine reads the `n` result slices into its result (an
//!    allgather).
//!
//! Each engine moves about 3× the array through memory and no byte through
//! a socket. Each element is folded in the same order as the tree's
//! sequential fold, so results are bit-for-bit those of the tree (also for
//! `f64` sums).
//!
//! Reuse is safe without locks: an engine overwrites its array only in its
//! next call, which it begins after step 4 of this one (so everyone has read
//! it); it overwrites its result slice only after the next call's roster,
//! which needs everyone to have finished step 5. The two live in separate
//! segments, so a next call's larger array cannot reach a result slice.
//!
//! Every engine decides from the same roster, so they always agree: shared
//! memory when every engine is on this host and wrote a segment (shared
//! memory is on, `ZPAR_SHARED_MEMORY` is not `0` and the script did not set
//! `com.shared_memory = false`); otherwise the ring ([`super::ring`]), whose
//! successor addresses the roster also carries.

use super::collective::{Call, Combine};
use super::driver::drive;
use super::env::RhaiResult;
use super::errors::{err, DriveError};
use super::shared::{slice, Elem, Slot};
use super::tree::Comm;
use super::wire::Payload;
use serde_json::{json, Value as Json};
use std::cell::RefCell;
use std::time::Duration;
use zpar_protocol::bulk;
use zpar_protocol::error::Chain;

/// One engine's line in the roster.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    /// The engine.
    pub(super) id: u32,
    /// Its host's boot id.
    pub(super) host: String,
    /// Its segment holding its array; empty if it offers none.
    pub(super) segment: String,
    /// Its segment holding its slice of the result; empty if none.
    pub(super) result: String,
    /// Its ROUTER's address (the ring's previous engine connects to it).
    pub(super) url: String,
}

/// The roster round's combine step: checks every engine reduces the same
/// kind of array, and lists every engine's host, segment and address in
/// fold order.
struct Roster {
    me: u32,
    root: u32,
    dtype: &'static str,
    len: usize,
    entries: Vec<Entry>,
}

impl Roster {
    fn to_json(&self) -> Json {
        let entries: Vec<Json> = self
            .entries
            .iter()
            .map(|e| json!([e.id, e.host, e.segment, e.result, e.url]))
            .collect();
        json!({"roster": {"dtype": self.dtype, "len": self.len}, "engines": entries})
    }

    fn absorb(&mut self, from: u32, part: &Payload) -> Result<(), String> {
        let p = &part.json;
        // A chunk of the small-array path says the same at its top level.
        let roster = if p["roster"].is_null() {
            p
        } else {
            &p["roster"]
        };
        let (dtype, len) = (roster["dtype"].as_str(), roster["len"].as_u64());
        if dtype != Some(self.dtype) || len != Some(self.len as u64) {
            return Err(format!(
                "engine {from} reduces a {} array of {} elements, engine {} a {} array of {}",
                dtype.unwrap_or("?"),
                len.unwrap_or(0),
                self.me,
                self.dtype,
                self.len
            ));
        }
        if p["roster"].is_null() {
            return Err(different_paths(from, self.me));
        }
        let entries = p["engines"]
            .as_array()
            .ok_or_else(|| format!("engine {from} sent a roster without engines"))?;
        let mut parsed = Vec::with_capacity(entries.len());
        for e in entries {
            match (
                e[0].as_u64(),
                e[1].as_str(),
                e[2].as_str(),
                e[3].as_str(),
                e[4].as_str(),
            ) {
                (Some(id), Some(host), Some(segment), Some(result), Some(url)) => {
                    parsed.push(Entry {
                        id: id as u32,
                        host: host.to_string(),
                        segment: segment.to_string(),
                        result: result.to_string(),
                        url: url.to_string(),
                    })
                }
                _ => return Err(format!("engine {from} sent a malformed roster entry {e}")),
            }
        }
        self.entries = parsed;
        Ok(())
    }
}

impl Combine<Payload> for Roster {
    fn combine(&mut self, _k: usize, child: u32, part: Payload) -> Result<(), String> {
        let mine = std::mem::take(&mut self.entries);
        self.absorb(child, &part)?;
        let theirs = std::mem::replace(&mut self.entries, mine);
        self.entries.extend(theirs);
        Ok(())
    }

    fn piece(&mut self, _k: usize) -> Result<Payload, String> {
        Ok(Payload {
            json: self.to_json(),
            buffers: Vec::new(),
        })
    }

    fn accept(&mut self, _k: usize, part: Payload) -> Result<(), String> {
        self.absorb(self.root, &part)
    }
}

/// The error when one engine takes the large-array path and another the
/// chunked tree for the same array (their thresholds differ).
fn different_paths(tree: u32, large: u32) -> String {
    format!(
        "engine {tree} reduces its array along the chunked tree and engine {large} by the large-array path: set com.large_min_bytes the same on every engine"
    )
}

/// The barrier round: nothing but an error travels.
struct Barrier {
    error: Option<String>,
}

impl Combine<Payload> for Barrier {
    fn combine(&mut self, _k: usize, _child: u32, part: Payload) -> Result<(), String> {
        match part.json["error"].as_str() {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        }
    }

    fn piece(&mut self, _k: usize) -> Result<Payload, String> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(Payload {
                json: Json::Null,
                buffers: Vec::new(),
            }),
        }
    }

    fn accept(&mut self, k: usize, part: Payload) -> Result<(), String> {
        self.combine(k, 0, part)
    }
}

/// Runs one small tree round with `comb`; its failure as a script error.
fn round(
    comm: &RefCell<Comm>,
    timeout: Duration,
    comb: &mut impl Combine<Payload>,
) -> RhaiResult<()> {
    drive(comm, Call::reduce(1, true, timeout), comb).map_err(DriveError::into_script)
}

/// Steps 1 and 2: writes this engine's array to its segment if it offers
/// shared memory, then runs the roster round. The entries come in fold
/// order, the same on every engine.
pub(super) fn roster<T: Elem>(
    comm: &RefCell<Comm>,
    own: &[T],
    timeout: Duration,
) -> RhaiResult<Vec<Entry>> {
    let bytes = std::mem::size_of_val(own);
    let (me, root, url) = {
        let c = comm.borrow();
        (c.id, c.links()?.tree.root, c.router_url.clone())
    };
    // An engine that cannot write its array (no room in /dev/shm) offers
    // no segment, and every engine then takes the ring.
    let (segment, result) = {
        let mut c = comm.borrow_mut();
        let area = &mut c.shared;
        let offered = if area.offers() {
            area.own_segment(Slot::Result, bytes)
                .map(|seg| seg.name.clone())
                .and_then(|result| {
                    let seg = area.own_segment(Slot::Named, bytes)?;
                    seg.map.elems_mut::<T>(0, own.len()).copy_from_slice(own);
                    Ok((seg.name.clone(), result))
                })
        } else {
            Ok(Default::default())
        };
        offered.unwrap_or_else(|e| {
            tracing::warn!(engine = me, error = %Chain(&e), "communicator: no shared segment; this allreduce goes round the ring");
            Default::default()
        })
    };
    let mut roster = Roster {
        me,
        root,
        dtype: T::DTYPE,
        len: own.len(),
        entries: vec![Entry {
            id: me,
            host: bulk::host_id().to_string(),
            segment,
            result,
            url,
        }],
    };
    round(comm, timeout, &mut roster)?;
    let all_here = roster.entries.iter().all(|e| e.host == bulk::host_id());
    if !all_here {
        tracing::debug!(
            engine = me,
            "communicator: engines on other hosts; large arrays go round the ring"
        );
    }
    comm.borrow_mut().shared.same_host = Some(all_here);
    Ok(roster.entries)
}

/// Whether the roster allows the shared-memory path: every engine on this
/// host, and every one wrote its array.
pub(super) fn all_shared(engines: &[Entry]) -> bool {
    engines
        .iter()
        .all(|e| e.host == bulk::host_id() && !e.segment.is_empty() && !e.result.is_empty())
}

/// Steps 3 to 5: the reduce-scatter through the segments, the barrier, and
/// the allgather. `engines` is the roster, which [`all_shared`] allowed.
pub(super) fn reduce_shared<T: Elem>(
    comm: &RefCell<Comm>,
    own: &[T],
    engines: &[Entry],
    fold: impl Fn(T, T) -> T,
    timeout: Duration,
) -> RhaiResult<Vec<T>> {
    let bytes = std::mem::size_of_val(own);
    let me = {
        let mut c = comm.borrow_mut();
        c.last_algorithm = "shared";
        c.id
    };
    let n = engines.len();
    let Some(rank) = engines.iter().position(|e| e.id == me) else {
        return Err(err(format!(
            "collective failed: engine {me} is not in its own roster"
        )));
    };

    // 3. Reduce-scatter: slice `rank` of every engine's array, in order,
    // folded straight into this engine's slice of the result.
    let len = own.len();
    let mine = slice(len, n, rank);
    let mut barrier = Barrier { error: None };
    let folded = (|| -> Result<Vec<T>, String> {
        let mut c = comm.borrow_mut();
        let area = &mut c.shared;
        let mut acc: Vec<T> = Vec::with_capacity(mine.len());
        for (i, e) in engines.iter().enumerate() {
            let part: &[T] = if e.id == me {
                &own[mine.clone()]
            } else {
                area.peer(e.id, &e.segment, bytes)?
                    .elems(mine.start, mine.len())
            };
            if i == 0 {
                acc.extend_from_slice(part);
            } else {
                for (a, x) in acc.iter_mut().zip(part) {
                    *a = fold(*a, *x);
                }
            }
        }
        let seg = area
            .own_segment(Slot::Result, bytes)
            .map_err(|e| e.to_string())?;
        seg.map
            .elems_mut::<T>(mine.start, mine.len())
            .copy_from_slice(&acc);
        Ok(acc)
    })();
    let acc = match folded {
        Ok(acc) => acc,
        Err(e) => {
            barrier.error = Some(format!("engine {me}: {e}"));
            Vec::new()
        }
    };
    // 4. Every slice is written.
    round(comm, timeout, &mut barrier)?;

    // 5. Allgather: every engine's slice of the result.
    let mut out: Vec<T> = bulk::zeroed(len);
    let mut c = comm.borrow_mut();
    for (r, e) in engines.iter().enumerate() {
        let range = slice(len, n, r);
        if e.id == me {
            out[range].copy_from_slice(&acc);
            continue;
        }
        let from: &[T] = c
            .shared
            .peer(e.id, &e.result, bytes)
            .map_err(err)?
            .elems(range.start, range.len());
        out[range].copy_from_slice(from);
    }
    Ok(out)
}
