//! What the kernel answers without running code.
//!
//! The core ([`crate::core`]) dispatches the kernel's shell and control
//! requests: `execute_request` runs like the hub's execute, with Jupyter's
//! rules for `silent` and `store_history`. The others run no code and are
//! answered here by [`answer`] from the namespace alone: `kernel_info`, `is_complete` (Rhai's own parser),
//! `complete` (the namespace's variables and functions and Rhai's
//! keywords), `inspect` (a name's type and value), `history` and
//! `comm_info` (empty). Every shell request is bracketed by iopub `status`
//! busy and idle, as Jupyter's front ends expect (they learn that iopub is
//! connected from the status of their `kernel_info_request`).

use super::code::{is_complete, matching, name_at, word_before, KEYWORDS};
use crate::namespace::Namespace;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use zpar_protocol::kernel::{
    CommInfoReply, CompleteReply, HelpLink, InspectReply, KernelInfoReply, LanguageInfo,
};
use zpar_protocol::{Content, ErrorClass, HistoryReply, Message, Status, TaskReply};

/// The Rhai release line the engine is built against (the workspace asks
/// for `rhai = "1.27"`).
const RHAI_VERSION: &str = "1.27";

/// What the kernel says it is. `engine` is the cluster engine's id, None
/// for a standalone kernel.
pub(crate) fn kernel_info(engine: Option<u32>) -> KernelInfoReply {
    let what = match engine {
        Some(id) => {
            format!("engine {id} of a zpar cluster, in the namespace the cluster's clients use too")
        }
        None => "a standalone engine (no cluster)".to_string(),
    };
    KernelInfoReply {
        status: Status::Ok,
        protocol_version: zpar_protocol::header::PROTOCOL_VERSION.to_string(),
        implementation: "zpar".to_string(),
        implementation_version: env!("CARGO_PKG_VERSION").to_string(),
        language_info: LanguageInfo {
            name: "rhai".to_string(),
            version: RHAI_VERSION.to_string(),
            mimetype: "text/x-rhai".to_string(),
            file_extension: ".rhai".to_string(),
            // Rhai reads like Rust; neither Pygments nor CodeMirror knows Rhai.
            pygments_lexer: Some("rust".to_string()),
            codemirror_mode: Some("rust".to_string()),
        },
        banner: format!("zpar {}: Rhai on {what}.", env!("CARGO_PKG_VERSION")),
        help_links: vec![HelpLink {
            text: "The Rhai book".to_string(),
            url: "https://rhai.rs/book/".to_string(),
        }],
        debugger: false,
    }
}

/// The error reply to a request the kernel does not serve on `channel`.
pub(crate) fn unserved(msg: &Message, channel: &str) -> Content {
    let t = &msg.header.msg_type;
    let why = match &msg.content {
        Content::ApplyRequest(_)
        | Content::PushRequest(_)
        | Content::PullRequest(_)
        | Content::AbortRequest(_)
        | Content::ClearRequest(_)
        | Content::BindKernelRequest(_) => format!(
            "{t} is a zpar request, not a Jupyter one: send it to the engine through the hub (zpar's Client)"
        ),
        _ => format!(
            "zpar's Rhai kernel does not serve {t} on {channel}; it serves kernel_info, execute, \
             is_complete, complete, inspect, history and comm_info on shell, and interrupt, \
             shutdown and kernel_info on control"
        ),
    };
    Content::reply_to(
        t,
        TaskReply::error(ErrorClass::UnknownMessageType.as_str(), why),
    )
}

