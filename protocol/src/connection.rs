//! Connection files and profile folders.
//!
//! The hub writes `zpar-client.json` and `zpar-engine.json` (mode 0600,
//! atomically) into `<profile dir>/security/`. The profile dir is
//! `$ZPAR_DIR/profile_<name>` (default `~/.zpar/profile_default`), or any
//! folder given outright. Like everything zpar keeps on disk, the profile's
//! folders are 0700 and its files 0600 ([`crate::private`]).

use crate::curve::CurveKeys;
use crate::error::{ProtocolError, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the client connection file.
pub const CLIENT_FILE: &str = "zpar-client.json";
/// File name of the engine connection file.
pub const ENGINE_FILE: &str = "zpar-engine.json";
/// File name of the pid file `zpar cluster start` leaves in the profile.
pub const PID_FILE: &str = "cluster.json";
/// File name of the console's input history in the profile.
pub const HISTORY_FILE: &str = "console_history";

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
    /// The hub's CURVE public key, Z85 (jupyter_client's field name).
    /// Absent when the hub runs without CURVE; then nothing is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve_publickey: Option<String>,
    /// The hub's CURVE secret key, Z85. Peers use the file's pair as their
    /// own CURVE client keys, as jupyter_client does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve_secretkey: Option<String>,
}

/// Where an engine connects: the hub's two engine-facing ports. An engine
/// holds one connection to each: its link and its heartbeat.
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
    /// The engine's link (ROUTER): registration, the requests and replies
    /// of every channel, and the engine's output, each message after a
    /// tag frame saying what it is ([`crate::contract::LinkTag`]).
    pub link: u16,
    /// Heartbeat (ROUTER): the hub's pings and the engine's pongs.
    pub heartbeat: u16,
    /// The hub's CURVE public key, Z85 (jupyter_client's field name).
    /// Absent when the hub runs without CURVE; then nothing is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve_publickey: Option<String>,
    /// The hub's CURVE secret key, Z85. Peers use the file's pair as their
    /// own CURVE client keys, as jupyter_client does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve_secretkey: Option<String>,
}

impl ClientConnection {
    /// The address of one of the hub's ports.
    pub fn url(&self, port: u16) -> String {
        format!("{}://{}:{}", self.transport, self.ip, port)
    }

    /// The hub's CURVE keys, checked ([`CurveKeys::from_fields`]); None
    /// when the file has neither field (a hub without CURVE).
    pub fn curve(&self) -> Result<Option<CurveKeys>> {
        CurveKeys::from_fields(
            self.curve_publickey.as_deref(),
            self.curve_secretkey.as_deref(),
        )
    }
}

impl EngineConnection {
    /// The address of one of the hub's ports.
    pub fn url(&self, port: u16) -> String {
        format!("{}://{}:{}", self.transport, self.ip, port)
    }

    /// The hub's CURVE keys, checked ([`CurveKeys::from_fields`]); None
    /// when the file has neither field (a hub without CURVE).
    pub fn curve(&self) -> Result<Option<CurveKeys>> {
        CurveKeys::from_fields(
            self.curve_publickey.as_deref(),
            self.curve_secretkey.as_deref(),
        )
    }
}

/// Reads a connection file and checks its CURVE keys, so a truncated or
/// garbled key is an error naming the file and the field before anything
/// connects.
///
/// ```
/// use zpar_protocol::connection::{read_connection_file, write_json_file};
/// use zpar_protocol::EngineConnection;
/// let dir = std::env::temp_dir().join(format!("zpar-doc-conn-{}", zpar_protocol::new_id()));
/// let path = dir.join("zpar-engine.json");
/// let text = r#"{"transport": "tcp", "ip": "127.0.0.1", "key": "k", "signature_scheme": "hmac-sha256",
///   "link": 1, "heartbeat": 2,
///   "curve_publickey": "truncated", "curve_secretkey": "truncated"}"#;
/// let conn: EngineConnection = serde_json::from_str(text).unwrap();
/// write_json_file(&path, &conn).unwrap();
/// let e = read_connection_file::<EngineConnection>(&path).unwrap_err().to_string();
/// assert!(e.contains("zpar-engine.json") && e.contains("curve_publickey has 9 characters"), "{e}");
/// # std::fs::remove_dir_all(dir).unwrap();
/// ```
pub fn read_connection_file<T>(path: &Path) -> Result<T>
where
    T: serde::de::DeserializeOwned + HasCurveKeys,
{
    let conn: T = read_json_file(path)?;
    conn.curve_keys().map_err(|e| e.in_file(path))?;
    Ok(conn)
}

/// A connection (client or engine) that may carry the hub's CURVE keys.
pub trait HasCurveKeys {
    /// The keys, checked; None without CURVE.
    fn curve_keys(&self) -> Result<Option<CurveKeys>>;
}

impl HasCurveKeys for ClientConnection {
    fn curve_keys(&self) -> Result<Option<CurveKeys>> {
        self.curve()
    }
}

