//! The shared-memory segments of a communicator: its own (its array, its
//! slice of a result), mapped and kept for the communicator's life, grown as
//! needed, removed when it is dropped (and swept by pid after a `kill -9`);
//! and its peers', mapped on demand. The allreduce that uses them is in
//! [`super::shared_allreduce`].

use std::fs::File;
use std::path::PathBuf;
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

/// A file mapped into this process's memory (`mmap`, shared): reading and
/// writing it is reading and writing memory, with no system call per page
/// as `pread` and `pwrite` on `/dev/shm` cost.
pub(super) struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// Maps the first `len` bytes of `file` (which holds at least that
    /// many), for reading, or also writing.
    #[cfg(target_os = "linux")]
    fn new(file: &File, len: usize, writable: bool) -> std::io::Result<Mapping> {
        use std::os::fd::AsRawFd;
        if len == 0 {
            return Ok(Mapping {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len,
            });
        }
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: a fresh mapping of an open file, nowhere else in this
        // process; a failure comes back as MAP_FAILED and is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn new(_file: &File, _len: usize, _writable: bool) -> std::io::Result<Mapping> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "shared-memory collectives need Linux",
        ))
    }

    /// `n` elements at element `at`.
    ///
    /// # Panics
    /// If they lie outside the mapping (callers check sizes first).
    pub(super) fn elems<T: bytemuck::Pod>(&self, at: usize, n: usize) -> &[T] {
        let size = std::mem::size_of::<T>();
        assert!((at + n) * size <= self.len, "a read past a mapping's end");
        // SAFETY: inside the mapping (checked), which is page-aligned, so
        // `at * size` keeps `T`'s alignment; any bytes are a valid `T`
        // (`Pod`). The protocol's barriers keep writers out while it is read.
        unsafe { std::slice::from_raw_parts(self.ptr.add(at * size).cast::<T>(), n) }
    }

    /// `n` elements at element `at`, to write.
    ///
    /// # Panics
    /// As [`Mapping::elems`].
    pub(super) fn elems_mut<T: bytemuck::Pod>(&mut self, at: usize, n: usize) -> &mut [T] {
        let size = std::mem::size_of::<T>();
        assert!((at + n) * size <= self.len, "a write past a mapping's end");
        // SAFETY: as in `elems`; the mapping is writable (this engine's own)
        // and borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at * size).cast::<T>(), n) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if self.len > 0 {
            // SAFETY: the mapping this value made; nothing borrows it now.
            unsafe {
                libc::munmap(self.ptr.cast(), self.len);
            }
        }
    }
}

/// Which of this engine's segments: each use has its own, so one call's
/// readers never meet the next call's writer of another kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// A named allreduce's array.
    Named = 0,
    /// A script allreduce's part, read by the parent.
    Up = 1,
    /// A script allreduce's result, read by every engine (the root's).
    Down = 2,
    /// A named allreduce's result: this engine's slice, at its place. Apart
    /// from the array, so a next call's larger array cannot reach it.
    Result = 3,
}

/// This engine's segment.
pub(super) struct OwnSegment {
    pub(super) name: String,
    file: File,
    pub(super) map: Mapping,
}

/// A communicator's shared-memory state.
pub(super) struct SharedArea {
    /// Whether the script allows the path (`com.shared_memory`).
    pub(super) allowed: bool,
    /// This engine's segments, mapped, by [`Slot`].
    own: [Option<OwnSegment>; 4],
    /// Whether every engine is on this host; learned at the first call.
    pub(super) same_host: Option<bool>,
    /// The other engines' segments, opened and mapped once, by name.
    peers: Vec<(String, File, Mapping)>,
}

impl Default for SharedArea {
    fn default() -> SharedArea {
        SharedArea {
            allowed: true,
            own: [None, None, None, None],
            same_host: None,
            peers: Vec::new(),
        }
    }
}

