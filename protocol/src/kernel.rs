//! Jupyter's kernel protocol: the connection file a kernel listens by and
//! the contents of the shell requests zpar's kernel answers.
//!
//! An engine can also be a Jupyter kernel (`zpar engine --bind-kernel`,
//! `DirectView::bind_kernel`, or `zpar kernel -f FILE` with no hub). It then
//! serves Jupyter's five channels on sockets of its own, described by a
//! [`KernelConnection`] in Jupyter's connection-file format, and signs with
//! the same HMAC-SHA256 [`Session`](crate::Session) as every other zpar
//! message. The message types are variants of [`Content`](crate::Content)
//! like all others; their contents are here. Field names follow Jupyter's
//! messaging spec (version 5.3).
//!
//! ```
//! use zpar_protocol::kernel::{Completeness, IsCompleteReply, KernelConnection};
//! let file: KernelConnection = serde_json::from_str(r#"{"transport": "tcp",
//!     "ip": "127.0.0.1", "key": "k", "signature_scheme": "hmac-sha256",
//!     "shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4,
//!     "hb_port": 5, "kernel_name": "zpar"}"#).unwrap();
//! assert_eq!(file.url(file.shell_port), "tcp://127.0.0.1:1");
//! let reply = IsCompleteReply { status: Completeness::Incomplete, indent: Some("    ".into()) };
//! assert_eq!(serde_json::to_string(&reply).unwrap(), r#"{"status":"incomplete","indent":"    "}"#);
//! ```

use crate::content::Status;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// A Jupyter connection file: where a kernel listens and the key it signs
/// with. Jupyter writes one for each kernel it starts (`{connection_file}`
/// in a kernelspec's argv); a bound zpar engine writes
/// `kernel-<engine id>.json` in its profile's `security/` folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelConnection {
    /// `tcp` or `ipc`.
    pub transport: String,
    /// The address (for `ipc`, the path prefix).
    pub ip: String,
    /// The HMAC key (empty: no signing).
    pub key: String,
    /// `hmac-sha256`.
    pub signature_scheme: String,
    /// Shell requests (ROUTER).
    pub shell_port: u16,
    /// Output and status (PUB).
    pub iopub_port: u16,
    /// Input requests to the front end (ROUTER).
    pub stdin_port: u16,
    /// Control requests: interrupt, shutdown (ROUTER).
    pub control_port: u16,
    /// Heartbeat echo (REP).
    pub hb_port: u16,
    /// The kernelspec's name, when Jupyter started the kernel.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kernel_name: String,
}

impl KernelConnection {
    /// A kernel's connection over TCP on `ip` signing with `key`
    /// (hmac-sha256), every port 0: to be bound on random ports, which are
    /// then written in.
    ///
    /// ```
    /// let c = zpar_protocol::KernelConnection::unassigned("127.0.0.1", "key");
    /// assert_eq!((c.shell_port, c.hb_port), (0, 0));
    /// assert_eq!(c.url(c.shell_port), "tcp://127.0.0.1:0");
    /// ```
    pub fn unassigned(ip: impl Into<String>, key: impl Into<String>) -> KernelConnection {
        KernelConnection {
            transport: "tcp".into(),
            ip: ip.into(),
            key: key.into(),
            signature_scheme: crate::SIGNATURE_SCHEME.into(),
            shell_port: 0,
            iopub_port: 0,
            stdin_port: 0,
            control_port: 0,
            hb_port: 0,
            kernel_name: String::new(),
        }
    }

    /// The address of one of the kernel's ports, as Jupyter forms it
    /// (`tcp://ip:port`, or `ipc://ip-port`).
    pub fn url(&self, port: u16) -> String {
        if self.transport == "ipc" {
            format!("ipc://{}-{}", self.ip, port)
        } else {
            format!("{}://{}:{}", self.transport, self.ip, port)
        }
    }
}