impl HasCurveKeys for EngineConnection {
    fn curve_keys(&self) -> Result<Option<CurveKeys>> {
        self.curve()
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

    /// `<dir>/log`, where a daemon cluster's processes write.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Makes the profile folder and `security/` (0700, with any missing
    /// parents), and tightens what an earlier run left open to other users
    /// — the folders, `log/`, the files in `security/` and `log/`, the pid
    /// file and the console history — each with a warning. Files in the
    /// profile folder that are not zpar's are left alone.
    ///
    /// ```
    /// use zpar_protocol::Profile;
    /// let dir = std::env::temp_dir().join(format!("zpar-doc-prof-{}", zpar_protocol::new_id()));
    /// let p = Profile::from_dir(&dir);
    /// p.create().unwrap();
    /// assert!(p.security_dir().is_dir());
    /// # std::fs::remove_dir_all(dir).unwrap();
    /// ```
    pub fn create(&self) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ProtocolError::ProfileIo { path, source }
        };
        crate::private::create_dir(&self.dir).map_err(io(&self.dir))?;
        let security = self.security_dir();
        crate::private::create_dir(&security).map_err(io(&security))?;
        let log = self.log_dir();
        crate::private::tighten_or_warn(&log);
        for folder in [&security, &log] {
            for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    crate::private::tighten_or_warn(&entry.path());
                }
            }
        }
        for name in [PID_FILE, HISTORY_FILE] {
            crate::private::tighten_or_warn(&self.dir.join(name));
        }
        Ok(())
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
/// half-written file. A missing folder is made 0700 ([`crate::private`]).
pub fn write_json_file<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::private::create_dir(dir).map_err(|source| ProtocolError::ConnectionFileIo {
        path: path.to_path_buf(),
        source,
    })?;
    write_json_file_in(path, value)
}

/// Like [`write_json_file`], into a folder that is not zpar's (one a user
/// named, `/tmp`, Jupyter's runtime folder): the file is 0600 and written
/// atomically, and the folder, which must exist, is left as it is.
///
/// ```
/// let path = std::env::temp_dir().join(format!("zpar-doc-in-{}.json", zpar_protocol::new_id()));
/// zpar_protocol::connection::write_json_file_in(&path, &[1, 2]).unwrap();
/// assert_eq!(std::fs::read_to_string(&path).unwrap().split_whitespace().collect::<String>(), "[1,2]");
/// # std::fs::remove_file(path).unwrap();
/// ```
pub fn write_json_file_in<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let io = |source| ProtocolError::ConnectionFileIo {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("zpar"),
        std::process::id()
    ));
    let mut f = crate::private::create_file(&tmp).map_err(io)?;
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
            curve_publickey: None,
            curve_secretkey: None,
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

    /// A profile left open by an older zpar (or a umask of 022) is
    /// tightened; files in it that are not zpar's are left alone.
    #[cfg(unix)]
    #[test]
    fn a_loose_profile_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("loose");
        let p = Profile::from_dir(&dir);
        let chmod = |path: &Path, m: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        std::fs::create_dir_all(p.security_dir()).unwrap();
        std::fs::create_dir_all(p.log_dir()).unwrap();
        let files = [
            p.client_file(),
            p.log_dir().join("hub.log"),
            dir.join(PID_FILE),
            dir.join(HISTORY_FILE),
        ];
        for f in &files {
            std::fs::write(f, b"x").unwrap();
            chmod(f, 0o644);
        }
        std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
        chmod(&dir.join("notes.txt"), 0o644);
        for d in [&dir, &p.security_dir(), &p.log_dir()] {
            chmod(d, 0o755);
        }
        p.create().unwrap();
        for d in [&dir, &p.security_dir(), &p.log_dir()] {
            assert_eq!(mode(d), 0o700, "{}", d.display());
        }
        for f in &files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
        assert_eq!(mode(&dir.join("notes.txt")), 0o644, "not zpar's");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_new_profile_is_0700() {
        let dir = temp_dir("new").join("deeper/profile_x");
        let p = Profile::from_dir(&dir);
        p.create().unwrap();
        write_json_file(&dir.join(PID_FILE), &[1, 2]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(
                mode(&dir.join("..")),
                0o700,
                "a missing parent, made by zpar"
            );
            assert_eq!(mode(&p.security_dir()), 0o700);
            assert_eq!(mode(&dir.join(PID_FILE)), 0o600);
            assert!(!p.log_dir().exists(), "log/ is made when a daemon needs it");
        }
        std::fs::remove_dir_all(dir.parent().unwrap().parent().unwrap()).unwrap();
    }

    /// The hub's keys travel in jupyter_client's field names and are
    /// checked when a file is read for connecting.
    #[test]
    fn curve_keys_are_written_under_jupyters_names_and_checked_on_read() {
        let dir = temp_dir("curve");
        let path = dir.join(CLIENT_FILE);
        let keys = CurveKeys::generate().unwrap();
        let mut conn = sample();
        conn.curve_publickey = Some(keys.public().into());
        conn.curve_secretkey = Some(keys.secret().into());
        write_json_file(&path, &conn).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["curve_publickey"], keys.public());
        assert_eq!(json["curve_secretkey"], keys.secret());
        let back: ClientConnection = read_connection_file(&path).unwrap();
        assert_eq!(back.curve().unwrap(), Some(keys.clone()));

        conn.curve_secretkey = Some(CurveKeys::generate().unwrap().secret().into());
        write_json_file(&path, &conn).unwrap();
        let e = read_connection_file::<ClientConnection>(&path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(CLIENT_FILE) && e.contains("curve_publickey is not the public half"),
            "{e}"
        );
        // Without CURVE the fields are left out, as before.
        let plain = serde_json::to_value(sample()).unwrap();
        assert!(plain.get("curve_publickey").is_none());
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
            .map_err(|e| crate::error::Chain(&e).to_string())
            .unwrap_err();
        assert!(
            e.contains(CLIENT_FILE) && e.contains("missing field `key`"),
            "{e}"
        );
        std::fs::write(&path, br#"{"transport": 5}"#).unwrap();
        let e = read_json_file::<ClientConnection>(&path)
            .map_err(|e| crate::error::Chain(&e).to_string())
            .unwrap_err();
        assert!(e.contains("invalid type"), "{e}");
        let e = read_json_file::<ClientConnection>(&dir.join("nope.json"))
            .map_err(|e| crate::error::Chain(&e).to_string())
            .unwrap_err();
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
