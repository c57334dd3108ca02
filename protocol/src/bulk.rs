//! Large values: buffers sized once, and shared-memory segments for engines
//! on the sender's own host.
//!
//! **Buffers sized once.** A received array is copied once, into a vector
//! allocated at its final size ([`zeroed`], [`with_capacity`]). A fresh
//! 128 MiB vector page-faults 32,768 times as it is first written; asking
//! the kernel for transparent huge pages on it (`madvise(MADV_HUGEPAGE)`,
//! which the default `madvise` mode of THP honours) cuts that to 64 faults.
//! Measured on the 2-core build machine, copying 128 MiB into a fresh vector
//! took 58–65 ms plain and 15–23 ms advised; below [`ADVISE_MIN_BYTES`] the
//! allocation comes from malloc's heap and is not advised.
//!
//! **Shared segments.** A value going to engines on the sender's host need
//! not cross the hub's sockets once per engine: the sender writes its bytes
//! once into a file in `/dev/shm` ([`Segment`]), the message carries only
//! the segment's name, offset and length (its JSON is signed as always), and
//! every engine reads its part straight from memory. Names are
//! `zpar-<pid>-<uuid>`: the sender's pid, so that segments left by a process
//! that died (`kill -9`) are found and removed by [`sweep_stale`], which
//! hubs, engines and clients call when they start. The sender removes a
//! request's segment once every target has answered; a reply's segment is
//! removed by the receiver after reading it, and by the engine that wrote
//! it if it is still there a minute later or when the engine stops.
//!
//! ```
//! use zpar_protocol::bulk::{self, Segment};
//! if bulk::available() {
//!     let seg = Segment::create(&[b"hello ", b"world"]).unwrap();
//!     let mut out = vec![0u8; 5];
//!     bulk::read_segment(seg.name(), 6, &mut out).unwrap();
//!     assert_eq!(&out, b"world");
//!     let path = seg.path().to_path_buf();
//!     drop(seg); // the owner removes it
//!     assert!(!path.exists());
//! }
//! ```

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where segments live.
pub const SHM_DIR: &str = "/dev/shm";

/// Every segment's name starts with this, then the owner's pid.
pub const SEGMENT_PREFIX: &str = "zpar-";

/// Arrays at least this large are allocated with the huge-page advice.
pub const ADVISE_MIN_BYTES: usize = 4 << 20;

/// Values whose bytes reach this go through a shared segment when every
/// target is on the sender's host. Below it the hub's sockets are as fast
/// and a segment's create, read and unlink cost more than they save (see
/// ARCHITECTURE.md, "Large values").
pub const SHARED_MIN_BYTES: usize = 1 << 20;

/// Reads of at least twice this many bytes are split over threads
/// ([`read_at`]).
pub const PARALLEL_PIECE_BYTES: usize = 8 << 20;

/// The cores this process may use, asked once (the standard library reads
/// the cgroup's quota on every call, tens of microseconds).
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Asks the kernel to back `bytes` with transparent huge pages. Only the
/// 2 MiB-aligned interior is advised; outside Linux it does nothing.
fn advise_huge(ptr: *mut u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (ptr as usize).div_ceil(HUGE) * HUGE;
        let end = (ptr as usize + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: [start, end) lies inside an allocation we own; the
            // advice changes how its pages are backed, never its contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}

/// A vector of `len` zeros, allocated once at its final size and, when
/// large, advised to huge pages before anything touches it.
///
/// ```
/// let v: Vec<f64> = zpar_protocol::bulk::zeroed(1 << 20);
/// assert_eq!(v.len(), 1 << 20);
/// assert!(v.iter().all(|x| *x == 0.0));
/// ```
pub fn zeroed<T: bytemuck::Zeroable + Clone>(len: usize) -> Vec<T> {
    // `vec![zero; n]` asks for zeroed memory: fresh pages nothing has
    // touched yet, so the advice is in time.
    let mut v = vec![T::zeroed(); len];
    let bytes = std::mem::size_of_val(v.as_slice());
    if bytes >= ADVISE_MIN_BYTES {
        advise_huge(v.as_mut_ptr().cast(), bytes);
    }
    v
}

/// A copy of `items` in a vector sized once and, when large, advised to
/// huge pages (see [`zeroed`]).
///
/// ```
/// let v = vec![1.5f64; 3];
/// assert_eq!(zpar_protocol::bulk::copy_of(&v), v);
/// ```
pub fn copy_of<T: bytemuck::Zeroable + Copy>(items: &[T]) -> Vec<T> {
    if std::mem::size_of_val(items) < ADVISE_MIN_BYTES {
        return items.to_vec();
    }
    let mut v = zeroed(items.len());
    v.copy_from_slice(items);
    v
}

/// An empty byte vector with room for `bytes`, advised like [`zeroed`].
pub fn with_capacity(bytes: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes);
    if bytes >= ADVISE_MIN_BYTES {
        advise_huge(v.as_mut_ptr(), bytes);
    }
    v
}

/// Whether shared segments can be used here (`/dev/shm` is a folder).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| cfg!(target_os = "linux") && Path::new(SHM_DIR).is_dir())
}