impl Drop for SharedArea {
    fn drop(&mut self) {
        for own in self.own.iter().flatten() {
            bulk::remove_segment(&own.name);
        }
    }
}

impl SharedArea {
    /// Whether this engine offers its array through shared memory.
    pub(super) fn offers(&self) -> bool {
        self.allowed && self.same_host != Some(false) && enabled()
    }

    /// This engine's segment, at least `bytes` long (created or grown), and
    /// its name.
    pub(super) fn own_segment(
        &mut self,
        slot: Slot,
        bytes: usize,
    ) -> std::io::Result<&mut OwnSegment> {
        let own = &mut self.own[slot as usize];
        if own.is_none() {
            let name = format!(
                "{}{}-{}",
                bulk::SEGMENT_PREFIX,
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            );
            let path = segment_path(&name);
            drop(zpar_protocol::private::create_file(&path)?);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)?;
            let map = Mapping::new(&file, 0, true)?;
            *own = Some(OwnSegment { name, file, map });
        }
        let own = own.as_mut().expect("just made");
        if own.map.len < bytes {
            own.file.set_len(bytes as u64)?;
            reserve(&own.file, bytes)?;
            own.map = Mapping::new(&own.file, bytes, true)?;
        }
        Ok(own)
    }

    /// The segment of engine `id` called `name`, mapped with at least
    /// `bytes` bytes.
    pub(super) fn peer(&mut self, id: u32, name: &str, bytes: usize) -> Result<&Mapping, String> {
        let i = match self.peers.iter().position(|(n, _, _)| n == name) {
            Some(i) => i,
            None => {
                if !bulk::is_segment_name(name) {
                    return Err(format!(
                        "engine {id} named {name:?} as its segment, which is not a zpar segment name"
                    ));
                }
                let file = File::open(segment_path(name)).map_err(|e| {
                    format!("engine {id}'s shared segment {name} could not be opened: {e}")
                })?;
                let map = Mapping::new(&file, 0, false).map_err(|e| e.to_string())?;
                self.peers.push((name.to_string(), file, map));
                self.peers.len() - 1
            }
        };
        let (_, file, map) = &mut self.peers[i];
        if map.len < bytes {
            let size = file.metadata().map_err(|e| e.to_string())?.len() as usize;
            if size < bytes {
                return Err(format!(
                    "engine {id}'s shared segment {name} holds {size} bytes, not the {bytes} its array needs"
                ));
            }
            *map = Mapping::new(file, size, false).map_err(|e| {
                format!("engine {id}'s shared segment {name} could not be mapped: {e}")
            })?;
        }
        Ok(&self.peers[i].2)
    }
}

/// Gives `file`'s first `bytes` bytes their memory now. A mapped write to
/// a page `/dev/shm` has no room for kills the process (`SIGBUS`); reserved
/// up front, a full `/dev/shm` is an error the call reports instead.
fn reserve(file: &File, bytes: usize) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: plain system call on an open file descriptor.
        let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, bytes as libc::off_t) };
        if code != 0 {
            let e = std::io::Error::from_raw_os_error(code);
            return Err(std::io::Error::new(
                e.kind(),
                format!("{bytes} bytes of shared memory (/dev/shm) could not be reserved: {e}"),
            ));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, bytes);
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_too_large_for_shared_memory_is_an_error_not_a_crash() {
        if !bulk::available() {
            return;
        }
        let mut area = SharedArea::default();
        // Far beyond any /dev/shm: refused up front, so no mapped write can
        // ever meet a page without memory.
        let e = area.own_segment(Slot::Up, 1 << 50).err().expect("refused");
        assert!(!e.to_string().is_empty());
        let seg = area
            .own_segment(Slot::Up, 1 << 16)
            .expect("a small one fits");
        seg.map.elems_mut::<u64>(0, 8).copy_from_slice(&[7; 8]);
        let path = segment_path(&seg.name);
        assert!(path.exists());
        drop(area);
        assert!(!path.exists(), "the segment outlived its communicator");
    }

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