/// The answer to a shell request that runs no code; an error reply for a
/// request the kernel does not serve.
pub(crate) fn answer(namespace: &Namespace, engine: Option<u32>, msg: &Message) -> Content {
    match &msg.content {
        Content::KernelInfoRequest(_) => Content::KernelInfoReply(kernel_info(engine)),
        Content::IsCompleteRequest(r) => {
            Content::IsCompleteReply(is_complete(namespace.engine(), &r.code))
        }
        Content::CompleteRequest(r) => {
            let (start, word, method) = word_before(&r.code, r.cursor_pos);
            let functions = namespace.function_names();
            let variables = namespace.names();
            let matches = if method {
                matching(&word, functions.iter().map(String::as_str))
            } else {
                let names = variables.iter().chain(&functions).map(String::as_str);
                matching(&word, names.chain(KEYWORDS.iter().copied()))
            };
            Content::CompleteReply(CompleteReply {
                status: Status::Ok,
                matches,
                cursor_start: start,
                cursor_end: start + word.chars().count(),
                metadata: Map::new(),
            })
        }
        Content::InspectRequest(r) => {
            let found = name_at(&r.code, r.cursor_pos).and_then(|n| namespace.describe(&n));
            let mut data = BTreeMap::new();
            if let Some(text) = &found {
                data.insert("text/plain".to_string(), Json::String(text.clone()));
            }
            Content::InspectReply(InspectReply {
                status: Status::Ok,
                found: found.is_some(),
                data,
                metadata: Map::new(),
            })
        }
        // The console's history is the front end's own: the kernel keeps none.
        Content::HistoryRequest(_) => Content::HistoryReply(HistoryReply {
            status: Status::Ok,
            history: Vec::new(),
        }),
        Content::CommInfoRequest(_) => Content::CommInfoReply(CommInfoReply {
            status: Status::Ok,
            comms: Map::new(),
        }),
        _ => unserved(msg, "shell"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zpar_protocol::kernel::{
        CompleteRequest, Completeness, InspectRequest, IsCompleteRequest, KernelInfoRequest,
    };
    use zpar_protocol::Session;

    fn ask(ns: &Namespace, content: Content) -> Content {
        let s = Session::new(b"k", "hmac-sha256", "test").unwrap();
        answer(ns, Some(0), &Message::new(&s, content))
    }

    fn namespace() -> Namespace {
        let mut e = rhai::Engine::new();
        crate::arrays::register(&mut e);
        let mut ns = Namespace::new(e);
        let _ = ns
            .execute("let alpha_value = 41; let alphabet = \"abc\"; fn alpha_fn(x) { x }")
            .unwrap();
        ns
    }

    #[test]
    fn kernel_info_says_rhai() {
        let Content::KernelInfoReply(r) = ask(
            &namespace(),
            Content::KernelInfoRequest(KernelInfoRequest {}),
        ) else {
            panic!()
        };
        assert_eq!(r.language_info.name, "rhai");
        assert_eq!(r.language_info.file_extension, ".rhai");
        assert_eq!(r.protocol_version, "5.3");
        assert!(r.banner.contains("engine 0"), "{}", r.banner);
        assert!(kernel_info(None).banner.contains("standalone"));
    }

    #[test]
    fn completes_variables_functions_and_keywords() {
        let ns = namespace();
        let Content::CompleteReply(r) = ask(
            &ns,
            Content::CompleteRequest(CompleteRequest {
                code: "print(alph".into(),
                cursor_pos: 10,
            }),
        ) else {
            panic!()
        };
        assert_eq!(r.matches, ["alpha_fn", "alpha_value", "alphabet"]);
        assert_eq!((r.cursor_start, r.cursor_end), (6, 10));
        let Content::CompleteReply(r) = ask(
            &ns,
            Content::CompleteRequest(CompleteRequest {
                code: "lo".into(),
                cursor_pos: 2,
            }),
        ) else {
            panic!()
        };
        assert!(r.matches.contains(&"loop".to_string()), "{:?}", r.matches);
        // After a dot: functions (methods) only.
        let Content::CompleteReply(r) = ask(
            &ns,
            Content::CompleteRequest(CompleteRequest {
                code: "alphabet.le".into(),
                cursor_pos: 11,
            }),
        ) else {
            panic!()
        };
        assert!(r.matches.contains(&"len".to_string()), "{:?}", r.matches);
        assert!(!r.matches.iter().any(|m| m == "let"), "{:?}", r.matches);
        assert_eq!((r.cursor_start, r.cursor_end), (9, 11));
    }

    #[test]
    fn inspects_a_name() {
        let ns = namespace();
        let Content::InspectReply(r) = ask(
            &ns,
            Content::InspectRequest(InspectRequest {
                code: "alpha_value + 1".into(),
                cursor_pos: 3,
                detail_level: 0,
            }),
        ) else {
            panic!()
        };
        assert!(r.found);
        assert_eq!(r.data["text/plain"], "alpha_value: i64 = 41");
        let Content::InspectReply(r) = ask(
            &ns,
            Content::InspectRequest(InspectRequest {
                code: "nothing".into(),
                cursor_pos: 3,
                detail_level: 0,
            }),
        ) else {
            panic!()
        };
        assert!(!r.found && r.data.is_empty());
    }

    #[test]
    fn is_complete_uses_the_namespaces_parser() {
        let ns = namespace();
        let Content::IsCompleteReply(r) = ask(
            &ns,
            Content::IsCompleteRequest(IsCompleteRequest {
                code: "for i in 0..3 {".into(),
            }),
        ) else {
            panic!()
        };
        assert_eq!(r.status, Completeness::Incomplete);
    }

    #[test]
    fn unknown_and_zpar_requests_get_a_clear_error() {
        let ns = namespace();
        let reply = ask(
            &ns,
            Content::Unknown {
                msg_type: "debug_request".into(),
                content: Json::Null,
            },
        );
        assert_eq!(reply.msg_type(), "debug_reply");
        let r = reply.task_reply().cloned().unwrap_or_else(|| {
            let Content::Unknown { content, .. } = &reply else {
                panic!()
            };
            serde_json::from_value(content.clone()).unwrap()
        });
        assert_eq!(r.status, Status::Error);
        assert_eq!(r.ename.as_deref(), Some("UnknownMessageType"));
        assert!(r.evalue.as_deref().unwrap().contains("debug_request"));
        let reply = ask(&ns, Content::PullRequest(Default::default()));
        let r = reply.task_reply().unwrap();
        assert!(
            r.evalue.as_deref().unwrap().contains("through the hub"),
            "{r:?}"
        );
    }
}
