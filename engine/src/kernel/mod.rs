//! The engine as a Jupyter kernel.
//!
//! An engine can serve Jupyter's kernel protocol on sockets of its own, so
//! `jupyter console --existing kernel-0.json`, a notebook or
//! `jupyter_client` talk to its namespace directly. Two ways:
//!
//! - **bound** (`zpar engine --bind-kernel`, `DirectView::bind_kernel`, the
//!   console's `%bind_kernel`): a cluster engine keeps serving the hub and
//!   also listens as a kernel, on random ports of its bind address, with
//!   the hub's key; it writes `kernel-<engine id>.json` (0600) into the
//!   profile's `security/` folder and removes it when it stops serving;
//! - **standalone** (`zpar kernel -f FILE`, what a kernelspec from
//!   `zpar kernel install` runs): an engine with no hub, listening where
//!   Jupyter's connection file says.
//!
//! # Sockets and threads
//!
//! | channel | socket | served by |
//! | --- | --- | --- |
//! | shell | ROUTER | the engine's main thread, between requests, like mux |
//! | control | ROUTER | the main thread, first, and mid-script from Rhai's progress callback (interrupt) |
//! | stdin | ROUTER | bound for Jupyter; Rhai has no `input()`, so nothing is ever asked on it |
//! | iopub | the engine's XPUB (a standalone kernel's: a PUB) | the main thread; the same output goes to the hub on the engine's link |
//! | heartbeat | REP | a thread of its own ([`heartbeat`]), so a busy kernel still answers |
//!
//! Shell requests and the hub's requests are taken by one thread from one
//! poll, one at a time, and run in one [`Namespace`](crate::Namespace):
//! they never interleave, and a variable set through one is there for the
//! other. Messages are verified with the engine's `Session` (HMAC-SHA256,
//! with its bounded replay guard) before any JSON is read: unsigned, wrongly
//! signed and replayed messages are dropped with a log line; a signed
//! request of a type the kernel does not serve gets an error reply.
//!
//! `shutdown_request` on a bound engine's kernel stops the kernel only: it
//! answers, closes the kernel's sockets and removes its file, and the
//! engine stays in its cluster (a front end leaving must not take a
//! cluster's engine with it; `zpar cluster stop` stops engines). A
//! standalone kernel exits.

mod code;
pub(crate) mod heartbeat;
mod plan;
pub(crate) mod shell;
mod standalone;

pub use plan::KernelError;
pub(crate) use plan::{KernelHome, KernelPlan};
pub(crate) use standalone::plan_for;
pub use standalone::{KernelConfig, ReadyHook};

use heartbeat::HeartbeatEcho;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tracing::{info, warn};
use zpar_protocol::error::Chain;
use zpar_protocol::frames::cap_inbound_frames;
use zpar_protocol::{KernelConnection, Limits, Value};

/// The kernel's sockets, bound. Dropping it closes them, stops the
/// heartbeat thread and removes the connection file it wrote; the iopub
/// address must be unbound from the engine's iopub socket first
/// ([`Kernel::unbind_iopub`]).
pub(crate) struct Kernel {
    pub(crate) shell: zmq::Socket,
    pub(crate) control: zmq::Socket,
    pub(crate) stdin: zmq::Socket,
    iopub_endpoint: String,
    _heartbeat: HeartbeatEcho,
    pub(crate) connection: KernelConnection,
    pub(crate) file: Option<PathBuf>,
}