/// Asks a kernel who it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct KernelInfoRequest {}

/// What a kernel is: its protocol version, implementation and language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct KernelInfoReply {
    /// ok.
    pub status: Status,
    /// The messaging protocol version spoken.
    pub protocol_version: String,
    /// The kernel's implementation (`zpar`).
    pub implementation: String,
    /// Its version.
    pub implementation_version: String,
    /// The language it runs.
    pub language_info: LanguageInfo,
    /// What a front end shows on connecting.
    pub banner: String,
    /// Links for a front end's help menu.
    #[serde(default)]
    pub help_links: Vec<HelpLink>,
    /// Whether the kernel serves the debug protocol.
    #[serde(default)]
    pub debugger: bool,
}

/// The language a kernel runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LanguageInfo {
    /// `rhai`.
    pub name: String,
    /// The language's version.
    pub version: String,
    /// The MIME type of a script.
    pub mimetype: String,
    /// A script's file extension, with its dot.
    pub file_extension: String,
    /// The Pygments lexer front ends highlight with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pygments_lexer: Option<String>,
    /// The CodeMirror mode notebooks highlight with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codemirror_mode: Option<String>,
}

/// A help link of a kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HelpLink {
    /// The link's text.
    pub text: String,
    /// Where it goes.
    pub url: String,
}

/// Asks whether code is ready to run (a console decides with it whether
/// Enter runs the code or starts a new line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct IsCompleteRequest {
    /// The code typed so far.
    pub code: String,
}

/// Whether code is ready to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Completeness {
    /// It parses: run it.
    Complete,
    /// It could parse once more is typed (an open block, bracket or string).
    Incomplete,
    /// It can never parse, whatever follows: run it to see the error.
    Invalid,
    /// The kernel cannot tell.
    #[default]
    Unknown,
}

/// The answer to an [`IsCompleteRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct IsCompleteReply {
    /// complete, incomplete, invalid or unknown.
    pub status: Completeness,
    /// For incomplete code: the whitespace to start the next line with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indent: Option<String>,
}

/// Asks for completions at a cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CompleteRequest {
    /// The code (a cell, or the line being edited).
    pub code: String,
    /// The cursor, in Unicode code points from the start of `code`.
    pub cursor_pos: usize,
}

/// Completions for the text between `cursor_start` and `cursor_end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CompleteReply {
    /// ok.
    pub status: Status,
    /// What could replace the text.
    pub matches: Vec<String>,
    /// Where the replaced text starts (code points).
    pub cursor_start: usize,
    /// Where it ends (code points).
    pub cursor_end: usize,
    /// Jupyter field.
    #[serde(default)]
    pub metadata: Map<String, Json>,
}

/// Asks what the name at a cursor is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InspectRequest {
    /// The code.
    pub code: String,
    /// The cursor, in Unicode code points.
    pub cursor_pos: usize,
    /// 0 or 1: how much to say.
    #[serde(default)]
    pub detail_level: u8,
}

/// What the name at the cursor is, as a MIME bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InspectReply {
    /// ok.
    pub status: Status,
    /// Whether the name is known.
    pub found: bool,
    /// `text/plain`: its type and value, or a function's signatures.
    pub data: BTreeMap<String, Json>,
    /// Jupyter field.
    #[serde(default)]
    pub metadata: Map<String, Json>,
}

/// Asks which comms are open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CommInfoRequest {
    /// Only comms of this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
}

/// The open comms (zpar's kernel has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CommInfoReply {
    /// ok.
    pub status: Status,
    /// Comm id → its target.
    pub comms: Map<String, Json>,
}

/// A front end opens a comm (widgets do); zpar's kernel has no comm
/// targets and closes it at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CommOpen {
    /// The comm.
    pub comm_id: String,
    /// What the front end wants to talk to.
    #[serde(default)]
    pub target_name: String,
    /// Jupyter field.
    #[serde(default)]
    pub data: Map<String, Json>,
}

