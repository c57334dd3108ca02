//! Allreduce of large numeric arrays through shared memory, for a
//! communicator whose engines all run on one host, and the *roster* round
//! that every large named allreduce starts with.
//!
//! Over TCP, a tree allreduce of an 8 MB array moves 48 MB through loopback
//! with four engines (every child's array up, the result down to each), and
//! on one host that is all the time it takes. Here no array crosses a socket:
//!
//! 1. every engine writes its array into its own segment in `/dev/shm`
//!    (`zpar-<pid>-<uuid>`, kept for the communicator's life, grown as
//!    needed, removed when the communicator is dropped and swept by pid
//!    after a `kill -9`);
//! 2. a small tree allreduce (the *roster*) tells every engine every
//!    engine's host, segment and address, in the tree's fold order, and
//!    checks that they all reduce an array of the same type and length;
//! 3. engine `r` of `n` folds slice `r` of the array: it reads that slice of
//!    every engine's array, in fold order, and writes the result into the
//!    second half of its own segment (a reduce-scatter);
//! 4. a second small allreduce (a barrier) says every slice is written;
//! 5. every engine reads the `n` result slices into its result (an
//!    allgather).
//!
//! Each engine moves about 3× the array through memory and no byte through
//! a socket. Each element is folded in the same order as the tree's
//! sequential fold, so results are bit-for-bit those of the tree (also for
//! `f64` sums).
//!
//! Reuse is safe without locks: an engine overwrites its input only in its
//! next call, which it begins after step 4 of this one (so everyone has read
//! it); it overwrites its result slice only after the next call's roster,
//! which needs everyone to have finished step 5.
//!
//! Every engine decides from the same roster, so they always agree: shared
//! memory when every engine is on this host and wrote a segment (shared
//! memory is on, `ZPAR_SHARED_MEMORY` is not `0` and the script did not set
//! `com.shared_memory = false`); otherwise the ring ([`super::ring`]), whose
//! successor addresses the roster also carries.

use super::collective::{Call, Combine};
use super::tree::{drive, err, DriveError};
use super::wire::Payload;
use super::RhaiResult;
use serde_json::{json, Value as Json};
use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;
use zpar_protocol::bulk;

/// Whether shared memory is on for this engine (`ZPAR_SHARED_MEMORY`).
pub fn enabled() -> bool {
    bulk::available() && std::env::var("ZPAR_SHARED_MEMORY").map_or(true, |v| v != "0")
}

/// A numeric element the shared path folds.
pub(super) trait Elem: bytemuck::Pod + Default {
    /// The dtype name every engine checks.
    const DTYPE: &'static str;
}

impl Elem for f64 {
    const DTYPE: &'static str = "f64";
}

impl Elem for i64 {
    const DTYPE: &'static str = "i64";
}

/// A communicator's shared-memory state.
pub(super) struct SharedArea {
    /// Whether the script allows the path (`com.shared_memory`).
    pub(super) allowed: bool,
    /// This engine's segment: name, file, size in bytes.
    own: Option<(String, File, u64)>,
    /// Whether every engine is on this host; learned at the first call.
    same_host: Option<bool>,
    /// The other engines' segments, opened once, by name.
    peers: Vec<(String, File)>,
}

impl Default for SharedArea {
    fn default() -> SharedArea {
        SharedArea {
            allowed: true,
            own: None,
            same_host: None,
            peers: Vec::new(),
        }
    }
}

impl Drop for SharedArea {
    fn drop(&mut self) {
        if let Some((name, _, _)) = &self.own {
            bulk::remove_segment(name);
        }
    }
}

impl SharedArea {
    /// Whether this engine offers its array through shared memory.
    fn offers(&self) -> bool {
        self.allowed && self.same_host != Some(false) && enabled()
    }

    /// This engine's segment, at least `bytes` long (created or grown).
    fn own_segment(&mut self, bytes: u64) -> std::io::Result<(&str, &File)> {
        if self.own.is_none() {
            let name = format!(
                "{}{}-{}",
                bulk::SEGMENT_PREFIX,
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            );
            let file = zpar_protocol::private::create_file(&segment_path(&name))?;
            self.own = Some((name, file, 0));
        }
        let (name, file, size) = self.own.as_mut().expect("just made");
        if *size < bytes {
            file.set_len(bytes)?;
            *size = bytes;
        }
        Ok((name.as_str(), file))
    }