impl Kernel {
    /// Binds the kernel's sockets as `plan` says (and the iopub address on
    /// the engine's `iopub` socket), starts the heartbeat echo and writes the
    /// connection file.
    pub(crate) fn bind(
        ctx: &zmq::Context,
        iopub: &zmq::Socket,
        plan: KernelPlan,
    ) -> Result<Kernel, KernelError> {
        let KernelPlan {
            mut connection,
            bind_ip,
            file,
            zpar_folder,
            standalone,
        } = plan;
        let on = |port: u16, channel: &'static str| -> Result<String, KernelError> {
            match (connection.transport.as_str(), port) {
                ("ipc", 0) => Err(KernelError::IpcNeedsPorts { channel }),
                ("ipc", p) => Ok(format!("ipc://{}-{p}", connection.ip)),
                (t, 0) => Ok(format!("{t}://{bind_ip}:*")),
                (t, p) => Ok(format!("{t}://{bind_ip}:{p}")),
            }
        };
        let listen = |kind: zmq::SocketType, url: String, channel: &'static str| {
            let bind = |s: &zmq::Socket| -> Result<String, zmq::Error> {
                s.set_linger(1000)?;
                cap_inbound_frames(s, &Limits::default())?;
                s.bind(&url)?;
                Ok(s.get_last_endpoint()?.unwrap_or_else(|_| url.clone()))
            };
            ctx.socket(kind)
                .and_then(|s| bind(&s).map(|endpoint| (s, endpoint)))
                .map_err(|source| KernelError::Bind {
                    channel,
                    url: url.clone(),
                    source,
                })
        };
        let (shell, shell_at) = listen(zmq::ROUTER, on(connection.shell_port, "shell")?, "shell")?;
        let (control, control_at) = listen(
            zmq::ROUTER,
            on(connection.control_port, "control")?,
            "control",
        )?;
        let (stdin, stdin_at) = listen(zmq::ROUTER, on(connection.stdin_port, "stdin")?, "stdin")?;
        let (hb, hb_at) = listen(zmq::REP, on(connection.hb_port, "heartbeat")?, "heartbeat")?;
        let iopub_url = on(connection.iopub_port, "iopub")?;
        // The engine's iopub socket is plain (its output to the hub goes
        // on the link), as Jupyter's front ends are; signed, like every
        // kernel socket.
        cap_inbound_frames(iopub, &Limits::default())
            .and_then(|()| iopub.bind(&iopub_url))
            .map_err(|source| KernelError::Bind {
                channel: "iopub",
                url: iopub_url.clone(),
                source,
            })?;
        let iopub_endpoint = iopub
            .get_last_endpoint()
            .ok()
            .and_then(Result::ok)
            .unwrap_or(iopub_url);
        connection.shell_port = port_of(&shell_at);
        connection.control_port = port_of(&control_at);
        connection.stdin_port = port_of(&stdin_at);
        connection.hb_port = port_of(&hb_at);
        connection.iopub_port = port_of(&iopub_endpoint);
        let heartbeat = HeartbeatEcho::start(hb).map_err(KernelError::Thread)?;
        let mut kernel = Kernel {
            shell,
            control,
            stdin,
            iopub_endpoint,
            _heartbeat: heartbeat,
            connection,
            file: None,
        };
        if let Some(path) = file {
            let written = if zpar_folder {
                zpar_protocol::connection::write_json_file(&path, &kernel.connection)
            } else {
                zpar_protocol::connection::write_json_file_in(&path, &kernel.connection)
            };
            if let Err(e) = written {
                // Dropping `kernel` closes what was bound; iopub is the caller's.
                kernel.unbind_iopub(iopub);
                return Err(KernelError::File(e));
            }
            info!(file = %path.display(), "kernel connection file written");
            kernel.file = Some(path);
        }
        info!(
            shell = kernel.connection.shell_port,
            standalone, "serving as a Jupyter kernel"
        );
        Ok(kernel)
    }

    /// Stops publishing to the kernel's iopub address.
    pub(crate) fn unbind_iopub(&self, iopub: &zmq::Socket) {
        if let Err(e) = iopub.unbind(&self.iopub_endpoint) {
            warn!(error = %Chain(&e), endpoint = %self.iopub_endpoint, "cannot unbind the kernel's iopub address");
        }
    }

    /// What a `bind_kernel_reply` carries: the engine, the file on its host
    /// and where the kernel listens (not the key: the client has it).
    pub(crate) fn binding(&self, engine: u32) -> Value {
        let c = &self.connection;
        let mut m = BTreeMap::new();
        m.insert("engine".to_string(), Value::Int(engine.into()));
        let file = self.file.as_ref().map(|p| p.display().to_string());
        m.insert(
            "connection_file".to_string(),
            Value::Str(file.unwrap_or_default()),
        );
        m.insert("transport".to_string(), Value::Str(c.transport.clone()));
        m.insert("ip".to_string(), Value::Str(c.ip.clone()));
        m.insert(
            "signature_scheme".to_string(),
            Value::Str(c.signature_scheme.clone()),
        );
        for (name, port) in [
            ("shell_port", c.shell_port),
            ("iopub_port", c.iopub_port),
            ("stdin_port", c.stdin_port),
            ("control_port", c.control_port),
            ("hb_port", c.hb_port),
        ] {
            m.insert(name.to_string(), Value::Int(port.into()));
        }
        Value::Map(m)
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        if let Some(path) = self.file.take() {
            match std::fs::remove_file(&path) {
                Ok(()) => info!(file = %path.display(), "kernel connection file removed"),
                Err(e) => {
                    warn!(error = %Chain(&e), file = %path.display(), "cannot remove the kernel connection file")
                }
            }
        }
    }
}

