//! Task records: every request the hub forwards, and what came of it.
//!
//! A record is kept per (msg id, engine): a request fanned out to four
//! engines makes four records. Two stores share one interface, [`Records`]:
//!
//! - memory (default): bounded by `limit` records; when full, the oldest
//!   *finished* records go first, never a pending one;
//! - SQLite (`--db sqlite:PATH`): everything, in WAL mode. Writes of one
//!   loop iteration share a transaction that the hub commits *before* it
//!   forwards the replies of that iteration, so a `kill -9` of the hub never
//!   loses the record of a task whose result a client has seen.
//!
//! Buffers (bulk data) are recorded only up to `max_buffer_bytes` per
//! request or result; a larger one is recorded without its buffers, and
//! fetching it later says so.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
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
    fn buffer_bytes(&self) -> usize {
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
}

/// A parsed query: `{field: value}` for equality, or
/// `{field: {"$lt": v, "$gte": w, "$ne": x, "$in": [..]}}`; all must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter(Vec<(String, Cond)>);

impl Filter {
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
                            other => return Err(format!("{field}: unknown operator {other:?} ($eq $ne $lt $lte $gt $gte $in)")),
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

/// About how much the memory store holds before it drops old records: the
/// hub stays small however long it runs.
pub const MEMORY_STORE_BYTES: usize = 16 << 20;

/// Largest buffers recorded per request or result by default: small in
/// memory, larger on disk.
pub fn default_max_buffer(sqlite: bool) -> usize {
    if sqlite {
        64 << 20
    } else {
        64 << 10
    }
}

/// Where records live.
pub enum Records {
    /// Bounded, in memory.
    Memory(MemoryStore),
    /// Complete, in SQLite.
    Sqlite(SqliteStore),
}

/// Errors of the SQLite store.
pub type DbResult<T> = Result<T, rusqlite::Error>;

impl Records {
    /// A memory store keeping at most `limit` records and about
    /// [`MEMORY_STORE_BYTES`] of them.
    pub fn memory(limit: usize, max_buffer_bytes: usize) -> Records {
        Records::Memory(MemoryStore {
            records: HashMap::new(),
            count: 0,
            bytes: 0,
            max_bytes: MEMORY_STORE_BYTES,
            order: VecDeque::new(),
            finished: VecDeque::new(),
            limit: limit.max(1),
            max_buffer_bytes,
        })
    }

    /// A SQLite store at `path` (created if missing; existing records kept).
    pub fn sqlite(path: &Path, max_buffer_bytes: usize) -> DbResult<Records> {
        Ok(Records::Sqlite(SqliteStore::open(path, max_buffer_bytes)?))
    }

    fn cap(&self) -> usize {
        match self {
            Records::Memory(m) => m.max_buffer_bytes,
            Records::Sqlite(s) => s.max_buffer_bytes,
        }
    }

    /// Drops buffers over the size cap, marking them dropped.
    fn trim(&self, parts: &mut Parts) {
        if parts.buffer_bytes() > self.cap() {
            parts.buffers.clear();
            parts.buffers_dropped = true;
        }
    }

    /// Records a new request.
    pub fn insert(&mut self, mut rec: TaskRecord) -> DbResult<()> {
        self.trim(&mut rec.request);
        match self {
            Records::Memory(m) => {
                m.insert(rec);
                Ok(())
            }
            Records::Sqlite(s) => s.put(rec),
        }
    }

    /// Changes the record of (msg id, engine) — `engine` None finds the
    /// unassigned one. Returns false if there is no such record.
    pub fn update(
        &mut self,
        msg_id: &str,
        engine: Option<u32>,
        f: impl FnOnce(&mut TaskRecord),
    ) -> DbResult<bool> {
        let cap = self.cap();
        let fix = |r: &mut TaskRecord| {
            f(r);
            if let Some(p) = r.result.as_mut() {
                if p.buffer_bytes() > cap {
                    p.buffers.clear();
                    p.buffers_dropped = true;
                }
            }
        };
        match self {
            Records::Memory(m) => Ok(m.update(msg_id, engine, fix)),
            Records::Sqlite(s) => s.update(msg_id, engine, fix),
        }
    }

