//! The bounded in-memory record store.

use super::record::TaskRecord;
use std::collections::{HashMap, VecDeque};

/// The bounded in-memory store.
pub struct MemoryStore {
    pub(super) records: HashMap<String, Vec<TaskRecord>>,
    /// Records in `records`, kept as they change (counting is hot).
    pub(super) count: usize,
    /// Their [`TaskRecord::size`] summed, likewise.
    pub(super) bytes: usize,
    /// Most bytes to hold; the oldest finished records go first.
    pub(super) max_bytes: usize,
    /// msg ids, oldest first; ids since dropped are skipped when read and
    /// compacted away now and then.
    pub(super) order: VecDeque<String>,
    /// msg ids whose records have all finished, in the order they finished:
    /// what eviction takes first. Ids dropped or pending again are skipped.
    pub(super) finished: VecDeque<String>,
    pub(super) limit: usize,
    pub(super) max_buffer_bytes: usize,
}

impl MemoryStore {
    pub(super) fn count(&self) -> usize {
        self.count
    }

    pub(super) fn insert(&mut self, rec: TaskRecord) {
        self.count += 1;
        self.bytes += rec.size();
        let id = rec.msg_id.clone();
        match self.records.get_mut(&id) {
            Some(v) => v.push(rec),
            None => {
                self.records.insert(id.clone(), vec![rec]);
                self.order.push_back(id.clone());
            }
        }
        self.note_if_finished(&id);
        self.evict();
    }

    /// Queues `id` for eviction if all its records have finished.
    fn note_if_finished(&mut self, id: &str) {
        if self
            .records
            .get(id)
            .is_some_and(|v| v.iter().all(TaskRecord::finished))
        {
            self.finished.push_back(id.to_string());
        }
    }

    /// Drops the oldest finished msg ids while over the limit. O(1) a
    /// record amortized: pending records (a client may have a hundred
    /// thousand queued) are never walked over.
    fn evict(&mut self) {
        while self.count > self.limit || self.bytes > self.max_bytes {
            let Some(id) = self.finished.pop_front() else {
                break; // only pending records left: they stay
            };
            let done = self
                .records
                .get(&id)
                .is_some_and(|v| v.iter().all(TaskRecord::finished));
            if !done {
                continue; // dropped already, or pending again
            }
            let gone = self.records.remove(&id).unwrap_or_default();
            self.count -= gone.len();
            self.bytes -= gone.iter().map(TaskRecord::size).sum::<usize>();
        }
        self.compact();
    }

    /// Forgets ids of dropped records from the queues once they are mostly
    /// such ids.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.records.len() + 64 {
            let records = &self.records;
            self.order.retain(|id| records.contains_key(id));
        }
        if self.finished.len() > 2 * self.records.len() + 64 {
            let records = &self.records;
            self.finished.retain(|id| records.contains_key(id));
        }
    }

    /// Every msg id held, oldest first.
    pub(super) fn history(&self) -> Vec<String> {
        self.order
            .iter()
            .filter(|id| self.records.contains_key(*id))
            .cloned()
            .collect()
    }

    pub(super) fn update(
        &mut self,
        msg_id: &str,
        engine: Option<u32>,
        f: impl FnOnce(&mut TaskRecord),
    ) -> bool {
        let Some(v) = self.records.get_mut(msg_id) else {
            return false;
        };
        let idx = v
            .iter()
            .position(|r| r.engine == engine)
            .or_else(|| v.iter().position(|r| r.engine.is_none()));
        let Some(i) = idx else { return false };
        let before = v[i].size();
        let was_finished = v[i].finished();
        f(&mut v[i]);
        self.bytes = self.bytes + v[i].size() - before;
        if !was_finished && v[i].finished() {
            self.note_if_finished(msg_id);
        }
        self.evict();
        true
    }

    pub(super) fn purge(&mut self, msg_ids: &[String], all: bool) -> usize {
        let before = self.count();
        let targets: Vec<String> = if all {
            self.order.iter().cloned().collect()
        } else {
            msg_ids.to_vec()
        };
        for id in targets {
            if let Some(v) = self.records.get_mut(&id) {
                let n = v.len();
                let freed: usize = v
                    .iter()
                    .filter(|r| r.finished())
                    .map(TaskRecord::size)
                    .sum();
                v.retain(|r| !r.finished());
                self.count -= n - v.len();
                self.bytes -= freed;
                if v.is_empty() {
                    self.records.remove(&id);
                }
            }
        }
        self.compact();
        before - self.count()
    }
}