/// The port at the end of an endpoint (`tcp://127.0.0.1:5555`, or
/// `ipc:///tmp/k-5` for ipc); 0 if there is none.
fn port_of(endpoint: &str) -> u16 {
    endpoint
        .rsplit([':', '-'])
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(file: Option<PathBuf>) -> KernelPlan {
        KernelPlan {
            connection: KernelConnection::unassigned("127.0.0.1", "k"),
            bind_ip: "127.0.0.1".into(),
            file,
            zpar_folder: true,
            standalone: false,
        }
    }

    #[test]
    fn ports_come_from_endpoints() {
        assert_eq!(port_of("tcp://127.0.0.1:5555"), 5555);
        assert_eq!(port_of("tcp://0.0.0.0:80"), 80);
        assert_eq!(port_of("ipc:///tmp/kernel-7"), 7);
        assert_eq!(port_of("nothing"), 0);
    }

    #[test]
    fn binds_random_ports_writes_a_private_file_and_removes_it() {
        let ctx = zmq::Context::new();
        let iopub = ctx.socket(zmq::PUB).unwrap();
        let dir = std::env::temp_dir().join(format!("zpar-kernel-{}", zpar_protocol::new_id()));
        let path = dir.join("kernel-3.json");
        let kernel = Kernel::bind(&ctx, &iopub, plan(Some(path.clone()))).unwrap();
        let c = &kernel.connection;
        let ports = [
            c.shell_port,
            c.iopub_port,
            c.stdin_port,
            c.control_port,
            c.hb_port,
        ];
        assert!(ports.iter().all(|p| *p > 0), "{ports:?}");
        let written: KernelConnection = zpar_protocol::connection::read_json_file(&path).unwrap();
        assert_eq!(&written, c);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let value = kernel.binding(3);
        let Value::Map(m) = &value else {
            panic!("{value:?}")
        };
        assert_eq!(m["engine"], Value::Int(3));
        assert_eq!(m["shell_port"], Value::Int(c.shell_port.into()));
        assert!(!m.contains_key("key"), "the key never travels");
        kernel.unbind_iopub(&iopub);
        drop(kernel);
        assert!(!path.exists(), "the file is removed with the kernel");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_port_in_use_is_a_clear_error() {
        let ctx = zmq::Context::new();
        let taken = ctx.socket(zmq::ROUTER).unwrap();
        taken.bind("tcp://127.0.0.1:*").unwrap();
        let port = port_of(&taken.get_last_endpoint().unwrap().unwrap());
        let iopub = ctx.socket(zmq::PUB).unwrap();
        let mut p = plan(None);
        p.connection.shell_port = port;
        let e = Kernel::bind(&ctx, &iopub, p)
            .err()
            .expect("the port is taken");
        assert!(e.to_string().contains("shell"), "{e}");
        assert!(e.to_string().contains(&port.to_string()), "{e}");
    }
}