    /// The segment of engine `id` called `name`, opened once.
    fn peer(&mut self, id: u32, name: &str) -> Result<&File, String> {
        if let Some(i) = self.peers.iter().position(|(n, _)| n == name) {
            return Ok(&self.peers[i].1);
        }
        if !bulk::is_segment_name(name) {
            return Err(format!(
                "engine {id} named {name:?} as its segment, which is not a zpar segment name"
            ));
        }
        let file = File::open(segment_path(name))
            .map_err(|e| format!("engine {id}'s shared segment {name} could not be opened: {e}"))?;
        self.peers.push((name.to_string(), file));
        Ok(&self.peers.last().expect("pushed").1)
    }
}

fn segment_path(name: &str) -> PathBuf {
    std::path::Path::new(bulk::SHM_DIR).join(name)
}

/// Slice `r` of `n` of an array of `len` elements (sizes differ by at most 1).
pub(super) fn slice(len: usize, n: usize, r: usize) -> std::ops::Range<usize> {
    let (base, extra) = (len / n, len % n);
    let start = r * base + r.min(extra);
    start..start + base + usize::from(r < extra)
}

/// One engine's line in the roster.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    /// The engine.
    pub(super) id: u32,
    /// Its host's boot id.
    pub(super) host: String,
    /// Its segment, holding its array; empty if it offers none.
    pub(super) segment: String,
    /// Its ROUTER's address (the ring's previous engine connects to it).
    pub(super) url: String,
}

/// The roster round's combine step: checks every engine reduces the same
/// kind of array, and lists every engine's segment in fold order. An
/// engine that could not write its array joins with its error, so the
/// others fail with it instead of waiting.
struct Roster {
    me: u32,
    root: u32,
    dtype: &'static str,
    len: usize,
    entries: Vec<Entry>,
    error: Option<String>,
}

impl Roster {
    fn to_json(&self) -> Json {
        let entries: Vec<Json> = self
            .entries
            .iter()
            .map(|e| json!([e.id, e.host, e.segment, e.url]))
            .collect();
        json!({"roster": {"dtype": self.dtype, "len": self.len}, "engines": entries, "error": self.error})
    }