    /// Every record of a msg id (one per engine).
    pub fn get(&self, msg_id: &str) -> DbResult<Vec<TaskRecord>> {
        match self {
            Records::Memory(m) => Ok(m.records.get(msg_id).cloned().unwrap_or_default()),
            Records::Sqlite(s) => s.get(msg_id),
        }
    }

    /// Records passing a filter, oldest first.
    pub fn query(&self, filter: &Filter) -> DbResult<Vec<TaskRecord>> {
        match self {
            Records::Memory(m) => Ok(m
                .order
                .iter()
                .filter_map(|id| m.records.get(id))
                .flatten()
                .filter(|r| filter.matches(r))
                .cloned()
                .collect()),
            Records::Sqlite(s) => Ok(s.all()?.into_iter().filter(|r| filter.matches(r)).collect()),
        }
    }

    /// Every recorded msg id, oldest first.
    pub fn history(&self) -> DbResult<Vec<String>> {
        match self {
            Records::Memory(m) => Ok(m.history()),
            Records::Sqlite(s) => s.history(),
        }
    }

    /// Forgets finished records: these msg ids, or all. Pending ones stay.
    pub fn purge(&mut self, msg_ids: &[String], all: bool) -> DbResult<usize> {
        match self {
            Records::Memory(m) => Ok(m.purge(msg_ids, all)),
            Records::Sqlite(s) => s.purge(msg_ids, all),
        }
    }

    /// Makes this iteration's writes durable (SQLite commit).
    pub fn flush(&mut self) -> DbResult<()> {
        match self {
            Records::Memory(_) => Ok(()),
            Records::Sqlite(s) => s.commit(),
        }
    }

    /// The highest engine id seen in any record (to keep ids fresh after a
    /// restart).
    pub fn max_engine(&self) -> DbResult<Option<u32>> {
        match self {
            Records::Memory(m) => Ok(m.records.values().flatten().filter_map(|r| r.engine).max()),
            Records::Sqlite(s) => s.max_engine(),
        }
    }