/// This boot of this machine (Linux's `boot_id`) and this `/dev/shm` (its
/// device and inode): a segment is only readable where the writer's host
/// id is the reader's own. Containers on one kernel share the boot id but
/// each has a `/dev/shm` of its own, so they are different hosts here.
pub fn host_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        #[cfg(unix)]
        let shm = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(SHM_DIR)
                .map(|m| format!("{}.{}", m.dev(), m.ino()))
                .unwrap_or_default()
        };
        #[cfg(not(unix))]
        let shm = String::new();
        format!("{boot}/{shm}")
    })
}

/// A shared segment this process wrote; the file is removed when the
/// segment is dropped.
#[derive(Debug)]
pub struct Segment {
    name: String,
    path: PathBuf,
    len: usize,
}

impl Segment {
    /// Writes `parts`, one after another, into a new segment (mode 0600).
    pub fn create(parts: &[&[u8]]) -> io::Result<Segment> {
        let name = format!(
            "{SEGMENT_PREFIX}{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let path = Path::new(SHM_DIR).join(&name);
        let len = parts.iter().map(|p| p.len()).sum();
        let segment = Segment { name, path, len };
        let mut file = crate::private::create_file(&segment.path)?;
        file.set_len(len as u64)?;
        for p in parts {
            file.write_all(p)?;
        }
        Ok(segment)
    }

    /// Writes each of `parts` into a segment of its own. Large writes run
    /// on one thread per core, each into its own files: a fresh segment's
    /// pages are allocated under that file's lock, so one file fills from
    /// one core at a time, but two fill at once (128 MiB on the 2-core
    /// build machine: 50 ms into one file, 27–40 ms into two halves).
    pub fn create_many(parts: &[&[u8]]) -> io::Result<Vec<Segment>> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total < 2 * PARALLEL_PIECE_BYTES {
            return parts.iter().map(|p| Segment::create(&[p])).collect();
        }
        let threads = cores()
            .min(parts.len())
            .min(total / PARALLEL_PIECE_BYTES)
            .max(1);
        if threads == 1 {
            return parts.iter().map(|p| Segment::create(&[p])).collect();
        }
        // Part k is written by thread k % threads.
        let written: Vec<io::Result<Vec<(usize, Segment)>>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        (t..parts.len())
                            .step_by(threads)
                            .map(|k| Ok((k, Segment::create(&[parts[k]])?)))
                            .collect::<io::Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a write thread panicked")))
                })
                .collect()
        });
        // Segments written before a failure are removed as they drop.
        let mut all = Vec::with_capacity(parts.len());
        for lot in written {
            all.extend(lot?);
        }
        all.sort_by_key(|(k, _)| *k);
        Ok(all.into_iter().map(|(_, seg)| seg).collect())
    }

    /// The name a message carries.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        remove_path(&self.path, self.len);
    }
}

/// Removes a segment's file. A large one is opened first and its name
/// removed at once (the file is gone from `/dev/shm` when this returns),
/// but the last close, which frees its pages (about 30 ms for 128 MiB on
/// the build machine), happens on the release thread ([`release`]).
fn remove_path(path: &Path, len: usize) {
    let held = (len >= ADVISE_MIN_BYTES)
        .then(|| File::open(path).ok())
        .flatten();
    let _ = std::fs::remove_file(path);
    if let Some(file) = held {
        release(file);
    }
}

