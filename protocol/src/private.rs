//! Files at rest are private: the one rule for everything zpar keeps on disk.
//!
//! Every folder zpar creates is 0700 and every file 0600, whatever the
//! umask: profile folders, `security/` and `log/`, connection and pid files,
//! logs, the task database with its WAL and SHM files, the console history
//! — and whatever comes later (shared-memory segments, kernel connection
//! files) goes through these functions too. A folder or file of zpar's that
//! is already there but open to other users is tightened, with a warning
//! (the way ssh treats a loose key, except that zpar does not refuse to
//! start).
//!
//! - [`create_dir`]: a folder (and missing parents) 0700; an existing one
//!   tightened;
//! - [`create_file`]: a file 0600, truncated, for writing anew;
//! - [`touch`]: a file 0600 that keeps its contents (a database, a history);
//! - [`tighten`]: take group and other access off one path.
//!
//! The mode is set with `chmod` after creation, so neither a umask of 000
//! (which would leave a file 0666) nor an odd one such as 0277 (which would
//! leave it unwritable) changes the result. Folders that already exist above
//! the one asked for are not zpar's and are left alone.
//!
//! ```
//! use zpar_protocol::private;
//! let dir = std::env::temp_dir().join(format!("zpar-doc-private-{}", zpar_protocol::new_id()));
//! private::create_dir(&dir.join("security")).unwrap();
//! let mut f = private::create_file(&dir.join("security/secret.json")).unwrap();
//! std::io::Write::write_all(&mut f, b"{}").unwrap();
//! # #[cfg(unix)] {
//! use std::os::unix::fs::PermissionsExt;
//! let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
//! assert_eq!((mode("security"), mode("security/secret.json")), (0o700, 0o600));
//! # }
//! # std::fs::remove_dir_all(dir).unwrap();
//! ```

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use tracing::warn;

/// The mode of every folder zpar creates.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file zpar creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates the folder `path` 0700, with any missing parents (also 0700);
/// if it exists, tightens it (see [`tighten`]). Parents that already exist
/// are left as they are.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("zpar-doc-dir-{}", zpar_protocol::new_id()));
/// zpar_protocol::private::create_dir(&dir.join("a/b")).unwrap();
/// assert!(dir.join("a/b").is_dir());
/// # std::fs::remove_dir_all(dir).unwrap();
/// ```
pub fn create_dir(path: &Path) -> io::Result<()> {
    if !mkdir_all(path)? {
        tighten_or_warn(path);
    }
    Ok(())
}

/// Creates what is missing of `path`, each new folder 0700; whether `path`
/// itself was created.
fn mkdir_all(path: &Path) -> io::Result<bool> {
    if path.is_dir() {
        return Ok(false);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        mkdir_all(parent)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    match builder.create(path) {
        Ok(()) => {
            set_mode(path, DIR_MODE)?;
            Ok(true)
        }
        // Another process made it meanwhile (zpar makes its folders 0700).
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates (or truncates) the file `path` for writing, mode 0600. An
/// existing file that was open to others is tightened, with a warning.
/// The folder must exist.
///
/// ```
/// use std::io::Write;
/// let path = std::env::temp_dir().join(format!("zpar-doc-file-{}", zpar_protocol::new_id()));
/// zpar_protocol::private::create_file(&path).unwrap().write_all(b"hi").unwrap();
/// # std::fs::remove_file(path).unwrap();
/// ```
pub fn create_file(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    open_private(path, opts)
}

/// Makes sure the file `path` exists with mode 0600, keeping what is in it:
/// creates it empty if missing, tightens it (with a warning) if it was open
/// to others. For files another library writes (SQLite's database and its
/// `-wal` and `-shm` files, rustyline's history). The folder must exist.
///
/// ```
/// let path = std::env::temp_dir().join(format!("zpar-doc-touch-{}", zpar_protocol::new_id()));
/// std::fs::write(&path, b"kept").unwrap();
/// zpar_protocol::private::touch(&path).unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"kept");
/// # std::fs::remove_file(path).unwrap();
/// ```
pub fn touch(path: &Path) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.append(true).create(true);
    open_private(path, opts).map(drop)
}

fn open_private(path: &Path, mut opts: OpenOptions) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(FILE_MODE);
    }
    let file = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode() & 0o7777;
        if mode != FILE_MODE {
            // An odd umask took owner bits off a new file, or an old file
            // is open to others: both end at 0600.
            match file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE)) {
                Ok(()) if mode & 0o077 != 0 => warn_tightened(path, mode, FILE_MODE),
                Ok(()) => {}
                Err(e) if mode & 0o077 != 0 => warn_loose(path, mode, &e),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(file)
}