/// A message on an open comm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CommMsg {
    /// The comm.
    pub comm_id: String,
    /// Jupyter field.
    #[serde(default)]
    pub data: Map<String, Json>,
}

/// A comm closed (iopub and shell).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CommClose {
    /// The comm.
    pub comm_id: String,
    /// Jupyter field.
    #[serde(default)]
    pub data: Map<String, Json>,
}

/// Asks an engine to serve the Jupyter kernel protocol too (zpar's own,
/// sent by `DirectView::bind_kernel` on the control channel). The reply is
/// a `bind_kernel_reply` whose result is a map: `engine`,
/// `connection_file` (the path on the engine's host) and the
/// [`KernelConnection`]'s fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BindKernelRequest {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Content;

    #[test]
    fn jupyters_requests_parse_with_their_extra_fields() {
        let c = Content::from_json(
            "complete_request",
            br#"{"code": "pri", "cursor_pos": 3, "extra": 1}"#,
        )
        .unwrap();
        assert!(matches!(c, Content::CompleteRequest(r) if r.cursor_pos == 3));
        let c = Content::from_json(
            "inspect_request",
            br#"{"code": "x", "cursor_pos": 1, "detail_level": 1}"#,
        )
        .unwrap();
        assert!(matches!(c, Content::InspectRequest(r) if r.detail_level == 1));
        // jupyter_client sends history_request with its own fields.
        let c = Content::from_json(
            "history_request",
            br#"{"output": false, "raw": true, "hist_access_type": "tail", "n": 10}"#,
        )
        .unwrap();
        assert!(matches!(c, Content::HistoryRequest(_)));
        let c = Content::from_json("comm_info_request", br#"{}"#).unwrap();
        assert!(matches!(c, Content::CommInfoRequest(r) if r.target_name.is_none()));
    }

    #[test]
    fn a_connection_file_as_jupyter_writes_it_reads() {
        let text = r#"{"shell_port": 50001, "iopub_port": 50002, "stdin_port": 50003,
            "control_port": 50004, "hb_port": 50005, "ip": "127.0.0.1", "key": "a-b",
            "transport": "tcp", "signature_scheme": "hmac-sha256", "kernel_name": "zpar",
            "jupyter_session": "x"}"#;
        let c: KernelConnection = serde_json::from_str(text).unwrap();
        assert_eq!(c.hb_port, 50005);
        assert_eq!(c.url(c.control_port), "tcp://127.0.0.1:50004");
        let ipc = KernelConnection {
            transport: "ipc".into(),
            ip: "/tmp/k".into(),
            ..c
        };
        assert_eq!(ipc.url(7), "ipc:///tmp/k-7");
    }

    #[test]
    fn replies_have_jupyters_shape() {
        let json: Json = serde_json::from_slice(
            &Content::KernelInfoReply(KernelInfoReply {
                protocol_version: "5.3".into(),
                ..Default::default()
            })
            .to_json(),
        )
        .unwrap();
        assert_eq!(json["protocol_version"], "5.3");
        assert_eq!(json["language_info"]["name"], "");
        assert!(json["language_info"].get("pygments_lexer").is_none());
        let json: Json = serde_json::from_slice(
            &Content::CompleteReply(CompleteReply {
                matches: vec!["print".into()],
                cursor_start: 0,
                cursor_end: 3,
                ..Default::default()
            })
            .to_json(),
        )
        .unwrap();
        assert_eq!(json["status"], "ok");
        assert_eq!(json["matches"][0], "print");
        assert_eq!(json["metadata"], serde_json::json!({}));
        let json: Json = serde_json::from_slice(
            &Content::IsCompleteReply(IsCompleteReply {
                status: Completeness::Complete,
                indent: None,
            })
            .to_json(),
        )
        .unwrap();
        assert_eq!(json, serde_json::json!({"status": "complete"}));
    }
}
