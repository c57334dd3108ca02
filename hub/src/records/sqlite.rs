//! The SQLite record store.

use super::record::{DbResult, Parts, TaskRecord};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::Path;
use zpar_protocol::{Channel, RecordStatus};

/// The SQLite store. Pending records stay in memory and reach the file
/// when they finish: one write per task, and a finished task is all a crash
/// must not lose (a task pending at a crash can never finish anyway).
///
/// A write or a commit that fails (a full disk, a file locked by another
/// process) loses nothing: the records stay in memory ([`Self::unwritten`])
/// and are written again at the next commit, and the commit reports the
/// failure, so the hub holds the replies that depend on them.
pub struct SqliteStore {
    conn: Connection,
    in_tx: bool,
    pub(super) max_buffer_bytes: usize,
    /// (msg id, engine or -1) → a record not yet finished.
    pending: HashMap<(String, i64), TaskRecord>,
    /// Finished records written in the open transaction: if SQLite rolls
    /// it back, they are written again.
    written: Vec<TaskRecord>,
    /// Finished records not in the file: their write failed, or their
    /// transaction was rolled back. Read like the file's rows; written at
    /// the next commit.
    unwritten: HashMap<(String, i64), TaskRecord>,
}

fn key_of(engine: Option<u32>) -> i64 {
    engine.map_or(-1, i64::from)
}

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    msg_id TEXT NOT NULL,
    engine INTEGER,
    engine_key INTEGER NOT NULL,
    client TEXT NOT NULL,
    msg_type TEXT NOT NULL,
    channel TEXT NOT NULL,
    submitted REAL NOT NULL,
    started TEXT,
    completed TEXT,
    received REAL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    request_buffers BLOB,
    result TEXT,
    result_buffers BLOB,
    stdout TEXT NOT NULL,
    stderr TEXT NOT NULL,
    ename TEXT,
    evalue TEXT,
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    label TEXT,
    UNIQUE (msg_id, engine_key)
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status);
";

