//! A standalone kernel: an engine with no hub, listening where a Jupyter
//! connection file says — what a kernelspec written by `zpar kernel
//! install` starts (`zpar kernel -f {connection_file}`).
//!
//! Jupyter writes the file and removes it; given a file that does not exist
//! yet, the kernel picks random ports on 127.0.0.1 and a fresh key, writes
//! it (0600) and removes it on exit, so `zpar kernel -f k.json` and
//! `jupyter console --existing k.json` also work by hand.

use super::plan::{KernelError, KernelPlan};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use zpar_protocol::{new_id, KernelConnection};

/// A hook called once the kernel listens, with where (to print it, say).
pub type ReadyHook = Box<dyn Fn(&KernelConnection, &Path)>;

/// How to run a standalone kernel.
pub struct KernelConfig {
    /// Jupyter's connection file; if it does not exist, the kernel writes
    /// one with random ports and a fresh key (and removes it on exit).
    pub connection_file: PathBuf,
    /// Default limit of script operations per cell (None: unlimited).
    pub max_operations: Option<u64>,
    /// Set from outside (SIGTERM) to stop the kernel.
    pub stop: Option<&'static AtomicBool>,
    /// Set from outside (SIGINT) to interrupt the running cell; the kernel
    /// goes on.
    pub interrupt: Option<&'static AtomicBool>,
    /// The process that started the kernel (Jupyter's `JPY_PARENT_PID`):
    /// when it is gone, the kernel stops instead of living on as an orphan.
    pub parent_pid: Option<u32>,
    /// Called once the kernel listens.
    pub on_ready: Option<ReadyHook>,
}

impl KernelConfig {
    /// Defaults for a connection file: no limits, no signals, no parent.
    pub fn new(connection_file: impl Into<PathBuf>) -> KernelConfig {
        KernelConfig {
            connection_file: connection_file.into(),
            max_operations: None,
            stop: None,
            interrupt: None,
            parent_pid: None,
            on_ready: None,
        }
    }
}

/// Reads Jupyter's file, or plans a fresh one if there is none: the plan
/// and whether the file is the kernel's own (written and removed by it).
pub(crate) fn plan_for(path: &Path) -> Result<KernelPlan, KernelError> {
    let read = |source| KernelError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(KernelPlan {
                connection: KernelConnection::unassigned("127.0.0.1", new_id()),
                bind_ip: "127.0.0.1".into(),
                file: Some(path.to_path_buf()),
                zpar_folder: false,
                standalone: true,
            });
        }
        Err(e) => return Err(read(e)),
    };
    let connection: KernelConnection =
        serde_json::from_slice(&text).map_err(|source| KernelError::BadFile {
            path: path.to_path_buf(),
            source,
        })?;
    for (channel, port) in [
        ("shell", connection.shell_port),
        ("iopub", connection.iopub_port),
        ("stdin", connection.stdin_port),
        ("control", connection.control_port),
        ("hb", connection.hb_port),
    ] {
        if port == 0 {
            return Err(KernelError::NoPort {
                path: path.to_path_buf(),
                channel,
            });
        }
    }
    Ok(KernelPlan {
        bind_ip: connection.ip.clone(),
        connection,
        file: None,
        zpar_folder: false,
        standalone: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("zpar-standalone-{name}-{}", new_id()))
    }

    #[test]
    fn a_missing_file_is_planned_fresh_and_owned() {
        let path = temp("missing");
        let plan = plan_for(&path).unwrap();
        assert_eq!(plan.file.as_deref(), Some(path.as_path()));
        assert_eq!(plan.connection.shell_port, 0);
        assert!(!plan.connection.key.is_empty());
        assert!(plan.standalone);
    }

    #[test]
    fn jupyters_file_is_used_as_it_is() {
        let path = temp("given");
        std::fs::write(
            &path,
            r#"{"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4,
                "hb_port": 5, "ip": "127.0.0.1", "key": "k", "transport": "tcp",
                "signature_scheme": "hmac-sha256", "kernel_name": "zpar"}"#,
        )
        .unwrap();
        let plan = plan_for(&path).unwrap();
        assert_eq!(plan.file, None, "Jupyter's file stays Jupyter's");
        assert_eq!(plan.connection.hb_port, 5);
        std::fs::write(&path, r#"{"shell_port": 0}"#).unwrap();
        let e = plan_for(&path).err().unwrap().to_string();
        assert!(e.contains("not a Jupyter connection file"), "{e}");
        std::fs::write(
            &path,
            r#"{"shell_port": 0, "iopub_port": 2, "stdin_port": 3, "control_port": 4,
                "hb_port": 5, "ip": "127.0.0.1", "key": "k", "transport": "tcp",
                "signature_scheme": "hmac-sha256"}"#,
        )
        .unwrap();
        let e = plan_for(&path).err().unwrap().to_string();
        assert!(e.contains("shell") && e.contains("port 0"), "{e}");
        std::fs::remove_file(path).unwrap();
    }
}
