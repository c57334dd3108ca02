//! The bounded in-memory record store.

use super::TaskRecord;
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
    /// msg ids, oldest first.
    pub(super) order: VecDeque<String>,
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
                self.order.push_back(id);
            }
        }
        self.evict();
    }

    /// Drops the oldest finished msg ids while over the limit.
    fn evict(&mut self) {
        let mut i = 0;
        while (self.count > self.limit || self.bytes > self.max_bytes) && i < self.order.len() {
            let id = &self.order[i];
            let done = self
                .records
                .get(id)
                .is_none_or(|v| v.iter().all(TaskRecord::finished));
            if done {
                let id = self.order.remove(i).expect("in range");
                let gone = self.records.remove(&id).unwrap_or_default();
                self.count -= gone.len();
                self.bytes -= gone.iter().map(TaskRecord::size).sum::<usize>();
            } else {
                i += 1;
            }
        }
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
        f(&mut v[i]);
        self.bytes = self.bytes + v[i].size() - before;
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
                    self.order.retain(|x| *x != id);
                }
            }
        }
        before - self.count()
    }
}
