//! One record ([`TaskRecord`], its message [`Parts`]) and the queries
//! over records ([`Filter`]), shared by both stores.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};
use zpar_protocol::{Channel, RecordStatus};

/// JSON frames and buffers of one message, as recorded. The frames are
/// kept as the text that came (parsed only when someone asks), which costs
/// a fraction of the memory and time of a parsed tree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Parts {
    /// Header JSON text.
    pub header: String,
    /// Metadata JSON text.
    pub metadata: String,
    /// Content JSON text.
    pub content: String,
    /// Buffers, unless they were too large to keep.
    #[serde(skip)]
    pub buffers: Vec<Vec<u8>>,
    /// True when buffers existed but were not kept.
    #[serde(default)]
    pub buffers_dropped: bool,
    /// True when the message's values were in shared memory (`/dev/shm`
    /// segments between peers on one host): the hub never held their
    /// bytes, and the segments are removed once read, so the record does
    /// not keep the value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_shared_memory: bool,
}

impl Parts {
    pub(super) fn buffer_bytes(&self) -> usize {
        self.buffers.iter().map(Vec::len).sum()
    }

    /// The frames parsed, for display.
    pub fn to_json(&self) -> Json {
        let parse = |t: &str| serde_json::from_str::<Json>(t).unwrap_or(Json::Null);
        json!({
            "header": parse(&self.header),
            "metadata": parse(&self.metadata),
            "content": parse(&self.content),
            "buffers": self.buffers.len(),
            "buffers_dropped": self.buffers_dropped,
            "in_shared_memory": self.in_shared_memory,
        })
    }
}

/// One request on one engine.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// The request's msg id.
    pub msg_id: String,
    /// The engine it went to (None: a task not yet assigned).
    pub engine: Option<u32>,
    /// The requesting client's session.
    pub client: String,
    /// `execute_request`, `apply_request`, ...
    pub msg_type: String,
    /// Where the request came in.
    pub channel: Channel,
    /// When the hub received it (Unix seconds; ISO 8601 in queries).
    pub submitted: f64,
    /// When the engine started it (ISO 8601).
    pub started: Option<String>,
    /// When the engine finished it (ISO 8601).
    pub completed: Option<String>,
    /// When the hub received the reply (Unix seconds; ISO 8601 in queries).
    pub received: Option<f64>,
    /// Pending, or finished with the reply's status.
    pub status: RecordStatus,
    /// The request.
    pub request: Parts,
    /// The reply, once there is one.
    pub result: Option<Parts>,
    /// What it printed.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
    /// Error class, on error.
    pub ename: Option<String>,
    /// Error message, on error.
    pub evalue: Option<String>,
    /// The label the client gave the request (metadata `label`).
    pub label: Option<String>,
}

/// Fields a query can test.
pub const FIELDS: &[&str] = &[
    "msg_id",
    "engine",
    "client",
    "msg_type",
    "channel",
    "submitted",
    "started",
    "completed",
    "received",
    "status",
    "ename",
    "label",
];

impl TaskRecord {
    /// Roughly the memory the record holds, in bytes.
    pub fn size(&self) -> usize {
        let parts =
            |p: &Parts| p.header.len() + p.metadata.len() + p.content.len() + p.buffer_bytes();
        256 + parts(&self.request)
            + self.result.as_ref().map_or(0, parts)
            + self.stdout.len()
            + self.stderr.len()
            + self.evalue.as_ref().map_or(0, String::len)
    }

    /// Whether it has an answer.
    pub fn finished(&self) -> bool {
        self.status.is_finished()
    }

    fn field(&self, name: &str) -> Json {
        match name {
            "msg_id" => json!(self.msg_id),
            "engine" => json!(self.engine),
            "client" => json!(self.client),
            "msg_type" => json!(self.msg_type),
            "channel" => json!(self.channel.as_str()),
            "submitted" => json!(iso(self.submitted)),
            "started" => json!(self.started),
            "completed" => json!(self.completed),
            "received" => json!(self.received.map(iso)),
            "status" => json!(self.status.as_str()),
            "ename" => json!(self.ename),
            "label" => json!(self.label),
            _ => Json::Null,
        }
    }

    /// The record as JSON (all fields, or just `keys`), without buffers.
    pub fn to_json(&self, keys: Option<&[String]>) -> Json {
        let mut m = Map::new();
        for f in FIELDS
            .iter()
            .copied()
            .chain(["stdout", "stderr", "evalue", "result", "request"])
        {
            if keys.is_some_and(|k| !k.iter().any(|k| k == f)) {
                continue;
            }
            let v = match f {
                "stdout" => json!(self.stdout),
                "stderr" => json!(self.stderr),
                "evalue" => json!(self.evalue),
                "result" => self.result.as_ref().map_or(Json::Null, Parts::to_json),
                "request" => self.request.to_json(),
                other => self.field(other),
            };
            m.insert(f.to_string(), v);
        }
        Json::Object(m)
    }
}

/// A condition on one field.
#[derive(Debug, Clone, PartialEq)]
enum Cond {
    Eq(Json),
    Ne(Json),
    Lt(Json),
    Le(Json),
    Gt(Json),
    Ge(Json),
    In(Vec<Json>),
    /// A text field matching a shell-style pattern (`*`, `?`, `[abc]`,
    /// `[!abc]`, `[a-z]`), as Python's `fnmatch` (ipyparallel's `$glob`).
    Glob(String),
}

/// A parsed query: `{field: value}` for equality, or
/// `{field: {"$lt": v, "$gte": w, "$ne": x, "$in": [..], "$glob": p}}`;
/// all must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter(Vec<(String, Cond)>);