    fn absorb(&mut self, from: u32, part: &Payload) -> Result<(), String> {
        let p = &part.json;
        if let Some(e) = p["error"].as_str() {
            return Err(e.to_string());
        }
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
        let entries = p["engines"]
            .as_array()
            .ok_or_else(|| format!("engine {from} sent a roster without engines"))?;
        let mut parsed = Vec::with_capacity(entries.len());
        for e in entries {
            match (e[0].as_u64(), e[1].as_str(), e[2].as_str(), e[3].as_str()) {
                (Some(id), Some(host), Some(segment), Some(url)) => parsed.push(Entry {
                    id: id as u32,
                    host: host.to_string(),
                    segment: segment.to_string(),
                    url: url.to_string(),
                }),
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
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        Ok(Payload {
            json: self.to_json(),
            buffers: Vec::new(),
        })
    }

    fn accept(&mut self, _k: usize, part: Payload) -> Result<(), String> {
        self.absorb(self.root, &part)
    }
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
    comm: &RefCell<super::tree::Comm>,
    timeout: Duration,
    comb: &mut impl Combine<Payload>,
) -> RhaiResult<()> {
    match drive(comm, Call::reduce(1, true, timeout), comb) {
        Ok(()) => Ok(()),
        Err(DriveError::Script(e)) => Err(e),
        Err(DriveError::Collective(e)) => Err(err(format!("collective failed: {e}"))),
    }
}

/// Steps 1 and 2: writes this engine's array to its segment if it offers
/// shared memory, then runs the roster round. The entries come in fold
/// order, the same on every engine.
pub(super) fn roster<T: Elem>(
    comm: &RefCell<super::tree::Comm>,
    own: &[T],
    timeout: Duration,
) -> RhaiResult<Vec<Entry>> {
    let bytes = std::mem::size_of_val(own);
    let (me, root, url) = {
        let c = comm.borrow();
        (c.id, c.links()?.tree.root, c.router_url.clone())
    };
    let written = {
        let mut c = comm.borrow_mut();
        if c.shared.offers() {
            c.shared
                .own_segment(2 * bytes as u64)
                .and_then(|(name, file)| {
                    file.write_all_at(bytemuck::cast_slice(own), 0)?;
                    Ok(name.to_string())
                })
                .map_err(|e| format!("engine {me} could not write its array to shared memory: {e}"))
        } else {
            Ok(String::new())
        }
    };
    let mut roster = Roster {
        me,
        root,
        dtype: T::DTYPE,
        len: own.len(),
        entries: Vec::new(),
        error: None,
    };
    match written {
        Ok(segment) => roster.entries.push(Entry {
            id: me,
            host: bulk::host_id().to_string(),
            segment,
            url,
        }),
        Err(e) => roster.error = Some(e),
    }
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
        .all(|e| e.host == bulk::host_id() && !e.segment.is_empty())
}

/// Steps 3 to 5: the reduce-scatter through the segments, the barrier, and
/// the allgather. `engines` is the roster, which [`all_shared`] allowed.
pub(super) fn reduce_shared<T: Elem>(
    comm: &RefCell<super::tree::Comm>,
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

    // 3. Reduce-scatter: slice `rank` of every engine's array, in order.
    let mine = slice(own.len(), n, rank);
    let mut barrier = Barrier { error: None };
    let mut acc: Vec<T> = Vec::new();
    let folded = (|| -> Result<(), String> {
        let mut c = comm.borrow_mut();
        let mut scratch = vec![T::default(); mine.len()];
        for (i, e) in engines.iter().enumerate() {
            let part: &[T] = if e.id == me {
                &own[mine.clone()]
            } else {
                let file = c.shared.peer(e.id, &e.segment)?;
                read_at(file, &mut scratch, mine.start, e.id)?;
                &scratch
            };
            if i == 0 {
                acc = part.to_vec();
            } else {
                for (a, x) in acc.iter_mut().zip(part) {
                    *a = fold(*a, *x);
                }
            }
        }
        let (_, file) = c
            .shared
            .own_segment(2 * bytes as u64)
            .map_err(|e| e.to_string())?;
        let at = (bytes + mine.start * std::mem::size_of::<T>()) as u64;
        file.write_all_at(bytemuck::cast_slice(&acc), at)
            .map_err(|e| format!("engine {me} could not write its slice: {e}"))
    })();
    if let Err(e) = folded {
        barrier.error = Some(e);
    }
    // 4. Every slice is written.
    round(comm, timeout, &mut barrier)?;

    // 5. Allgather: every engine's slice of the result.
    let mut out: Vec<T> = bulk::zeroed(own.len());
    let mut c = comm.borrow_mut();
    for (r, e) in engines.iter().enumerate() {
        let range = slice(own.len(), n, r);
        if e.id == me {
            out[range].copy_from_slice(&acc);
            continue;
        }
        let file = c.shared.peer(e.id, &e.segment).map_err(err)?;
        let start = range.start;
        read_at(file, &mut out[range], own.len() + start, e.id).map_err(err)?;
    }
    Ok(out)
}

/// Reads `out.len()` elements at element offset `at` of engine `id`'s file.
fn read_at<T: Elem>(file: &File, out: &mut [T], at: usize, id: u32) -> Result<(), String> {
    let offset = (at * std::mem::size_of::<T>()) as u64;
    file.read_exact_at(bytemuck::cast_slice_mut(out), offset)
        .map_err(|e| format!("could not read engine {id}'s shared segment: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_array_in_order() {
        for len in [0, 1, 2, 7, 8, 1000, 1001] {
            for n in 1..=8 {
                let mut next = 0;
                for r in 0..n {
                    let s = slice(len, n, r);
                    assert_eq!(s.start, next, "len {len}, n {n}, r {r}");
                    assert!(s.len() <= len / n + 1);
                    next = s.end;
                }
                assert_eq!(next, len);
            }
        }
    }
}
