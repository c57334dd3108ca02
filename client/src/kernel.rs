//! Engines as Jupyter kernels, from the client's side:
//! [`DirectView::bind_kernel`] asks each target to serve Jupyter's kernel
//! protocol too, and [`BoundKernel`] is what each answers — where its
//! kernel listens and the connection file it wrote, for
//! `jupyter console --existing FILE`.
//!
//! The request goes on the control channel, so an engine answers it even
//! while a script runs (its kernel then serves shell requests once the
//! script is done: one namespace, one request at a time). Asking an engine
//! that already serves as a kernel returns the same binding.

use crate::client::Request;
use crate::error::{Error, Result};
use crate::result::{AsyncResult, Shape};
use crate::view::DirectView;
use std::path::{Path, PathBuf};
use zpar_protocol::kernel::BindKernelRequest;
use zpar_protocol::{Channel, Content, KernelConnection, RequestMetadata, Value};

/// An engine serving as a Jupyter kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundKernel {
    /// The engine.
    pub engine: u32,
    /// The connection file the engine wrote (`kernel-<id>.json` in its
    /// profile's `security/` folder): a path on the engine's host.
    pub connection_file: PathBuf,
    /// Where the kernel listens, with the cluster's key (which the engine's
    /// reply does not carry: the client has it).
    pub connection: KernelConnection,
}

impl BoundKernel {
    /// Reads an engine's `bind_kernel_reply` value; `key` is the cluster's
    /// (the client's) key.
    ///
    /// ```
    /// use zpar_client::kernel::BoundKernel;
    /// use zpar_client::Value;
    /// let mut m = std::collections::BTreeMap::new();
    /// for (k, v) in [("engine", 0), ("shell_port", 1), ("iopub_port", 2), ("stdin_port", 3),
    ///                ("control_port", 4), ("hb_port", 5)] {
    ///     m.insert(k.to_string(), Value::Int(v));
    /// }
    /// for (k, v) in [("transport", "tcp"), ("ip", "127.0.0.1"),
    ///                ("signature_scheme", "hmac-sha256"), ("connection_file", "/k/kernel-0.json")] {
    ///     m.insert(k.to_string(), Value::Str(v.into()));
    /// }
    /// let k = BoundKernel::from_value(&Value::Map(m), "key").unwrap();
    /// assert_eq!(k.connection.hb_port, 5);
    /// assert_eq!(k.connection.key, "key");
    /// ```
    pub fn from_value(value: &Value, key: &str) -> Result<BoundKernel> {
        let Value::Map(m) = value else {
            return Err(Error::Value(format!(
                "a bind_kernel reply holds a map, not a {}",
                value.kind()
            )));
        };
        let text = |name: &str| match m.get(name) {
            Some(Value::Str(s)) => Ok(s.clone()),
            other => Err(Error::Value(format!(
                "a bind_kernel reply's {name} is {other:?}, not a string"
            ))),
        };
        let number = |name: &str| match m.get(name) {
            Some(Value::Int(i)) => u32::try_from(*i)
                .map_err(|_| Error::Value(format!("a bind_kernel reply's {name} is {i}"))),
            other => Err(Error::Value(format!(
                "a bind_kernel reply's {name} is {other:?}, not a number"
            ))),
        };
        let port = |name: &str| {
            number(name).and_then(|p| {
                u16::try_from(p)
                    .map_err(|_| Error::Value(format!("a bind_kernel reply's {name} is {p}")))
            })
        };
        Ok(BoundKernel {
            engine: number("engine")?,
            connection_file: PathBuf::from(text("connection_file")?),
            connection: KernelConnection {
                transport: text("transport")?,
                ip: text("ip")?,
                key: key.to_string(),
                signature_scheme: text("signature_scheme")?,
                shell_port: port("shell_port")?,
                iopub_port: port("iopub_port")?,
                stdin_port: port("stdin_port")?,
                control_port: port("control_port")?,
                hb_port: port("hb_port")?,
                kernel_name: String::new(),
            },
        })
    }

    /// Writes the connection file here (0600; the folder must exist and
    /// is left as it is), for a kernel whose engine runs on another host:
    /// `jupyter console --existing PATH` then works from this one.
    pub fn write_connection_file(&self, path: &Path) -> Result<()> {
        zpar_protocol::connection::write_json_file_in(path, &self.connection)
            .map_err(|e| Error::Protocol(std::sync::Arc::new(e)))
    }
}

impl DirectView {
    /// Makes each target serve the Jupyter kernel protocol too, beside the
    /// hub: its own shell, control, stdin, iopub and heartbeat sockets, a
    /// `kernel-<id>.json` connection file in its profile's `security/`
    /// folder, and the same namespace as the hub's requests. Each reply's
    /// value is a map; [`BoundKernel::from_value`] reads it, or use
    /// [`bind_kernel_sync`](Self::bind_kernel_sync).
    pub fn bind_kernel(&self) -> Result<AsyncResult> {
        let ids = self.targets()?;
        let metadata = RequestMetadata {
            targets: Some(ids.clone()),
            ..Default::default()
        }
        .to_map();
        self.client().submit(
            vec![Request {
                channel: Channel::Control,
                content: Content::BindKernelRequest(BindKernelRequest {}),
                metadata,
                buffers: vec![],
                replies: ids.into_iter().map(Some).collect(),
            }],
            Shape::PerReply,
        )
    }

    /// [`bind_kernel`](Self::bind_kernel), waiting for every target.
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let client = zpar_client::Client::connect()?;
    /// for k in client.view(0).bind_kernel_sync()? {
    ///     println!("jupyter console --existing {}", k.connection_file.display());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn bind_kernel_sync(&self) -> Result<Vec<BoundKernel>> {
        let key = self.client().connection().key.clone();
        self.bind_kernel()?
            .get()?
            .iter()
            .map(|v| BoundKernel::from_value(v, &key))
            .collect()
    }
}