impl Filter {
    /// The query `{field: value}`.
    pub(super) fn equal(field: &str, value: Json) -> Filter {
        Filter(vec![(field.into(), Cond::Eq(value))])
    }

    /// Parses and validates a query; errors name the bad field or operator.
    pub fn parse(query: &Json) -> Result<Filter, String> {
        let obj = match query {
            Json::Null => return Ok(Filter::default()),
            Json::Object(o) => o,
            other => return Err(format!("a query is an object of conditions, not {other}")),
        };
        let mut conds = Vec::new();
        for (field, v) in obj {
            if !FIELDS.contains(&field.as_str()) {
                return Err(format!(
                    "unknown field {field:?}; fields are {}",
                    FIELDS.join(", ")
                ));
            }
            match v {
                Json::Object(ops) if ops.keys().all(|k| k.starts_with('$')) && !ops.is_empty() => {
                    for (op, arg) in ops {
                        let c = match op.as_str() {
                            "$eq" => Cond::Eq(arg.clone()),
                            "$ne" => Cond::Ne(arg.clone()),
                            "$lt" => Cond::Lt(arg.clone()),
                            "$lte" => Cond::Le(arg.clone()),
                            "$gt" => Cond::Gt(arg.clone()),
                            "$gte" => Cond::Ge(arg.clone()),
                            "$in" => match arg {
                                Json::Array(a) => Cond::In(a.clone()),
                                _ => return Err(format!("{field}: $in takes an array")),
                            },
                            "$glob" => match arg {
                                Json::String(p) => Cond::Glob(p.clone()),
                                _ => return Err(format!("{field}: $glob takes a pattern (text)")),
                            },
                            other => return Err(format!("{field}: unknown operator {other:?} ($eq $ne $lt $lte $gt $gte $in $glob)")),
                        };
                        conds.push((field.clone(), c));
                    }
                }
                other => conds.push((field.clone(), Cond::Eq(other.clone()))),
            }
        }
        Ok(Filter(conds))
    }

    /// Whether a record passes.
    pub fn matches(&self, r: &TaskRecord) -> bool {
        self.0.iter().all(|(f, c)| {
            let v = r.field(f);
            // Times are ISO 8601 text (which sorts as time does); a number
            // given for one is Unix seconds.
            let x = |x: &Json| match (TIME_FIELDS.contains(&f.as_str()), x.as_f64()) {
                (true, Some(secs)) => json!(iso(secs)),
                _ => x.clone(),
            };
            match c {
                Cond::Eq(y) => same(&v, &x(y)),
                Cond::Ne(y) => !same(&v, &x(y)),
                Cond::In(ys) => ys.iter().any(|y| same(&v, &x(y))),
                Cond::Lt(y) => order(&v, &x(y)).is_some_and(|o| o.is_lt()),
                Cond::Le(y) => order(&v, &x(y)).is_some_and(|o| o.is_le()),
                Cond::Gt(y) => order(&v, &x(y)).is_some_and(|o| o.is_gt()),
                Cond::Ge(y) => order(&v, &x(y)).is_some_and(|o| o.is_ge()),
                Cond::Glob(p) => v.as_str().is_some_and(|s| glob_matches(p, s)),
            }
        })
    }
}

/// The fields that hold times; records show them as ISO 8601, as Jupyter
/// and ipyparallel read them.
const TIME_FIELDS: &[&str] = &["submitted", "started", "completed", "received"];

/// Unix seconds as ISO 8601 (UTC, microseconds), as headers write dates.
fn iso(secs: f64) -> String {
    zpar_protocol::header::iso8601(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs.max(0.0)),
    )
}

/// Whether `text` matches the shell-style `pattern` whole: `*` any run of
/// characters, `?` one, `[abc]`, `[a-z]` and `[!abc]` one of (or none of) a
/// set; anything else itself. An unclosed `[` is itself.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Backtracking over the last `*`: linear in practice, and never worse
    // than |p| × |t|.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        let step = match p.get(i) {
            Some('*') => {
                star = Some((i, j));
                i += 1;
                continue;
            }
            Some('?') => Some(i + 1),
            Some('[') => set_match(&p, i, t[j]).and_then(|(hit, end)| hit.then_some(end)),
            Some(c) if *c == t[j] => Some(i + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                i = next;
                j += 1;
            }
            (None, Some((si, sj))) => {
                i = si + 1;
                j = sj + 1;
                star = Some((si, sj + 1));
            }
            (None, None) => return false,
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// The set `[...]` opening at `p[at]` against `c`: whether it matches, and
/// where the pattern goes on; a `[` without its `]` is a plain `[`.
fn set_match(p: &[char], at: usize, c: char) -> Option<(bool, usize)> {
    let mut k = at + 1;
    let negate = p.get(k) == Some(&'!');
    if negate {
        k += 1;
    }
    let first = k;
    let mut hit = false;
    while k < p.len() && (p[k] != ']' || k == first) {
        if p.get(k + 1) == Some(&'-') && p.get(k + 2).is_some_and(|e| *e != ']') {
            hit |= p[k] <= c && c <= p[k + 2];
            k += 3;
        } else {
            hit |= p[k] == c;
            k += 1;
        }
    }
    if k >= p.len() {
        return Some((c == '[', at + 1));
    }
    Some((hit != negate, k + 1))
}

fn same(a: &Json, b: &Json) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn order(a: &Json, b: &Json) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Json::String(x), Json::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Errors of the SQLite store.
pub type DbResult<T> = Result<T, rusqlite::Error>;