/// Buffers as one blob: a count, then each length (u64 LE), then the bytes.
pub(super) fn pack(buffers: &[Vec<u8>]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(8 + 8 * buffers.len() + buffers.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(&(buffers.len() as u64).to_le_bytes());
    for b in buffers {
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    }
    for b in buffers {
        out.extend_from_slice(b);
    }
    out
}

pub(super) fn unpack(blob: &[u8]) -> Vec<Vec<u8>> {
    let read = |at: usize| {
        blob.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    };
    let Some(n) = read(0) else { return Vec::new() };
    let mut lens = Vec::with_capacity(n.min(1 << 16));
    for i in 0..n {
        match read(8 + 8 * i) {
            Some(l) => lens.push(l),
            None => return Vec::new(),
        }
    }
    let mut at = 8 + 8 * n;
    let mut out = Vec::with_capacity(lens.len());
    for l in lens {
        match blob.get(at..at.saturating_add(l)) {
            Some(b) => out.push(b.to_vec()),
            None => return Vec::new(),
        }
        at += l;
    }
    out
}

impl SqliteStore {
    /// Makes the database file at `path` and its `-wal` and `-shm` files
    /// private before SQLite opens them: each is created empty with mode
    /// 0600 if missing, or tightened (with a warning) if open to others;
    /// their folder, which may not be zpar's, is left alone.
    ///
    /// SQLite takes an empty database file for a new database, an empty
    /// `-wal` for no log and an empty `-shm` for an index to rebuild, so
    /// making them first changes nothing but their mode. (SQLite also gives
    /// the `-wal` and `-shm` it makes later — after a clean close deletes
    /// them — the database file's mode, so 0600 holds for the hub's life.)
    /// Creating them ourselves beats setting the umask around the open,
    /// which is process-wide and would race the hub's other threads.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("zpar-doc-db-{}", zpar_protocol::new_id()));
    /// std::fs::create_dir(&dir).unwrap();
    /// zpar_hub::records::SqliteStore::create_private_files(&dir.join("tasks.db")).unwrap();
    /// assert!(dir.join("tasks.db-wal").exists() && dir.join("tasks.db-shm").exists());
    /// # std::fs::remove_dir_all(dir).unwrap();
    /// ```
    pub fn create_private_files(path: &Path) -> std::io::Result<()> {
        zpar_protocol::private::touch(path)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            zpar_protocol::private::touch(Path::new(&side))?;
        }
        Ok(())
    }

    pub(super) fn open(path: &Path, max_buffer_bytes: usize) -> DbResult<SqliteStore> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL + NORMAL: a committed transaction survives the process being
        // killed (it is in the WAL file); only an OS crash could lose the
        // last few.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Another process holding the file's lock makes a write fail after
        // this wait (rusqlite's default is 5 s, all of it spent in the
        // hub's poll loop). A failed write loses nothing: the records are
        // kept and written at the next commit, and the replies wait.
        conn.busy_timeout(std::time::Duration::from_millis(250))?;
        conn.execute_batch(SCHEMA)?;
        // A database an older hub wrote has no `label` column: added empty.
        let has_label = conn
            .prepare("SELECT 1 FROM pragma_table_info('tasks') WHERE name = 'label'")?
            .exists([])?;
        if !has_label {
            conn.execute_batch("ALTER TABLE tasks ADD COLUMN label TEXT")?;
        }
        Ok(SqliteStore {
            conn,
            in_tx: false,
            max_buffer_bytes,
            pending: HashMap::new(),
            written: Vec::new(),
            unwritten: HashMap::new(),
        })
    }

    fn begin(&mut self) -> DbResult<()> {
        if !self.in_tx {
            self.conn.execute_batch("BEGIN")?;
            self.in_tx = true;
        }
        Ok(())
    }

    /// Writes the records whose write failed before, then commits. On an
    /// error every record not in the file stays in memory, to be written
    /// by the next call.
    pub(super) fn commit(&mut self) -> DbResult<()> {
        let mut failed = None;
        let again: Vec<TaskRecord> = self.unwritten.drain().map(|(_, r)| r).collect();
        for r in again {
            if let Err(e) = self.write(r) {
                failed.get_or_insert(e);
            }
        }
        if self.in_tx {
            if let Err(e) = self.conn.execute_batch("COMMIT") {
                self.after_error();
                return Err(e);
            }
            self.in_tx = false;
            self.written.clear();
        }
        failed.map_or(Ok(()), Err)
    }

    /// Writes a finished record in the open transaction; keeps it in memory
    /// if that fails.
    fn write(&mut self, r: TaskRecord) -> DbResult<()> {
        match self.upsert(&r) {
            Ok(()) => {
                self.written.push(r);
                Ok(())
            }
            Err(e) => {
                self.unwritten
                    .insert((r.msg_id.clone(), key_of(r.engine)), r);
                self.after_error();
                Err(e)
            }
        }
    }

    /// After a failed statement: if SQLite rolled the whole transaction
    /// back (it does on a full disk or an I/O error), what it held is to be
    /// written again.
    fn after_error(&mut self) {
        if self.in_tx && self.conn.is_autocommit() {
            self.in_tx = false;
            for r in self.written.drain(..) {
                self.unwritten
                    .insert((r.msg_id.clone(), key_of(r.engine)), r);
            }
        }
    }

    /// Keeps a pending record in memory, writes a finished one. A finished
    /// record leaves memory only once it is written.
    pub(super) fn put(&mut self, r: TaskRecord) -> DbResult<()> {
        let key = (r.msg_id.clone(), key_of(r.engine));
        if r.finished() {
            self.pending.remove(&key);
            self.unwritten.remove(&key);
            self.write(r)
        } else {
            self.pending.insert(key, r);
            Ok(())
        }
    }

    fn upsert(&mut self, r: &TaskRecord) -> DbResult<()> {
        self.begin()?;
        let request = serde_json::to_string(&r.request).expect("json");
        let result = r
            .result
            .as_ref()
            .map(|p| serde_json::to_string(p).expect("json"));
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO tasks (msg_id, engine, engine_key, client, msg_type, channel, submitted, started,
                 completed, received, status, request, request_buffers, result, result_buffers, stdout, stderr, ename, evalue, label)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
            )?
            .execute(params![
                r.msg_id,
                r.engine,
                r.engine.map_or(-1, i64::from),
                r.client,
                r.msg_type,
                r.channel.as_str(),
                r.submitted,
                r.started,
                r.completed,
                r.received,
                r.status.as_str(),
                request,
                pack(&r.request.buffers),
                result,
                r.result.as_ref().map(|p| pack(&p.buffers)),
                r.stdout,
                r.stderr,
                r.ename,
                r.evalue,
                r.label,
            ])?;
        Ok(())
    }

    fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRecord> {
        let request: String = row.get("request")?;
        let mut request: Parts = serde_json::from_str(&request).unwrap_or_default();
        request.buffers = row
            .get::<_, Option<Vec<u8>>>("request_buffers")?
            .map(|b| unpack(&b))
            .unwrap_or_default();
        let result: Option<String> = row.get("result")?;
        let result = match result {
            Some(s) => {
                let mut p: Parts = serde_json::from_str(&s).unwrap_or_default();
                p.buffers = row
                    .get::<_, Option<Vec<u8>>>("result_buffers")?
                    .map(|b| unpack(&b))
                    .unwrap_or_default();
                Some(p)
            }
            None => None,
        };
        Ok(TaskRecord {
            msg_id: row.get("msg_id")?,
            engine: row.get("engine")?,
            client: row.get("client")?,
            msg_type: row.get("msg_type")?,
            channel: text_column(row, "channel", Channel::parse)?,
            submitted: row.get("submitted")?,
            started: row.get("started")?,
            completed: row.get("completed")?,
            received: row.get("received")?,
            status: text_column(row, "status", RecordStatus::parse)?,
            request,
            result,
            stdout: row.get("stdout")?,
            stderr: row.get("stderr")?,
            ename: row.get("ename")?,
            evalue: row.get("evalue")?,
            label: row.get("label")?,
        })
    }

    pub(super) fn get(&self, msg_id: &str) -> DbResult<Vec<TaskRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT * FROM tasks WHERE msg_id = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([msg_id], SqliteStore::row)?;
        let mut out: Vec<TaskRecord> = rows.collect::<DbResult<_>>()?;
        out.retain(|r| {
            !self
                .unwritten
                .contains_key(&(r.msg_id.clone(), key_of(r.engine)))
        });
        out.extend(
            self.unwritten
                .values()
                .chain(self.pending.values())
                .filter(|r| r.msg_id == msg_id)
                .cloned(),
        );
        Ok(out)
    }

    pub(super) fn update(
        &mut self,
        msg_id: &str,
        engine: Option<u32>,
        f: impl FnOnce(&mut TaskRecord),
    ) -> DbResult<bool> {
        let key = key_of(engine);
        let held = self
            .pending
            .remove(&(msg_id.to_string(), key))
            .or_else(|| self.pending.remove(&(msg_id.to_string(), -1)))
            .or_else(|| self.unwritten.remove(&(msg_id.to_string(), key)))
            .or_else(|| self.unwritten.remove(&(msg_id.to_string(), -1)));
        if let Some(mut r) = held {
            f(&mut r);
            self.put(r)?;
            return Ok(true);
        }
        let found: Option<TaskRecord> = self
            .conn
            .prepare_cached("SELECT * FROM tasks WHERE msg_id = ?1 AND (engine_key = ?2 OR engine_key = -1) ORDER BY engine_key DESC LIMIT 1")?
            .query_row(params![msg_id, key], SqliteStore::row)
            .optional()?;
        let Some(mut r) = found else { return Ok(false) };
        let old_key = r.engine.map_or(-1, i64::from);
        f(&mut r);
        if r.engine.map_or(-1, i64::from) != old_key {
            let deleted = self.begin().and_then(|()| {
                self.conn
                    .prepare_cached("DELETE FROM tasks WHERE msg_id = ?1 AND engine_key = ?2")?
                    .execute(params![msg_id, old_key])
            });
            if let Err(e) = deleted {
                // Kept, to be written at the next commit (the stale row
                // under its old engine key stays; reads see this one).
                self.unwritten
                    .insert((r.msg_id.clone(), key_of(r.engine)), r);
                self.after_error();
                return Err(e);
            }
        }
        if r.finished() {
            self.write(r)?;
        } else {
            self.begin()?;
            self.upsert(&r)?;
        }
        Ok(true)
    }

    pub(super) fn all(&self) -> DbResult<Vec<TaskRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT * FROM tasks ORDER BY seq")?;
        let rows = stmt.query_map([], SqliteStore::row)?;
        let mut out: Vec<TaskRecord> = rows.collect::<DbResult<_>>()?;
        out.retain(|r| {
            !self
                .unwritten
                .contains_key(&(r.msg_id.clone(), key_of(r.engine)))
        });
        out.extend(self.unwritten.values().cloned());
        out.extend(self.pending_by_age().into_iter().cloned());
        Ok(out)
    }

    fn pending_by_age(&self) -> Vec<&TaskRecord> {
        let mut p: Vec<&TaskRecord> = self.pending.values().collect();
        p.sort_by(|a, b| a.submitted.total_cmp(&b.submitted));
        p
    }

    pub(super) fn history(&self) -> DbResult<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT msg_id FROM tasks GROUP BY msg_id ORDER BY MIN(seq)")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        let mut out: Vec<String> = rows.collect::<DbResult<_>>()?;
        for r in self.unwritten.values().chain(self.pending_by_age()) {
            if !out.contains(&r.msg_id) {
                out.push(r.msg_id.clone());
            }
        }
        Ok(out)
    }

    pub(super) fn purge(&mut self, msg_ids: &[String], all: bool) -> DbResult<usize> {
        let before = self.unwritten.len();
        self.unwritten
            .retain(|(id, _), _| !all && !msg_ids.contains(id));
        let forgotten = before - self.unwritten.len();
        self.begin()?;
        let n = if all {
            self.conn
                .execute("DELETE FROM tasks WHERE status != 'pending'", [])?
        } else {
            let mut n = 0;
            for id in msg_ids {
                n += self
                    .conn
                    .prepare_cached("DELETE FROM tasks WHERE msg_id = ?1 AND status != 'pending'")?
                    .execute([id])?;
            }
            n
        };
        self.commit()?;
        Ok(n + forgotten)
    }

    pub(super) fn max_engine(&self) -> DbResult<Option<u32>> {
        let stored: Option<u32> =
            self.conn
                .query_row("SELECT MAX(engine) FROM tasks", [], |r| r.get(0))?;
        Ok(stored
            .into_iter()
            .chain(self.pending.values().filter_map(|r| r.engine))
            .chain(self.unwritten.values().filter_map(|r| r.engine))
            .max())
    }

    pub(super) fn count(&self) -> DbResult<usize> {
        let stored: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get(0))?;
        Ok(stored as usize + self.pending.len() + self.unwritten.len())
    }
}

/// A text column holding one of zpar's names; a name no zpar wrote (a file
/// edited by hand, or from a newer zpar) is a clear error naming the column.
fn text_column<T>(
    row: &rusqlite::Row<'_>,
    column: &'static str,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown {column} {text:?} in the task database").into(),
        )
    })
}