    /// Records still pending (after a restart, these can never finish).
    pub fn pending(&self) -> DbResult<Vec<TaskRecord>> {
        let pending = RecordStatus::Pending.as_str();
        self.query(&Filter(vec![("status".into(), Cond::Eq(json!(pending)))]))
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        match self {
            Records::Memory(m) => m.count(),
            Records::Sqlite(s) => s.count().unwrap_or(0),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

#[cfg(test)]
mod tests {
    use super::sqlite::{pack, unpack};
    use super::*;
    use zpar_protocol::Status;

    const PENDING: RecordStatus = RecordStatus::Pending;
    const OK: RecordStatus = RecordStatus::Done(Status::Ok);

    fn rec(id: &str, engine: Option<u32>, status: RecordStatus) -> TaskRecord {
        TaskRecord {
            msg_id: id.into(),
            engine,
            client: "c".into(),
            msg_type: "apply_request".into(),
            channel: Channel::Task,
            submitted: 1.0,
            started: None,
            completed: None,
            received: None,
            status,
            request: Parts {
                buffers: vec![vec![1, 2, 3]],
                ..Parts::default()
            },
            result: None,
            stdout: String::new(),
            stderr: String::new(),
            ename: None,
            evalue: None,
        }
    }

    fn finish(r: &mut TaskRecord) {
        r.status = RecordStatus::Done(Status::Ok);
        r.result = Some(Parts {
            content: r#"{"status": "ok"}"#.into(),
            buffers: vec![vec![9; 10]],
            ..Parts::default()
        });
    }

    fn exercise(mut store: Records) {
        store.insert(rec("a", Some(0), PENDING)).unwrap();
        store.insert(rec("a", Some(1), PENDING)).unwrap();
        store.insert(rec("t", None, PENDING)).unwrap();
        assert!(store.update("a", Some(1), finish).unwrap());
        assert!(!store.update("zz", Some(1), finish).unwrap());
        // an unassigned task gets its engine on update
        assert!(store
            .update("t", Some(4), |r| {
                r.engine = Some(4);
                finish(r)
            })
            .unwrap());
        store.flush().unwrap();
        let a = store.get("a").unwrap();
        assert_eq!(a.len(), 2);
        let done = a.iter().find(|r| r.engine == Some(1)).unwrap();
        assert_eq!(done.result.as_ref().unwrap().buffers, vec![vec![9; 10]]);
        assert_eq!(store.get("t").unwrap()[0].engine, Some(4));
        assert_eq!(store.history().unwrap(), vec!["a", "t"]);
        // Times read as ISO 8601, and a number in a query is Unix seconds.
        assert_eq!(
            a[0].to_json(Some(&["submitted".to_string()]))["submitted"],
            "1970-01-01T00:00:01.000000Z"
        );
        let since =
            Filter::parse(&json!({"submitted": {"$gte": 0.5, "$lt": "1970-01-01T00:00:02Z"}}))
                .unwrap();
        assert_eq!(store.query(&since).unwrap().len(), 3);
        let f = Filter::parse(&json!({"status": "ok", "engine": {"$gte": 2}})).unwrap();
        let q = store.query(&f).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].msg_id, "t");
        assert_eq!(store.max_engine().unwrap(), Some(4));
        assert_eq!(store.pending().unwrap().len(), 1);
        assert_eq!(store.purge(&[], true).unwrap(), 2, "pending records stay");
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn memory_store() {
        exercise(Records::memory(100, 1 << 20));
    }

    #[test]
    fn sqlite_store_and_reopen() {
        let dir = std::env::temp_dir().join(format!("zpar-records-{}", zpar_protocol::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tasks.db");
        exercise(Records::sqlite(&path, 1 << 20).unwrap());
        let mut again = Records::sqlite(&path, 1 << 20).unwrap();
        assert_eq!(
            again.len(),
            0,
            "pending records live in memory; finished ones were purged"
        );
        again.insert(rec("kept", Some(2), PENDING)).unwrap();
        again.update("kept", Some(2), finish).unwrap();
        again.flush().unwrap();
        drop(again);
        let third = Records::sqlite(&path, 1 << 20).unwrap();
        let kept = third.get("kept").unwrap();
        assert_eq!(kept.len(), 1, "a finished record survives a reopen");
        assert_eq!(kept[0].result.as_ref().unwrap().buffers, vec![vec![9; 10]]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_sqlite_write_or_commit_keeps_the_record_and_writes_it_later() {
        let dir = std::env::temp_dir().join(format!("zpar-records-{}", zpar_protocol::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tasks.db");
        let mut store = Records::sqlite(&path, 1 << 20).unwrap();
        store.insert(rec("early", Some(0), PENDING)).unwrap();
        store.insert(rec("late", Some(1), PENDING)).unwrap();
        // Another process holds the file's write lock.
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        assert!(store.update("early", Some(0), finish).is_err(), "no write");
        assert!(store.flush().is_err(), "no commit");
        assert!(store.update("late", Some(1), finish).is_err());
        for id in ["early", "late"] {
            let r = store.get(id).unwrap();
            assert_eq!(r.len(), 1, "{id} is still there");
            assert_eq!(r[0].status, OK, "{id} is still finished");
        }
        assert!(store.flush().is_err(), "still locked");
        other.execute_batch("COMMIT").unwrap();
        store.flush().unwrap();
        drop(store);
        let again = Records::sqlite(&path, 1 << 20).unwrap();
        for id in ["early", "late"] {
            let r = again.get(id).unwrap();
            assert_eq!(r.len(), 1, "{id} reached the file");
            assert_eq!(r[0].status, OK);
            assert_eq!(r[0].result.as_ref().unwrap().buffers, vec![vec![9; 10]]);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn memory_store_is_bounded_and_keeps_pending() {
        let mut s = Records::memory(3, 1 << 20);
        s.insert(rec("p", Some(0), PENDING)).unwrap();
        for i in 0..10 {
            s.insert(rec(&format!("d{i}"), Some(0), OK)).unwrap();
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.get("p").unwrap().len(), 1, "never drops a pending record");
        assert!(s.get("d0").unwrap().is_empty());
        assert_eq!(s.get("d9").unwrap().len(), 1);
    }

    #[test]
    fn many_pending_records_do_not_slow_eviction_or_get_dropped() {
        // A client with 50,000 tasks queued, then 20,000 finishing: eviction
        // takes only finished ones, oldest first, and never walks the
        // pending ones (this test would take minutes if it did).
        let mut s = Records::memory(60_000, 1 << 30);
        if let Records::Memory(m) = &mut s {
            m.max_bytes = usize::MAX;
        }
        for i in 0..50_000 {
            s.insert(rec(&format!("p{i}"), Some(0), PENDING)).unwrap();
        }
        for i in 0..20_000 {
            s.insert(rec(&format!("d{i}"), Some(0), PENDING)).unwrap();
            s.update(&format!("d{i}"), Some(0), finish).unwrap();
        }
        assert_eq!(
            s.pending().unwrap().len(),
            50_000,
            "no pending record dropped"
        );
        assert_eq!(s.len(), 60_000, "bounded");
        assert!(
            s.get("d9999").unwrap().is_empty(),
            "the oldest finished went first"
        );
        assert_eq!(s.get("d10000").unwrap().len(), 1);
        assert_eq!(s.get("d19999").unwrap().len(), 1);
        let history = s.history().unwrap();
        assert_eq!(history.len(), s.len());
        assert_eq!(history[0], "p0");
    }

    #[test]
    fn memory_store_is_bounded_in_bytes() {
        let mut s = Records::memory(1000, 1 << 20);
        for i in 0..40 {
            let mut r = rec(&format!("b{i}"), Some(0), PENDING);
            r.request.buffers = vec![vec![0; 1 << 20]];
            s.insert(r).unwrap();
            s.update(&format!("b{i}"), Some(0), finish).unwrap();
        }
        let Records::Memory(m) = &s else {
            unreachable!()
        };
        assert!(m.bytes <= MEMORY_STORE_BYTES, "{} bytes held", m.bytes);
        assert!(s.len() < 40 && s.len() > 5);
        assert!(s.get("b39").unwrap().len() == 1, "the newest stays");
    }

    #[test]
    fn big_buffers_are_not_kept() {
        let mut s = Records::memory(10, 4);
        s.insert(rec("a", Some(0), PENDING)).unwrap();
        s.update("a", Some(0), finish).unwrap();
        let r = &s.get("a").unwrap()[0];
        assert!(r.request.buffers.len() == 1, "3 bytes fit");
        let res = r.result.as_ref().unwrap();
        assert!(res.buffers.is_empty() && res.buffers_dropped);
    }

    #[test]
    fn bad_queries_are_named() {
        assert!(Filter::parse(&json!({"colour": 1}))
            .unwrap_err()
            .contains("colour"));
        assert!(Filter::parse(&json!({"engine": {"$near": 1}}))
            .unwrap_err()
            .contains("$near"));
        assert!(Filter::parse(&json!([1])).is_err());
        assert!(Filter::parse(&Json::Null)
            .unwrap()
            .matches(&rec("x", None, OK)));
    }

    #[test]
    fn packing_round_trips_and_survives_garbage() {
        let b = vec![vec![], vec![1u8, 2], vec![3; 100]];
        assert_eq!(unpack(&pack(&b)), b);
        assert!(unpack(&[1, 2, 3]).is_empty());
        assert!(unpack(&pack(&b)[..20]).is_empty());
    }
}
