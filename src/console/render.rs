//! How the console shows things, in the style of IPython's parallel magics:
//! `[stdout:ID] line`, `Out[ID:N]: value`, `[ID:error] ename: message (line
//! L, column C)`. Pure functions of their input, so they are unit-tested.

use super::targets::compact;
use std::time::Duration;
use zpar_client::{Error, Value};
use zpar_protocol::error::Chain;
use zpar_protocol::QueueReply;

/// ANSI colours, used only on a terminal and without `NO_COLOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// Prompts.
    Green,
    /// Values (`Out[..]`) and errors.
    Red,
    /// Stream prefixes and notices.
    Cyan,
    /// Progress.
    Dim,
}

/// `text` in `colour` when `on`.
pub fn paint(text: &str, colour: Colour, on: bool) -> String {
    if !on {
        return text.to_string();
    }
    let code = match colour {
        Colour::Green => "32",
        Colour::Red => "31",
        Colour::Cyan => "36",
        Colour::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// The most items of an array or map shown before it is abbreviated.
const MAX_ITEMS: usize = 40;

/// The most characters of a string shown before it is abbreviated.
const MAX_CHARS: usize = 400;

/// A value as the console shows it: like its `Display`, with long arrays,
/// maps and strings abbreviated to their first and last items (or
/// characters) and their length.
///
/// ```
/// use zpar::console::render::value;
/// use zpar::Value;
/// assert_eq!(value(&Value::Array(vec![Value::Int(1), Value::Str("a".into())])), "[1, \"a\"]");
/// ```
pub fn value(v: &Value) -> String {
    match v {
        Value::Array(a) if a.len() > MAX_ITEMS => {
            let head: Vec<String> = a[..MAX_ITEMS - 2].iter().map(value).collect();
            let tail: Vec<String> = a[a.len() - 2..].iter().map(value).collect();
            format!(
                "[{}, ..., {}] ({} items)",
                head.join(", "),
                tail.join(", "),
                a.len()
            )
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Map(m) => {
            let item = |(k, v): (&String, &Value)| format!("{k}: {}", value(v));
            if m.len() > MAX_ITEMS {
                let head: Vec<String> = m.iter().take(MAX_ITEMS - 2).map(item).collect();
                let tail: Vec<String> = m.iter().skip(m.len() - 2).map(item).collect();
                return format!(
                    "#{{{}, ..., {}}} ({} entries)",
                    head.join(", "),
                    tail.join(", "),
                    m.len()
                );
            }
            let items: Vec<String> = m.iter().map(item).collect();
            format!("#{{{}}}", items.join(", "))
        }
        Value::Str(s) if s.chars().nth(MAX_CHARS).is_some() => {
            let chars = s.chars().count();
            let head: String = s.chars().take(MAX_CHARS - 40).collect();
            let tail: String = s.chars().skip(chars - 40).collect();
            format!("{head:?} ... {tail:?} ({chars} characters)")
        }
        other => other.to_string(),
    }
}

/// One streamed line: `[stdout:ID] text`.
pub fn stream_line(engine: u32, stream: &str, text: &str, colour: bool) -> String {
    let prefix = paint(&format!("[{stream}:{engine}]"), Colour::Cyan, colour);
    if text.is_empty() {
        prefix
    } else {
        format!("{prefix} {text}")
    }
}

/// All lines of `text` (a trailing newline ends the last line, it does not
/// start another).
pub fn stream_lines(engine: u32, stream: &str, text: &str, colour: bool) -> Vec<String> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Vec::new();
    }
    text.split('\n')
        .map(|l| stream_line(engine, stream, l.strip_suffix('\r').unwrap_or(l), colour))
        .collect()
}

/// An engine's value: `Out[ID:N]: value`. Multi-line text continues
/// indented under it.
pub fn out_line(engine: u32, n: u64, v: &Value, colour: bool) -> String {
    let prefix = paint(&format!("Out[{engine}:{n}]:"), Colour::Red, colour);
    format!("{prefix} {}", value(v))
}

/// A named value from one engine (`%pull`): `[ID] name = value`.
pub fn named_line(engine: u32, name: &str, v: &Value, colour: bool) -> String {
    let prefix = paint(&format!("[{engine}]"), Colour::Red, colour);
    format!("{prefix} {name} = {}", value(v))
}

/// An error as one line per engine: `[ID:error] ename: message (line L,
/// column C)`; errors not tied to an engine as `error: ...`.
pub fn error_lines(e: &Error, colour: bool) -> Vec<String> {
    let tag = |engine: u32| paint(&format!("[{engine}:error]"), Colour::Red, colour);
    let one = match e {
        Error::Multiple(all) => return all.iter().flat_map(|e| error_lines(e, colour)).collect(),
        Error::RemoteError {
            engine,
            ename,
            message,
            line,
            column,
        } => {
            let at = match (line, column) {
                (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
                (Some(l), None) => format!(" (line {l})"),
                _ => String::new(),
            };
            format!("{} {ename}: {}{at}", tag(*engine), indent(message))
        }
        // An engine's error in a `%run` file: at the file's line.
        Error::InFile {
            path,
            line,
            column,
            error,
        } => match &**error {
            Error::RemoteError {
                engine,
                ename,
                message,
                ..
            } => {
                let at = match (line, column) {
                    (Some(l), Some(c)) => format!(", line {l}, column {c}"),
                    (Some(l), None) => format!(", line {l}"),
                    _ => String::new(),
                };
                format!(
                    "{} {ename}: {} ({}{at})",
                    tag(*engine),
                    indent(message),
                    path.display()
                )
            }
            _ => format!("{} {}", paint("error:", Colour::Red, colour), indent(&Chain(e).to_string())),
        },
        Error::EngineDied { engine, .. } => format!(
            "{} EngineDied: the engine died before answering",
            tag(*engine)
        ),
        Error::Aborted { engine, .. } => format!(
            "{} Aborted: the request was aborted before it ran",
            tag(*engine)
        ),
        Error::TaskTimeout {
            engine, message, ..
        } => format!("{} Timeout: {}", tag(*engine), indent(message)),
        Error::UnknownEngine(engine) => format!(
            "{} UnknownEngine: engine {engine} is not registered with the hub (%engines lists them)",
            tag(*engine)
        ),
        other => format!("{} {}", paint("error:", Colour::Red, colour), indent(&Chain(other).to_string())),
    };
    vec![one]
}

/// From how many engines on, lines that are the same but for the engine id
/// are shown once with the ids as ranges (`Out[0-999:3]: 42`); below it,
/// each engine keeps its own line, as IPython shows them.
pub const GROUP_FROM: usize = 8;

/// Splits a plain result line into its opening (`Out[` or `[`), engine id
/// and the rest (which starts with `:`).
fn split_engine(line: &str) -> Option<(&'static str, u32, &str)> {
    for open in ["Out[", "["] {
        if let Some(after) = line.strip_prefix(open) {
            let end = after.find(|c: char| !c.is_ascii_digit())?;
            let rest = &after[end..];
            if end > 0 && rest.starts_with(':') {
                return Some((open, after[..end].parse().ok()?, rest));
            }
        }
    }
    None
}

/// Paints a result line's prefix (`Out[..]:` or `[..:error]`).
fn paint_prefix(line: &str, colour: bool) -> String {
    let end = if line.starts_with("Out[") {
        line.find("]:").map(|i| i + 2)
    } else {
        line.find(']').map(|i| i + 1)
    };
    match end {
        Some(end) if colour => {
            format!("{}{}", paint(&line[..end], Colour::Red, true), &line[end..])
        }
        _ => line.to_string(),
    }
}

/// `rest` of engine `id`'s line with its own id said as "the engine"
/// (`engine 3 has no function sum` → `the engine has no function sum`), so
/// that lines which differ only by the id they name fold into one.
fn without_own_id(rest: &str, id: u32) -> String {
    let own = id.to_string();
    let mut out = String::with_capacity(rest.len());
    let mut from = rest;
    while let Some(at) = from.find("ngine ") {
        // `engine N` or `Engine N`, as a word, N being this engine's id.
        // The letter before `ngine` is checked as a char: it may be any.
        let first = from[..at].chars().next_back();
        let Some(first @ ('e' | 'E')) = first else {
            out.push_str(&from[..at + 6]);
            from = &from[at + 6..];
            continue;
        };
        let start = at - 1; // `e` and `E` are one byte
        let after = &from[at + 6..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let word_start = !from[..start].ends_with(|c: char| c.is_alphanumeric());
        if word_start && after[..digits] == own {
            out.push_str(&from[..start]);
            out.push_str(if first == 'E' {
                "The engine"
            } else {
                "the engine"
            });
            from = &after[digits..];
        } else {
            out.push_str(&from[..at + 6]);
            from = after;
        }
    }
    out.push_str(from);
    out
}

/// Plain (uncoloured) `Out[ID:N]: …` and `[ID:error] …` lines, in engine
/// order, with those that [`GROUP_FROM`] or more engines share folded into
/// one line naming the engines as ranges; then painted. Lines that differ
/// only by naming their own engine (`engine 3 has no ...`) are shared,
/// and their line says "the engine".
pub fn group_lines(lines: Vec<String>, colour: bool) -> Vec<String> {
    let mut ids: std::collections::HashMap<(&'static str, String), Vec<u32>> =
        std::collections::HashMap::new();
    // Only an error names its engine in its text; a value or a printed
    // line is shown as it is.
    let key = |open: &'static str, id: u32, rest: &str| {
        if open == "[" && rest.starts_with(":error]") {
            (open, without_own_id(rest, id))
        } else {
            (open, rest.to_string())
        }
    };
    for line in &lines {
        if let Some((open, id, rest)) = split_engine(line) {
            ids.entry(key(open, id, rest)).or_default().push(id);
        }
    }
    let mut out = Vec::with_capacity(lines.len());
    let mut done = std::collections::HashSet::new();
    for line in &lines {
        let Some((open, id, rest)) = split_engine(line) else {
            out.push(paint_prefix(line, colour));
            continue;
        };
        let key = key(open, id, rest);
        let group = &ids[&key];
        if group.len() < GROUP_FROM {
            out.push(paint_prefix(line, colour));
        } else if done.insert(key.clone()) {
            let mut sorted = group.clone();
            sorted.sort_unstable();
            out.push(paint_prefix(
                &format!("{open}{}{}", compact(&sorted), key.1),
                colour,
            ));
        }
    }
    out
}

/// An error in the reply of `engine`: like [`error_lines`], and an error
/// that does not name its engine (a timeout the engine enforced, say) is
/// still shown as `[ID:error] Class: message`.
pub fn reply_error_lines(engine: Option<u32>, e: &Error, colour: bool) -> Vec<String> {
    // No engine: a reply the hub made without any engine.
    let Some(engine) = engine else {
        return error_lines(e, colour);
    };
    if e.engine().is_some() || matches!(e, Error::Multiple(_)) {
        return error_lines(e, colour);
    }
    let (class, message) = match e {
        Error::Timeout { .. } => ("Timeout", e.to_string()),
        Error::Hub { ename, message } => (ename.as_str(), message.clone()),
        Error::NoEngines => ("NoEngines", e.to_string()),
        Error::NoHub { .. } => ("NoHub", e.to_string()),
        Error::Value(m) => ("ValueError", m.clone()),
        Error::Protocol(_) => ("ProtocolError", e.to_string()),
        Error::Closed => ("Closed", e.to_string()),
        Error::Zmq(_) => ("SocketError", e.to_string()),
        _ => ("Error", e.to_string()),
    };
    vec![format!(
        "{} {class}: {}",
        paint(&format!("[{engine}:error]"), Colour::Red, colour),
        indent(&message)
    )]
}

fn indent(text: &str) -> String {
    text.replace('\n', "\n    ")
}

/// A console-level failure (no engine to blame): `error: ...`.
pub fn failure(message: &str, colour: bool) -> String {
    format!(
        "{} {}",
        paint("error:", Colour::Red, colour),
        indent(message)
    )
}

/// A notice about the cluster, on its own line: `[zpar] ...`.
pub fn notice(message: &str, colour: bool) -> String {
    paint(&format!("[zpar] {message}"), Colour::Cyan, colour)
}

/// The progress of a command: `k/n engines done (2.1 s)`.
pub fn progress(done: usize, total: usize, elapsed: Option<Duration>) -> String {
    let unit = if total == 1 { "engine" } else { "engines" };
    match elapsed {
        Some(t) => format!("{done}/{total} {unit} done ({:.1} s)", t.as_secs_f64()),
        None => format!("[progress] {done}/{total} {unit} done"),
    }
}

/// The prompt: `In [N]: `, or `[px] In [N]: ` in autopx mode; (plain,
/// coloured).
pub fn prompt(n: usize, autopx: bool, colour: bool) -> (String, String) {
    let mode = if autopx { "[px] " } else { "" };
    let raw = format!("{mode}In [{n}]: ");
    let styled = if colour {
        format!(
            "{mode}{}{}{}",
            paint("In [", Colour::Green, true),
            paint(&n.to_string(), Colour::Green, true),
            paint("]: ", Colour::Green, true)
        )
    } else {
        raw.clone()
    };
    (raw, styled)
}

/// Past this many engines, `%engines` sums up instead of listing them all.
pub const SUMMARY_FROM: usize = 32;

/// `%engines`: one row per engine, with the host it runs on when known; for
/// more than [`SUMMARY_FROM`] engines (unless `all`), a summary and the busy
/// ones.
pub fn engines_table(
    q: &QueueReply,
    targets: &[u32],
    hosts: &std::collections::BTreeMap<u32, String>,
    all: bool,
) -> Vec<String> {
    if q.engines.is_empty() {
        return vec!["no engines are registered".to_string()];
    }
    if !all && q.engines.len() > SUMMARY_FROM {
        return engines_summary(q, targets, hosts);
    }
    let mut rows = vec![format!(
        "{:>6}  {:<6}  {:>5}  {:>9}  {:<6}  {}",
        "engine", "status", "queue", "completed", "target", "host"
    )
    .trim_end()
    .to_string()];
    for (id, e) in &q.engines {
        rows.push(
            format!(
                "{:>6}  {:<6}  {:>5}  {:>9}  {:<6}  {}",
                id,
                if e.queue > 0 { "busy" } else { "idle" },
                e.queue,
                e.completed,
                if targets.contains(id) { "yes" } else { "no" },
                hosts.get(id).map(String::as_str).unwrap_or("?")
            )
            .trim_end()
            .to_string(),
        );
    }
    if q.unassigned > 0 {
        rows.push(format!(
            "{} load-balanced tasks wait for an engine",
            q.unassigned
        ));
    }
    rows
}

/// `%engines` for a large cluster: counts, hosts, and the busy engines.
fn engines_summary(
    q: &QueueReply,
    targets: &[u32],
    hosts: &std::collections::BTreeMap<u32, String>,
) -> Vec<String> {
    let ids: Vec<u32> = q.engines.keys().copied().collect();
    let busy: Vec<u32> = q
        .engines
        .iter()
        .filter(|(_, e)| e.queue > 0)
        .map(|(id, _)| *id)
        .collect();
    let queued: u64 = q.engines.values().map(|e| e.queue).sum();
    let completed: u64 = q.engines.values().map(|e| e.completed).sum();
    let mut per_host: std::collections::BTreeMap<&str, usize> = Default::default();
    for id in &ids {
        *per_host
            .entry(hosts.get(id).map(String::as_str).unwrap_or("?"))
            .or_default() += 1;
    }
    let mut rows = vec![
        format!(
            "{} ({}): {} idle, {} busy; {queued} queued, {completed} completed",
            engines(&ids),
            ids.len(),
            ids.len() - busy.len(),
            busy.len()
        ),
        format!(
            "hosts: {}",
            per_host
                .iter()
                .map(|(h, n)| format!("{h} ({n})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!("targets: {}", compact(targets)),
    ];
    if !busy.is_empty() {
        rows.push(format!("busy: {}", compact(&busy)));
    }
    if q.unassigned > 0 {
        rows.push(format!(
            "{} load-balanced tasks wait for an engine",
            q.unassigned
        ));
    }
    rows.push("%engines --all lists every engine".to_string());
    rows
}

/// Ids for messages: `engines 0-3` / `engine 2`.
pub fn engines(ids: &[u32]) -> String {
    match ids {
        [one] => format!("engine {one}"),
        many => format!("engines {}", compact(many)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use zpar_protocol::EngineQueue;

    #[test]
    fn streams_are_prefixed_per_line() {
        assert_eq!(stream_line(0, "stdout", "hi", false), "[stdout:0] hi");
        assert_eq!(stream_line(3, "stderr", "", false), "[stderr:3]");
        assert_eq!(
            stream_lines(1, "stdout", "a\nb\n", false),
            ["[stdout:1] a", "[stdout:1] b"]
        );
        assert_eq!(stream_lines(1, "stdout", "\n", false), Vec::<String>::new());
        assert_eq!(stream_lines(1, "stdout", "x\n\ny", false).len(), 3);
        assert_eq!(
            stream_line(0, "stdout", "hi", true),
            "\x1b[36m[stdout:0]\x1b[0m hi"
        );
    }

    #[test]
    fn values_show_like_ipython() {
        assert_eq!(out_line(2, 7, &Value::Int(42), false), "Out[2:7]: 42");
        assert_eq!(
            out_line(0, 1, &Value::Str("s".into()), false),
            "Out[0:1]: \"s\""
        );
        assert_eq!(named_line(1, "x", &Value::Float(0.5), false), "[1] x = 0.5");
        let long = Value::Array((0..1000).map(Value::Int).collect());
        let shown = value(&long);
        assert!(shown.starts_with("[0, 1, 2,"), "{shown}");
        assert!(shown.ends_with("998, 999] (1000 items)"), "{shown}");
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), Value::Array(vec![Value::Unit]));
        assert_eq!(value(&Value::Map(m)), "#{a: [()]}");
        let long = Value::Map(
            (0..1000)
                .map(|i| (format!("k{i:03}"), Value::Int(i)))
                .collect(),
        );
        let shown = value(&long);
        assert!(shown.starts_with("#{k000: 0, k001: 1,"), "{shown}");
        assert!(
            shown.ends_with("k998: 998, k999: 999} (1000 entries)"),
            "{shown}"
        );
        let shown = value(&Value::Str("é".repeat(100_000)));
        assert!(shown.ends_with("\" (100000 characters)"), "{shown}");
        assert!(shown.chars().count() < 500, "{shown}");
    }

    #[test]
    fn errors_name_engine_and_place() {
        let e = Error::RemoteError {
            engine: 1,
            ename: "RuntimeError".into(),
            message: "boom".into(),
            line: Some(2),
            column: Some(5),
        };
        assert_eq!(
            error_lines(&e, false),
            ["[1:error] RuntimeError: boom (line 2, column 5)"]
        );
        let died = Error::EngineDied {
            engine: 3,
            msg_id: "m".into(),
        };
        let both = Error::Multiple(vec![e, died]);
        let lines = error_lines(&both, false);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1],
            "[3:error] EngineDied: the engine died before answering"
        );
        let t = Error::TaskTimeout {
            engine: 4,
            msg_id: "m".into(),
            message: "the request ran past its timeout of 0.5 s".into(),
        };
        assert_eq!(
            reply_error_lines(Some(4), &t, false),
            ["[4:error] Timeout: the request ran past its timeout of 0.5 s"]
        );
        assert_eq!(
            reply_error_lines(Some(4), &Error::UnknownEngine(2), false),
            error_lines(&Error::UnknownEngine(2), false)
        );
        let in_file = Error::InFile {
            path: "lib/a.rhai".into(),
            line: Some(3),
            column: Some(9),
            error: Box::new(Error::RemoteError {
                engine: 0,
                ename: "RuntimeError".into(),
                message: "boom".into(),
                line: None,
                column: None,
            }),
        };
        assert_eq!(
            reply_error_lines(Some(0), &in_file, false),
            ["[0:error] RuntimeError: boom (lib/a.rhai, line 3, column 9)"]
        );
        let e = error_lines(&Error::NoEngines, false);
        assert!(e[0].starts_with("error: no engines"), "{e:?}");
        assert_eq!(failure("a\nb", false), "error: a\n    b");
    }

    #[test]
    fn prompts_progress_and_tables() {
        assert_eq!(prompt(3, false, false).0, "In [3]: ");
        assert_eq!(prompt(3, true, false).0, "[px] In [3]: ");
        assert!(prompt(3, false, true).1.contains("\x1b[32m"));
        assert_eq!(progress(1, 4, None), "[progress] 1/4 engines done");
        assert_eq!(
            progress(0, 1, Some(Duration::from_millis(1500))),
            "0/1 engine done (1.5 s)"
        );
        let mut q = QueueReply::default();
        q.engines.insert(
            0,
            EngineQueue {
                queue: 2,
                completed: 5,
                ..Default::default()
            },
        );
        q.engines.insert(1, EngineQueue::default());
        let hosts = [(1, "10.0.0.2".to_string())].into_iter().collect();
        let t = engines_table(&q, &[1], &hosts, false);
        let mut big = QueueReply::default();
        for i in 0..100 {
            big.engines.insert(
                i,
                EngineQueue {
                    queue: u64::from(i == 7),
                    completed: 2,
                    ..Default::default()
                },
            );
        }
        let all: Vec<u32> = (0..100).collect();
        let s = engines_table(&big, &all, &hosts, false);
        assert_eq!(
            s[0],
            "engines 0-99 (100): 99 idle, 1 busy; 1 queued, 200 completed"
        );
        assert_eq!(s[1], "hosts: 10.0.0.2 (1), ? (99)");
        assert!(s.contains(&"busy: 7".to_string()), "{s:?}");
        assert_eq!(engines_table(&big, &all, &hosts, true).len(), 101);
        assert_eq!(t.len(), 3);
        assert!(t[1].contains("busy") && t[1].contains("no"), "{t:?}");
        assert!(t[1].ends_with('?'), "{t:?}");
        assert!(
            t[2].contains("idle") && t[2].ends_with("yes     10.0.0.2"),
            "{t:?}"
        );
        assert_eq!(engines(&[2]), "engine 2");
        // Many engines with the same answer share a line; few keep theirs.
        let many: Vec<String> = (0..10)
            .map(|i| format!("Out[{i}:3]: {}", if i == 4 { 7 } else { 42 }))
            .chain((0..9).map(|i| format!("[{i}:error] RuntimeError: boom")))
            .collect();
        assert_eq!(
            group_lines(many, false),
            [
                "Out[0-3,5-9:3]: 42",
                "Out[4:3]: 7",
                "[0-8:error] RuntimeError: boom"
            ]
        );
        let few: Vec<String> = (0..4).map(|i| format!("Out[{i}:1]: 42")).collect();
        assert_eq!(group_lines(few.clone(), false), few);
        // Lines that differ only by naming their own engine fold too.
        let named: Vec<String> = (0..8)
            .map(|i| {
                format!("[{i}:error] UnknownName: engine {i} has no function sum; engine 12 has")
            })
            .collect();
        assert_eq!(
            group_lines(named, false),
            ["[0-7:error] UnknownName: the engine has no function sum; engine 12 has"]
        );
        assert_eq!(
            without_own_id("Engine 3: reengine 3, engine 31, engine 3.", 3),
            "The engine: reengine 3, engine 31, the engine."
        );
        assert_eq!(
            without_own_id("Éngine 3, éngine 3", 3),
            "Éngine 3, éngine 3"
        );
        // A value that names its engine is a value: never folded.
        let values: Vec<String> = (0..8)
            .map(|i| format!("Out[{i}:1]: \"engine {i}\""))
            .collect();
        assert_eq!(group_lines(values.clone(), false), values);
        assert_eq!(engines(&[0, 1, 2]), "engines 0-2");
    }
}