/// Takes group and other access off `path` (a folder 0755 becomes 0700, a
/// file 0644 becomes 0600) and logs a warning naming it; whether anything
/// changed. Follows symbolic links.
///
/// ```
/// # #[cfg(unix)] {
/// use std::os::unix::fs::PermissionsExt;
/// let path = std::env::temp_dir().join(format!("zpar-doc-tighten-{}", zpar_protocol::new_id()));
/// std::fs::write(&path, b"").unwrap();
/// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
/// assert!(zpar_protocol::private::tighten(&path).unwrap());
/// assert!(!zpar_protocol::private::tighten(&path).unwrap()); // already private
/// # std::fs::remove_file(path).unwrap();
/// # }
/// ```
pub fn tighten(path: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            return Ok(false);
        }
        let to = mode & 0o700;
        set_mode(path, to)?;
        warn_tightened(path, mode, to);
        Ok(true)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(false)
    }
}

/// [`tighten`], for paths that exist (when they do not, there is nothing to
/// tighten); a failure is a warning, never a reason not to start.
pub fn tighten_or_warn(path: &Path) {
    match tighten(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o7777);
                warn_loose(path, mode, &e);
            }
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

fn warn_tightened(path: &Path, was: u32, now: u32) {
    warn!(
        path = %path.display(),
        was = format_args!("{was:04o}"),
        now = format_args!("{now:04o}"),
        "tightened: it was open to other users (zpar keeps its folders 0700 and its files 0600)"
    );
}

fn warn_loose(path: &Path, mode: u32, e: &io::Error) {
    warn!(
        path = %path.display(),
        mode = format_args!("{mode:04o}"),
        error = %e,
        "open to other users and cannot be tightened: chmod go-rwx it yourself"
    );
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("zpar-private-{name}-{}", crate::header::new_id()))
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn new_folders_are_0700_parents_included() {
        let root = temp("dirs");
        std::fs::create_dir(&root).unwrap();
        chmod(&root, 0o755);
        create_dir(&root.join("a/b/c")).unwrap();
        for p in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&root.join(p)), 0o700, "{p}");
        }
        assert_eq!(mode(&root), 0o755, "a folder above, not created, stays");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn an_existing_loose_folder_is_tightened() {
        let root = temp("loose-dir");
        std::fs::create_dir(&root).unwrap();
        chmod(&root, 0o775);
        create_dir(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        chmod(&root, 0o711);
        assert!(tighten(&root).unwrap());
        assert_eq!(mode(&root), 0o700);
        assert!(!tighten(&root).unwrap(), "nothing left to tighten");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn new_files_are_0600_and_loose_ones_tightened() {
        let root = temp("files");
        create_dir(&root).unwrap();
        let f = root.join("f");
        std::io::Write::write_all(&mut create_file(&f).unwrap(), b"one").unwrap();
        assert_eq!(mode(&f), 0o600);
        chmod(&f, 0o666);
        std::io::Write::write_all(&mut create_file(&f).unwrap(), b"two").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"two", "create_file truncates");
        // An owner-only mode that is not 0600 (an odd umask) is set right too.
        chmod(&f, 0o400);
        touch(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn touch_creates_empty_and_keeps_contents() {
        let root = temp("touch");
        create_dir(&root).unwrap();
        let f = root.join("db-wal");
        touch(&f).unwrap();
        assert_eq!((mode(&f), std::fs::read(&f).unwrap().len()), (0o600, 0));
        std::fs::write(&f, b"records").unwrap();
        chmod(&f, 0o644);
        touch(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"records");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_missing_folder_is_an_error_for_files_and_nothing_to_tighten() {
        let root = temp("missing");
        let e = touch(&root.join("x")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(tighten(&root).unwrap_err().kind(), io::ErrorKind::NotFound);
        tighten_or_warn(&root); // quiet: nothing there
        assert!(!root.exists());
    }

    #[test]
    fn a_file_in_the_way_of_a_folder_is_an_error() {
        let root = temp("in-the-way");
        create_dir(&root).unwrap();
        std::fs::write(root.join("f"), b"").unwrap();
        assert!(create_dir(&root.join("f")).is_err());
        assert!(create_dir(&root.join("f/g")).is_err());
        std::fs::remove_dir_all(root).unwrap();
    }
}
