//! Where a kernel is to listen ([`KernelPlan`], and [`KernelHome`] for a
//! cluster engine asked to serve as one), and why it could not
//! ([`KernelError`]).

use std::path::PathBuf;
use zpar_protocol::KernelConnection;

/// Why an engine could not serve as a kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A socket could not listen.
    #[error("cannot listen for the kernel's {channel} channel on {url} (is the address one of this host's, and the port free?)")]
    Bind {
        /// shell, control, stdin, iopub or heartbeat.
        channel: &'static str,
        /// Where it tried.
        url: String,
        /// What zmq said.
        #[source]
        source: zmq::Error,
    },
    /// An ipc connection file with a port of 0: ipc has no port to pick.
    #[error("the kernel's {channel} port is 0, but the ipc transport cannot pick one: give every port in the connection file")]
    IpcNeedsPorts {
        /// The channel without a port.
        channel: &'static str,
    },
    /// The connection file could not be written.
    #[error("cannot write the kernel connection file")]
    File(#[source] zpar_protocol::ProtocolError),
    /// Only a cluster's engine binds a kernel when asked (a standalone
    /// kernel listens where its connection file says, from the start).
    #[error("this engine has no cluster address to bind a kernel on")]
    NoHome,
    /// The heartbeat thread could not start.
    #[error("cannot start the kernel's heartbeat thread")]
    Thread(#[source] std::io::Error),
    /// Jupyter's connection file could not be read.
    #[error("cannot read the kernel connection file {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Jupyter's connection file is not one.
    #[error("{path} is not a Jupyter connection file")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What serde_json said (it names the field).
        #[source]
        source: serde_json::Error,
    },
    /// Jupyter's connection file leaves a port to pick.
    #[error("{path} gives port 0 for the {channel} channel: a connection file names every port (or, if it does not exist, zpar picks ports and writes it)")]
    NoPort {
        /// The file.
        path: PathBuf,
        /// The channel.
        channel: &'static str,
    },
}

/// Where a kernel is to listen: a connection whose ports may be 0 (pick
/// one), the address to bind (which may be a wildcard; the connection says
/// the address to reach), and the file to write the result to.
pub(crate) struct KernelPlan {
    pub(crate) connection: KernelConnection,
    pub(crate) bind_ip: String,
    /// Written with the ports bound, and removed when the kernel stops.
    pub(crate) file: Option<PathBuf>,
    /// Whether the file's folder is zpar's (a profile's `security/`: made
    /// 0700 if missing) or someone else's (left as it is).
    pub(crate) zpar_folder: bool,
    /// A kernel with no hub: shutdown ends the engine.
    pub(crate) standalone: bool,
}

/// Where a cluster engine listens as a kernel when asked: its bind
/// address, the address peers reach it at, the hub's key, and the folder
/// for `kernel-<engine id>.json`.
pub(crate) struct KernelHome {
    pub(crate) ctx: zmq::Context,
    pub(crate) bind_ip: String,
    pub(crate) advertise: String,
    pub(crate) key: String,
    pub(crate) signature_scheme: String,
    pub(crate) dir: PathBuf,
}

impl KernelHome {
    /// Random ports, the hub's key, `kernel-<engine>.json` in the folder.
    pub(crate) fn plan(&self, engine: u32) -> KernelPlan {
        KernelPlan {
            connection: KernelConnection {
                signature_scheme: self.signature_scheme.clone(),
                ..KernelConnection::unassigned(&self.advertise, &self.key)
            },
            bind_ip: self.bind_ip.clone(),
            file: Some(self.dir.join(format!("kernel-{engine}.json"))),
            zpar_folder: true,
            standalone: false,
        }
    }
}
