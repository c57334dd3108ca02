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

use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use zpar_protocol::RecordStatus;

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
        self.query(&Filter::equal("status", json!(pending)))
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
mod record;
mod sqlite;

pub use memory::MemoryStore;
pub use record::{DbResult, Filter, Parts, TaskRecord, FIELDS};
pub use sqlite::SqliteStore;

#[cfg(test)]
mod tests {
    use super::sqlite::{pack, unpack};
    use super::*;
    use serde_json::Value as Json;
    use zpar_protocol::Channel;
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
            label: None,
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
        store
            .insert(TaskRecord {
                label: Some("fit-7".into()),
                ..rec("t", None, PENDING)
            })
            .unwrap();
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
        // Labels are kept, shown and matched by glob.
        let fits = Filter::parse(&json!({"label": {"$glob": "fit-*"}})).unwrap();
        let q = store.query(&fits).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].to_json(Some(&["label".to_string()]))["label"], "fit-7");
        let none = Filter::parse(&json!({"label": {"$glob": "fit-?x"}})).unwrap();
        assert!(store.query(&none).unwrap().is_empty());
        assert_eq!(store.max_engine().unwrap(), Some(4));
        assert_eq!(store.pending().unwrap().len(), 1);
        assert_eq!(store.purge(&[], true).unwrap(), 2, "pending records stay");
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn globs_match_as_fnmatch_does() {
        use super::record::glob_matches as g;
        assert!(g("fit-*", "fit-"));
        assert!(g("fit-*", "fit-12"));
        assert!(!g("fit-*", "fix-12"));
        assert!(g("*", ""));
        assert!(g("a?c", "abc") && !g("a?c", "ac"));
        assert!(g("*b*b*", "abcbd") && !g("*b*b*", "abcd"));
        assert!(g("run[0-9]", "run7") && !g("run[0-9]", "runx"));
        assert!(g("run[!0-9]", "runx") && !g("run[!0-9]", "run7"));
        assert!(
            g("[]]", "]") && g("a[", "a["),
            "a ] first is itself, an unclosed [ too"
        );
        assert!(g("é*", "été"));
        assert!(!g("abc", "abcd") && !g("abcd", "abc"));
    }

    #[test]
    fn a_database_without_labels_gets_the_column() {
        let dir = std::env::temp_dir().join(format!("zpar-records-{}", zpar_protocol::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        let old = rusqlite::Connection::open(&path).unwrap();
        old.execute_batch(&sqlite::SCHEMA.replace("    label TEXT,\n", ""))
            .unwrap();
        drop(old);
        let mut store = Records::sqlite(&path, 1 << 20).unwrap();
        let mut r = rec("l", Some(0), PENDING);
        r.label = Some("old-db".into());
        finish(&mut r);
        store.insert(r).unwrap();
        store.flush().unwrap();
        assert_eq!(store.get("l").unwrap()[0].label.as_deref(), Some("old-db"));
        std::fs::remove_dir_all(dir).unwrap();
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
