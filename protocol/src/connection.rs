//! Connection files and profile folders.
//!
//! The hub writes `zpar-client.json` and `zpar-engine.json` (mode 0600,
//! atomically) into `<profile dir>/security/`. The profile dir is
//! `$ZPAR_DIR/profile_<name>` (default `~/.zpar/profile_default`), or any
//! folder given outright.

use crate::error::{ProtocolError, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the client connection file.
pub const CLIENT_FILE: &str = "zpar-client.json";
/// File name of the engine connection file.
pub const ENGINE_FILE: &str = "zpar-engine.json";

/// Where a client connects: every client-facing port of the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConnection {
    /// `tcp`.
    pub transport: String,
    /// The hub's address.
    pub ip: String,
    /// The HMAC key (empty: no signing).
    pub key: String,
    /// `hmac-sha256`.
    pub signature_scheme: String,
    /// Registration and queries (ROUTER).
    pub registration: u16,
    /// Direct requests (ROUTER).
    pub mux: u16,
    /// Load-balanced requests (ROUTER).
    pub task: u16,
    /// Control requests (ROUTER).
    pub control: u16,
    /// Output streams and results (PUB).
    pub iopub: u16,
    /// Engine joins and leaves (PUB).
    pub notification: u16,
    /// Heartbeat pings (PUB), `<hub instance>:<beat>`: clients watch them
    /// to notice a hub that is gone or restarted. Absent in files written
    /// by older hubs; a client then asks the hub itself now and then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hb_ping: Option<u16>,
}

/// Where an engine connects: every engine-facing port of the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConnection {
    /// `tcp`.
    pub transport: String,
    /// The hub's address.
    pub ip: String,
    /// The HMAC key (empty: no signing).
    pub key: String,
    /// `hmac-sha256`.
    pub signature_scheme: String,
    /// Registration (ROUTER).
    pub registration: u16,
    /// Heartbeat pings (PUB).
    pub hb_ping: u16,
    /// Heartbeat pongs (ROUTER).
    pub hb_pong: u16,
    /// Direct requests (ROUTER).
    pub mux: u16,
    /// Load-balanced requests (ROUTER).
    pub task: u16,
    /// Control requests (ROUTER).
    pub control: u16,
    /// Output streams and results (SUB on the hub).
    pub iopub: u16,
}

impl ClientConnection {
    /// The address of one of the hub's ports.
    pub fn url(&self, port: u16) -> String {
        format!("{}://{}:{}", self.transport, self.ip, port)
    }
}

impl EngineConnection {
    /// The address of one of the hub's ports.
    pub fn url(&self, port: u16) -> String {
        format!("{}://{}:{}", self.transport, self.ip, port)
    }
}

/// A profile folder: where connection files, pid files and history live.
///
/// ```
/// use zpar_protocol::Profile;
/// let p = Profile::from_dir("/tmp/zpar-doc-profile");
/// assert!(p.client_file().ends_with("security/zpar-client.json"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The profile's folder.
    pub dir: PathBuf,
}

impl Profile {
    /// The named profile under `$ZPAR_DIR` (default `~/.zpar`).
    pub fn named(name: &str) -> Profile {
        Profile {
            dir: zpar_dir().join(format!("profile_{name}")),
        }
    }

    /// A profile in a folder given outright.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Profile {
        Profile { dir: dir.into() }
    }

    /// The profile a command line picks: a folder if given, else a name if
    /// given, else `default`.
    pub fn resolve(name: Option<&str>, dir: Option<&Path>) -> Profile {
        match (dir, name) {
            (Some(d), _) => Profile::from_dir(d),
            (None, Some(n)) => Profile::named(n),
            (None, None) => Profile::named("default"),
        }
    }

    /// `<dir>/security`.
    pub fn security_dir(&self) -> PathBuf {
        self.dir.join("security")
    }

    /// The client connection file.
    pub fn client_file(&self) -> PathBuf {
        self.security_dir().join(CLIENT_FILE)
    }

    /// The engine connection file.
    pub fn engine_file(&self) -> PathBuf {
        self.security_dir().join(ENGINE_FILE)
    }
}

/// `$ZPAR_DIR`, or `~/.zpar`.
pub fn zpar_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ZPAR_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".zpar")
}

/// Writes `value` as JSON to `path` with mode 0600: to a temporary file in
/// the same folder first, then renamed over `path`, so a reader never sees a
/// half-written file.
pub fn write_json_file<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let io = |source| ProtocolError::ConnectionFileIo {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("zpar"),
        std::process::id()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io)?;
    let text = serde_json::to_vec_pretty(value).expect("connection info serializes");
    f.write_all(&text).and_then(|_| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads a JSON file; errors name the file and, for bad content, the field.
pub fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(|source| ProtocolError::ConnectionFileIo {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| ProtocolError::ConnectionFileFormat {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zpar-proto-{name}-{}", crate::header::new_id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample() -> ClientConnection {
        ClientConnection {
            transport: "tcp".into(),
            ip: "127.0.0.1".into(),
            key: "k".into(),
            signature_scheme: "hmac-sha256".into(),
            registration: 1,
            mux: 2,
            task: 3,
            control: 4,
            iopub: 5,
            notification: 6,
            hb_ping: Some(7),
        }
    }

    #[test]
    fn writes_0600_and_reads_back() {
        let dir = temp_dir("rw");
        let p = Profile::from_dir(&dir);
        write_json_file(&p.client_file(), &sample()).unwrap();
        let back: ClientConnection = read_json_file(&p.client_file()).unwrap();
        assert_eq!(back, sample());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(p.client_file())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A client file of a hub from before `hb_ping` still reads.
    #[test]
    fn a_client_file_without_hb_ping_reads() {
        let mut old = serde_json::to_value(sample()).unwrap();
        old.as_object_mut().unwrap().remove("hb_ping");
        let back: ClientConnection = serde_json::from_value(old).unwrap();
        assert_eq!(back.hb_ping, None);
        assert_eq!(back.notification, 6);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let dir = temp_dir("bad");
        let path = dir.join(CLIENT_FILE);
        std::fs::write(&path, br#"{"transport": "tcp", "ip": "127.0.0.1"}"#).unwrap();
        let e = read_json_file::<ClientConnection>(&path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(CLIENT_FILE) && e.contains("missing field `key`"),
            "{e}"
        );
        std::fs::write(&path, br#"{"transport": 5}"#).unwrap();
        let e = read_json_file::<ClientConnection>(&path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid type"), "{e}");
        let e = read_json_file::<ClientConnection>(&dir.join("nope.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.json"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn profiles_resolve() {
        let named = Profile::resolve(Some("x"), None);
        assert!(named.dir.ends_with("profile_x"));
        let dir = Profile::resolve(Some("x"), Some(Path::new("/d")));
        assert_eq!(dir.dir, PathBuf::from("/d"));
        assert!(Profile::resolve(None, None)
            .dir
            .ends_with("profile_default"));
    }
}