/// Closes `file` on zpar's release thread, so that freeing a large
/// segment's pages is off the path of whoever waits for a reply. The
/// thread starts with the first release; if it cannot, the file is closed
/// here.
pub fn release(file: File) {
    use std::sync::mpsc::{channel, Sender};
    use std::sync::Mutex;
    static RELEASE: OnceLock<Option<Mutex<Sender<File>>>> = OnceLock::new();
    let sender = RELEASE.get_or_init(|| {
        let (tx, rx) = channel::<File>();
        std::thread::Builder::new()
            .name("zpar-release".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .ok()
            .map(|_| Mutex::new(tx))
    });
    if let Some(tx) = sender {
        if let Err(back) = tx.lock().expect("release lock").send(file) {
            drop(back.0);
        }
    }
}

/// Reads `out.len()` bytes at `offset` of `file`. Large reads are split
/// into pieces read by one thread per core at once: a fresh destination's
/// page faults and the copy then run on every core (on the 2-core build
/// machine a 128 MiB read into a fresh vector took 20–24 ms so, 38–40 ms
/// from one thread).
pub fn read_at(file: &File, offset: usize, out: &mut [u8]) -> io::Result<()> {
    read_many(&mut [(file, offset, out)])
}

/// Cuts `out` into one destination per source `(file, offset, bytes)`, in
/// order, as [`read_many`] takes them. The sources' bytes must add up to
/// `out.len()`.
pub fn destinations<'a>(
    out: &'a mut [u8],
    sources: &[(&'a File, usize, usize)],
) -> Vec<(&'a File, usize, &'a mut [u8])> {
    let mut rest = out;
    let mut jobs = Vec::with_capacity(sources.len());
    for (file, offset, bytes) in sources {
        let (here, tail) = std::mem::take(&mut rest).split_at_mut(*bytes);
        jobs.push((*file, *offset, here));
        rest = tail;
    }
    jobs
}

/// Reads each `(file, offset, destination)` at once: one thread per core
/// (one per [`PARALLEL_PIECE_BYTES`] of the total at most), taking 4 MiB
/// pieces in turn until none is left (see [`read_at`]).
pub fn read_many(jobs: &mut [(&File, usize, &mut [u8])]) -> io::Result<()> {
    read_sharing(jobs, 1)
}

/// [`read_many`] by a reader that is one of `readers` reading at once on
/// this host (the engines a value was pushed to): each takes its share of
/// the cores, since more threads than cores only add contention.
pub fn read_sharing(jobs: &mut [(&File, usize, &mut [u8])], readers: usize) -> io::Result<()> {
    let total: usize = jobs.iter().map(|j| j.2.len()).sum();
    let threads = if total < 2 * PARALLEL_PIECE_BYTES {
        1
    } else {
        cores() / readers.max(1)
    }
    .min(total / PARALLEL_PIECE_BYTES)
    .max(1);
    if threads == 1 {
        for (file, offset, out) in jobs.iter_mut() {
            file.read_exact_at(out, *offset as u64)?;
        }
        return Ok(());
    }
    // Pieces handed out one at a time: a thread the scheduler holds back
    // (the machine is shared) takes fewer, instead of the others waiting
    // for its fixed share.
    let mut pieces: Vec<(&File, u64, &mut [u8])> = Vec::new();
    for (file, offset, out) in jobs.iter_mut() {
        let mut at = *offset as u64;
        for piece in out.chunks_mut(READ_PIECE_BYTES) {
            let len = piece.len() as u64;
            pieces.push((*file, at, piece));
            at += len;
        }
    }
    let queue = std::sync::Mutex::new(pieces.into_iter());
    let work = || -> io::Result<()> {
        loop {
            let next = queue.lock().expect("read queue lock").next();
            match next {
                Some((file, at, piece)) => file.read_exact_at(piece, at)?,
                None => return Ok(()),
            }
        }
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mine = work();
        helpers
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a read thread panicked")))
            })
            .fold(mine, |all, one| all.and(one))
    })
}

/// The piece of a parallel read a thread takes at a time.
const READ_PIECE_BYTES: usize = 4 << 20;

/// A segment a receiver opened and took the name of: the file is gone from
/// `/dev/shm` (nothing is left behind whatever happens next), and its bytes
/// stay readable through this handle until it is dropped, when its pages
/// are freed on the release thread. A client keeps a result this way and
/// reads it where the caller wants it, once it is asked for.
#[derive(Debug)]
pub struct Detached {
    file: Option<File>,
    offset: usize,
    len: usize,
}

impl Detached {
    /// Opens the segment `name`, checks it holds `len` bytes at `offset`,
    /// and removes its name.
    pub fn open(name: &str, offset: usize, len: usize) -> io::Result<Detached> {
        let file = open_segment(name)?;
        check_range(name, &file, offset, len)?;
        let _ = std::fs::remove_file(Path::new(SHM_DIR).join(name));
        DETACHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Detached {
            file: Some(file),
            offset,
            len,
        })
    }

    /// How many bytes it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file, the offset of its bytes, and their length.
    pub fn source(&self) -> (&File, usize, usize) {
        (
            self.file.as_ref().expect("open until dropped"),
            self.offset,
            self.len,
        )
    }

    /// Reads its bytes into `out` (whose length is [`len`](Self::len)).
    pub fn read_into(&self, out: &mut [u8]) -> io::Result<()> {
        let (file, offset, _) = self.source();
        read_at(file, offset, out)
    }
}

/// How many [`Detached`] segments this process holds open.
static DETACHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many [`Detached`] segments this process holds open now (each holds a
/// file descriptor: a receiver reads at once instead past some number).
pub fn detached_count() -> usize {
    DETACHED.load(std::sync::atomic::Ordering::Relaxed)
}

impl Drop for Detached {
    fn drop(&mut self) {
        DETACHED.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(file) = self.file.take() {
            if self.len >= ADVISE_MIN_BYTES {
                release(file);
            }
        }
    }
}

/// Whether `name` is a segment name (and so never a path elsewhere).
pub fn is_segment_name(name: &str) -> bool {
    owner_pid(name).is_some() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The pid in a segment's name.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(SEGMENT_PREFIX)?;
    let (pid, id) = rest.split_once('-')?;
    (!id.is_empty()).then_some(())?;
    pid.parse().ok()
}

/// Checks that the segment `name` exists and holds `bytes` bytes at
/// `offset`, before a receiver allocates room for them.
pub fn check_segment(name: &str, offset: usize, bytes: usize) -> io::Result<()> {
    let file = open_segment(name)?;
    check_range(name, &file, offset, bytes)
}

fn open_segment(name: &str) -> io::Result<File> {
    if !is_segment_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a zpar shared segment name"),
        ));
    }
    File::open(Path::new(SHM_DIR).join(name)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("shared segment {name} could not be opened ({e}); it is gone if its writer died or already removed it"),
        )
    })
}

fn check_range(name: &str, file: &File, offset: usize, bytes: usize) -> io::Result<()> {
    let size = file.metadata()?.len();
    let end = offset as u64 + bytes as u64;
    if end > size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "shared segment {name} holds {size} bytes, but bytes up to {end} were asked for"
            ),
        ));
    }
    Ok(())
}

/// Opens the segment `name` to read `bytes` bytes at `offset`, after
/// checking it holds them.
pub fn open_range(name: &str, offset: usize, bytes: usize) -> io::Result<File> {
    let file = open_segment(name)?;
    check_range(name, &file, offset, bytes)?;
    Ok(file)
}

/// Cuts `bytes` into one piece per core when it is large enough for
/// parallel writes to pay ([`Segment::create_many`]); else one piece.
pub fn pieces_for_writing(bytes: &[u8]) -> Vec<&[u8]> {
    if bytes.len() < 2 * PARALLEL_PIECE_BYTES {
        return vec![bytes];
    }
    let count = cores().min(bytes.len() / PARALLEL_PIECE_BYTES).max(1);
    // Pieces of a multiple of 8 bytes, so no element is cut (a reader
    // does not need it, but a person reading a segment might).
    let piece = bytes.len().div_ceil(count).div_ceil(8) * 8;
    bytes.chunks(piece.max(1)).collect()
}

/// Reads `out.len()` bytes at `offset` of the segment `name` (large reads
/// on every core, see [`read_at`]).
pub fn read_segment(name: &str, offset: usize, out: &mut [u8]) -> io::Result<()> {
    let file = open_segment(name)?;
    check_range(name, &file, offset, out.len())?;
    read_at(&file, offset, out)
}

/// Removes the segment `name` (a receiver's, after reading it); a large
/// one's pages are freed on the release thread.
pub fn remove_segment(name: &str) {
    if is_segment_name(name) {
        remove_path(&Path::new(SHM_DIR).join(name), ADVISE_MIN_BYTES);
    }
}

/// Removes segments whose owner process is gone. Returns how many.
pub fn sweep_stale() -> usize {
    if !available() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(SHM_DIR) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::remove_file(entry.path()).is_ok()
        {
            tracing::debug!(segment = ?name, pid, "removed a segment its dead owner left");
            removed += 1;
        }
    }
    removed
}

/// The names of this process's segments still in `/dev/shm`.
pub fn own_segments() -> Vec<String> {
    segments_of(std::process::id())
}

/// The names of `pid`'s segments in `/dev/shm`.
pub fn segments_of(pid: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(SHM_DIR) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| owner_pid(n) == Some(pid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(is_segment_name("zpar-12-abc0"));
        for bad in [
            "zpar-12-",
            "zpar-x-abc",
            "zpar-12-../../etc",
            "other-1-a",
            "zpar-1-a/b",
        ] {
            assert!(!is_segment_name(bad), "{bad}");
        }
        let mut out = [0u8; 1];
        assert!(read_segment("../etc/passwd", 0, &mut out).is_err());
    }

    #[test]
    fn segments_round_trip_and_refuse_reads_past_their_end() {
        if !available() {
            return eprintln!("skipped: no /dev/shm");
        }
        let seg = Segment::create(&[&[1, 2, 3], &[4]]).unwrap();
        assert_eq!(seg.len(), 4);
        let mut out = [0u8; 2];
        read_segment(seg.name(), 2, &mut out).unwrap();
        assert_eq!(out, [3, 4]);
        let e = read_segment(seg.name(), 3, &mut out).unwrap_err();
        assert!(e.to_string().contains("holds 4 bytes"), "{e}");
        let name = seg.name().to_string();
        drop(seg);
        let e = read_segment(&name, 0, &mut out).unwrap_err();
        assert!(e.to_string().contains("could not be opened"), "{e}");
    }

    #[test]
    fn sweep_removes_segments_of_dead_owners_only() {
        if !available() {
            return eprintln!("skipped: no /dev/shm");
        }
        // A pid that is not running: a child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = Path::new(SHM_DIR).join(format!("{SEGMENT_PREFIX}{dead}-0feed"));
        std::fs::write(&stale, b"left behind").unwrap();
        let mine = Segment::create(&[b"alive"]).unwrap();
        sweep_stale();
        assert!(!stale.exists(), "a dead owner's segment is swept");
        assert!(mine.path().exists(), "a live owner's segment stays");
    }

    #[test]
    fn reads_split_over_threads_land_byte_exact_across_jobs() {
        if !available() {
            return eprintln!("skipped: no /dev/shm");
        }
        // Three segments, read at offsets into one buffer; their total is
        // more than two pieces, so the work is cut across job boundaries.
        let pattern = |seed: usize, n: usize| -> Vec<u8> {
            (0..n).map(|i| ((i * 131 + seed) % 253) as u8).collect()
        };
        let sizes = [PARALLEL_PIECE_BYTES * 2 + 3, 5, PARALLEL_PIECE_BYTES + 1];
        let segments: Vec<Segment> = sizes
            .iter()
            .enumerate()
            .map(|(k, n)| Segment::create(&[&[7; 9], &pattern(k, *n)]).unwrap())
            .collect();
        let files: Vec<File> = segments
            .iter()
            .map(|s| File::open(s.path()).unwrap())
            .collect();
        let mut out = vec![0u8; sizes.iter().sum()];
        let mut rest = out.as_mut_slice();
        let mut jobs = Vec::new();
        for (file, n) in files.iter().zip(sizes) {
            let (here, tail) = std::mem::take(&mut rest).split_at_mut(n);
            jobs.push((file, 9, here));
            rest = tail;
        }
        read_many(&mut jobs).unwrap();
        let expected: Vec<u8> = sizes
            .iter()
            .enumerate()
            .flat_map(|(k, n)| pattern(k, *n))
            .collect();
        assert!(out == expected, "the pieces landed out of place");
        // A read past a segment's end fails, whichever thread does it.
        let mut past = vec![0u8; sizes[0] + 1];
        assert!(read_at(&files[0], 9, &mut past).is_err());
    }

    #[test]
    fn detached_segments_are_gone_by_name_and_still_readable() {
        if !available() {
            return eprintln!("skipped: no /dev/shm");
        }
        let bytes: Vec<u8> = (0..ADVISE_MIN_BYTES + 5).map(|i| (i % 241) as u8).collect();
        let seg = Segment::create(&[b"head", &bytes]).unwrap();
        let (name, path) = (seg.name().to_string(), seg.path().to_path_buf());
        std::mem::forget(seg); // a receiver takes it over
        let before = detached_count();
        let held = Detached::open(&name, 4, bytes.len()).unwrap();
        assert!(!path.exists(), "the name is removed at once");
        assert_eq!(detached_count(), before + 1);
        let mut out = vec![0u8; held.len()];
        held.read_into(&mut out).unwrap();
        assert!(out == bytes);
        drop(held);
        assert_eq!(detached_count(), before);
        let e = Detached::open(&name, 0, 1).unwrap_err();
        assert!(e.to_string().contains("could not be opened"), "{e}");
    }

    #[test]
    fn zeroed_vectors_are_zero_at_every_size() {
        for len in [
            0usize,
            1,
            ADVISE_MIN_BYTES / 8 - 1,
            ADVISE_MIN_BYTES / 8 + 3,
        ] {
            let v: Vec<f64> = zeroed(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|x| *x == 0.0));
        }
        let mut b = with_capacity(ADVISE_MIN_BYTES + 1);
        b.extend_from_slice(&[9; 10]);
        assert_eq!(b, vec![9; 10]);
    }
}
