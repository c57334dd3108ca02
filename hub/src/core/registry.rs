//! The engine table: ids, uuids, and what each engine is working on.
//!
//! Plain bookkeeping, no sockets: the hub loop asks it who is registered,
//! records what it forwards, and on an engine's death takes back everything
//! that engine still owed.

use super::queued::QueuedTask;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use zpar_protocol::vitals::EngineVitals;
use zpar_protocol::{Channel, Header};

/// A request forwarded to an engine and not yet answered.
pub struct Pending {
    /// The requesting client's identity ([] for the hub's own requests).
    pub client: Vec<u8>,
    /// The request's header, the parent of its reply.
    pub header: Header,
    /// Where it came from.
    pub channel: Channel,
    /// When the hub received it (Unix seconds).
    pub received: f64,
    /// A load-balanced task: what to run again elsewhere if this engine
    /// dies and the task has retries left.
    pub(crate) retry: Option<Box<QueuedTask>>,
    /// Its place among the requests sent to this engine on its channel
    /// (1 for the first; set by [`Registry::add_pending`]).
    pub seq: u64,
}

impl Pending {
    /// A request from `client` (`[]`: the hub's own), forwarded at
    /// `received` and owed by its engine.
    pub fn new(client: Vec<u8>, header: Header, channel: Channel, received: f64) -> Pending {
        Pending {
            client,
            header,
            channel,
            received,
            retry: None,
            seq: 0,
        }
    }
}

/// What the hub keeps per engine and channel to find requests lost on the
/// way ([`super::recall`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct ChannelLedger {
    /// Requests sent to the engine on this channel so far.
    pub sent: u64,
    /// When the hub last asked the engine about silent requests.
    pub recalled_at: Option<f64>,
    /// Questions sent since the engine last answered anything here.
    pub recalls_unanswered: u32,
    /// `sent` when the last question went out.
    pub sent_at_recall: u64,
}

/// One registered engine.
pub struct EngineEntry {
    /// Its id.
    pub id: u32,
    /// Its uuid, also its identity on the engine sockets.
    pub uuid: Vec<u8>,
    /// Requests it owes replies to, by msg id; changed only through the
    /// [`Registry`], which keeps its engines ordered by load.
    pending: HashMap<String, Pending>,
    /// How many replies it has sent.
    pub completed: u64,
    /// The scheduler's clock value when it last got a task.
    last_assigned: u64,
    /// The address it said its peers reach it at.
    pub host: Option<String>,
    /// Where other engines send it relayed chunks (`tcp://host:port`);
    /// None for an engine that takes every chunk from the hub.
    pub relay: Option<String>,
    /// Per channel (mux, task, control): what was sent and asked.
    pub ledgers: [ChannelLedger; 3],
    /// What its heartbeat last reported (RSS, CPU share); `beat_age` unset.
    pub vitals: EngineVitals,
    /// When its last heartbeat pong came (Unix seconds).
    pub last_beat: Option<f64>,
    /// The heartbeat connection it shares with the engines of its
    /// process (None: one of its own); set through the [`Registry`],
    /// which counts the connections.
    heartbeat: Option<String>,
}

impl EngineEntry {
    /// Requests it owes replies to, by msg id.
    pub fn pending(&self) -> &HashMap<String, Pending> {
        &self.pending
    }

    /// What an engine taken out of the registry
    /// ([`Registry::unregister`]) owed.
    pub fn into_pending(self) -> HashMap<String, Pending> {
        self.pending
    }

    /// The scheduler's clock value when it last got a task.
    pub fn last_assigned(&self) -> u64 {
        self.last_assigned
    }

    /// Where it stands in [`Registry::least_loaded`]'s order.
    fn load_key(&self) -> (usize, u64, u32) {
        (self.pending.len(), self.last_assigned, self.id)
    }

    /// The ledger of one channel.
    pub fn ledger(&mut self, channel: Channel) -> &mut ChannelLedger {
        &mut self.ledgers[match channel {
            Channel::Mux => 0,
            Channel::Task => 1,
            Channel::Control => 2,
        }]
    }

    /// Load-balanced tasks in its queue.
    pub fn tasks(&self) -> u64 {
        self.pending
            .values()
            .filter(|p| p.channel == Channel::Task)
            .count() as u64
    }
}

/// Registered engines by id and uuid, and in order of load, so that
/// neither addressing one engine nor picking the least loaded walks them
/// all. Ids count up from 0 and are never reused.
#[derive(Default)]
pub struct Registry {
    engines: BTreeMap<u32, EngineEntry>,
    by_uuid: HashMap<Vec<u8>, u32>,
    /// Every engine's (requests pending, last assigned, id): the least
    /// loaded first, the least recently assigned of those first.
    by_load: BTreeSet<(usize, u64, u32)>,
    /// Every engine's (last assigned, id): the least recently assigned
    /// first.
    by_recency: BTreeSet<(u64, u32)>,
    next_id: u32,
    /// Engines per shared heartbeat connection.
    heartbeat_routes: HashMap<String, usize>,
    /// Engines with a heartbeat connection of their own.
    own_heartbeats: usize,
}

impl Registry {
    /// Registers `uuid`. A uuid already registered keeps its id; a requested
    /// id (an engine coming back after a hub restart) is honoured if no
    /// other engine holds it. Returns the id and whether it is new.
    pub fn register(&mut self, uuid: &[u8], requested: Option<u32>) -> (u32, bool) {
        if let Some(id) = self.by_uuid.get(uuid) {
            return (*id, false);
        }
        let id = match requested {
            Some(r) if !self.engines.contains_key(&r) => r,
            _ => self.next_id,
        };
        self.next_id = self.next_id.max(id + 1);
        self.by_load.insert((0, 0, id));
        self.by_recency.insert((0, id));
        self.engines.insert(
            id,
            EngineEntry {
                id,
                uuid: uuid.to_vec(),
                pending: HashMap::new(),
                completed: 0,
                last_assigned: 0,
                host: None,
                relay: None,
                ledgers: Default::default(),
                vitals: EngineVitals::default(),
                last_beat: None,
                heartbeat: None,
            },
        );
        self.own_heartbeats += 1;
        self.by_uuid.insert(uuid.to_vec(), id);
        (id, true)
    }

    /// Removes an engine, returning what it owed.
    pub fn unregister(&mut self, id: u32) -> Option<EngineEntry> {
        let e = self.engines.remove(&id)?;
        self.by_uuid.remove(&e.uuid);
        self.by_load.remove(&e.load_key());
        self.by_recency.remove(&(e.last_assigned, id));
        self.count_heartbeat(e.heartbeat.as_deref(), false);
        Some(e)
    }

    /// Notes which heartbeat connection engine `id` shares (None: one of
    /// its own), as its registration said.
    pub fn set_heartbeat(&mut self, id: u32, route: Option<String>) {
        let Some(e) = self.engines.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut e.heartbeat, route);
        let new = e.heartbeat.clone();
        self.count_heartbeat(old.as_deref(), false);
        self.count_heartbeat(new.as_deref(), true);
    }

    fn count_heartbeat(&mut self, route: Option<&str>, added: bool) {
        match (route, added) {
            (None, true) => self.own_heartbeats += 1,
            (None, false) => self.own_heartbeats -= 1,
            (Some(r), true) => *self.heartbeat_routes.entry(r.to_string()).or_default() += 1,
            (Some(r), false) => {
                if let Some(n) = self.heartbeat_routes.get_mut(r) {
                    *n -= 1;
                    if *n == 0 {
                        self.heartbeat_routes.remove(r);
                    }
                }
            }
        }
    }

    /// Connections the registered engines hold to the hub: each its link,
    /// and a heartbeat connection per process (or per engine, for those
    /// with their own).
    pub fn connections(&self) -> usize {
        self.engines.len() + self.heartbeat_routes.len() + self.own_heartbeats
    }

    /// What [`Registry::connections`] would be with one more engine, whose
    /// heartbeat goes on `route`.
    pub fn connections_with(&self, route: Option<&str>) -> usize {
        let new_heartbeat = route.is_none_or(|r| !self.heartbeat_routes.contains_key(r));
        self.connections() + 1 + usize::from(new_heartbeat)
    }

    /// How many engines are registered.
    pub fn len(&self) -> usize {
        self.engines.len()
    }

    /// Whether no engine is registered.
    pub fn is_empty(&self) -> bool {
        self.engines.is_empty()
    }

    /// The engine owing the fewest replies (the least recently assigned of
    /// those), without walking the others.
    pub fn least_loaded(&self) -> Option<u32> {
        self.by_load.first().map(|(_, _, id)| *id)
    }

    /// The engines that owe replies, without walking the idle ones (the
    /// hub looks for silent requests every second).
    pub fn owing_ids(&self) -> Vec<u32> {
        self.by_load
            .iter()
            .rev()
            .take_while(|(pending, _, _)| *pending > 0)
            .map(|(_, _, id)| *id)
            .collect()
    }

    /// The engine assigned a task least recently, without walking the
    /// others.
    pub fn least_recent(&self) -> Option<u32> {
        self.by_recency.first().map(|(_, id)| *id)
    }

    /// Notes that `id` got a task at the scheduler's `clock`.
    pub fn mark_assigned(&mut self, id: u32, clock: u64) {
        self.change(id, |e| e.last_assigned = clock);
    }

    /// Changes engine `id` with `f`, keeping the load orders true.
    fn change<T>(&mut self, id: u32, f: impl FnOnce(&mut EngineEntry) -> T) -> Option<T> {
        let e = self.engines.get_mut(&id)?;
        let (load, recency) = (e.load_key(), (e.last_assigned, id));
        let out = f(e);
        let (new_load, new_recency) = (e.load_key(), (e.last_assigned, id));
        if new_load != load {
            self.by_load.remove(&load);
            self.by_load.insert(new_load);
        }
        if new_recency != recency {
            self.by_recency.remove(&recency);
            self.by_recency.insert(new_recency);
        }
        Some(out)
    }

    /// The id registered for a uuid.
    pub fn id_of(&self, uuid: &[u8]) -> Option<u32> {
        self.by_uuid.get(uuid).copied()
    }

    /// An engine by id.
    pub fn get(&self, id: u32) -> Option<&EngineEntry> {
        self.engines.get(&id)
    }

    /// An engine by id, to change.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut EngineEntry> {
        self.engines.get_mut(&id)
    }

    /// Every engine, by id.
    pub fn engines(&self) -> impl Iterator<Item = &EngineEntry> {
        self.engines.values()
    }

    /// The ids.
    pub fn ids(&self) -> Vec<u32> {
        self.engines.keys().copied().collect()
    }

    /// id → uuid, as clients see it.
    pub fn table(&self) -> BTreeMap<u32, String> {
        self.engines
            .values()
            .map(|e| (e.id, String::from_utf8_lossy(&e.uuid).into_owned()))
            .collect()
    }

    /// id → host, for engines that said where they run.
    pub fn hosts(&self) -> BTreeMap<u32, String> {
        self.engines
            .values()
            .filter_map(|e| Some((e.id, e.host.clone()?)))
            .collect()
    }

    /// Raises the next fresh id to at least `id` (after a restart).
    pub fn reserve_ids_below(&mut self, id: u32) {
        self.next_id = self.next_id.max(id);
    }

    /// Records that `id` now owes a reply to `msg_id`.
    pub fn add_pending(&mut self, id: u32, msg_id: String, mut pending: Pending) {
        self.change(id, |e| {
            let ledger = e.ledger(pending.channel);
            ledger.sent += 1;
            pending.seq = ledger.sent;
            e.pending.insert(msg_id, pending);
        });
    }

    /// `id` answered `msg_id`; returns what was pending.
    pub fn complete(&mut self, id: u32, msg_id: &str) -> Option<Pending> {
        self.change(id, |e| {
            let p = e.pending.remove(msg_id);
            if p.is_some() {
                e.completed += 1;
            }
            p
        })
        .flatten()
    }

    /// `id` will not answer `msg_id` (it never got it, or the answer was
    /// lost); returns what was pending.
    pub fn drop_pending(&mut self, id: u32, msg_id: &str) -> Option<Pending> {
        self.change(id, |e| e.pending.remove(msg_id)).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Pending {
        Pending::new(
            b"c".to_vec(),
            zpar_protocol::Header::new("execute_request", "s", "u"),
            Channel::Mux,
            0.0,
        )
    }

    #[test]
    fn the_load_orders_agree_with_a_walk_over_every_engine() {
        let mut r = Registry::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut clock = 0;
        let mut next_msg = 0;
        for _ in 0..2_000 {
            let ids = r.ids();
            let pick = rng.usize(..ids.len().max(1));
            let some_id = || ids.get(pick).copied();
            match rng.u8(..6) {
                0 => {
                    r.register(format!("e{}", rng.u32(..40)).as_bytes(), None);
                }
                1 => {
                    if let Some(id) = some_id() {
                        r.unregister(id);
                    }
                }
                2 | 3 => {
                    if let Some(id) = some_id() {
                        next_msg += 1;
                        r.add_pending(id, format!("m{next_msg}"), pending());
                    }
                }
                4 => {
                    if let Some(id) = some_id() {
                        let owed: Vec<String> =
                            r.get(id).unwrap().pending().keys().cloned().collect();
                        if let Some(m) = owed.first() {
                            if rng.bool() {
                                r.complete(id, m).unwrap();
                            } else {
                                r.drop_pending(id, m).unwrap();
                            }
                        }
                    }
                }
                _ => {
                    if let Some(id) = some_id() {
                        clock += 1;
                        r.mark_assigned(id, clock);
                    }
                }
            }
            let walked_load = r
                .engines()
                .min_by_key(|e| (e.pending().len(), e.last_assigned(), e.id))
                .map(|e| e.id);
            let walked_recency = r
                .engines()
                .min_by_key(|e| (e.last_assigned(), e.id))
                .map(|e| e.id);
            assert_eq!(r.least_loaded(), walked_load);
            assert_eq!(r.least_recent(), walked_recency);
            let mut owing = r.owing_ids();
            owing.sort();
            let walked_owing: Vec<u32> = r
                .engines()
                .filter(|e| !e.pending().is_empty())
                .map(|e| e.id)
                .collect();
            assert_eq!(owing, walked_owing);
            assert_eq!((r.by_load.len(), r.by_recency.len()), (r.len(), r.len()));
        }
    }

    #[test]
    fn ids_count_up_and_are_never_reused() {
        let mut r = Registry::default();
        assert_eq!(r.register(b"a", None), (0, true));
        assert_eq!(r.register(b"b", None), (1, true));
        assert_eq!(r.register(b"a", None), (0, false), "same uuid, same id");
        r.unregister(0).unwrap();
        assert_eq!(r.register(b"c", None), (2, true));
        assert_eq!(r.ids(), vec![1, 2]);
    }

    #[test]
    fn requested_ids_are_honoured_when_free() {
        let mut r = Registry::default();
        assert_eq!(r.register(b"a", Some(5)), (5, true));
        assert_eq!(r.register(b"b", Some(5)), (6, true));
        assert_eq!(r.register(b"c", None), (7, true));
    }

    #[test]
    fn pending_work_is_returned_on_unregister() {
        let mut r = Registry::default();
        r.register(b"a", None);
        r.add_pending(0, "m1".into(), pending());
        r.add_pending(0, "m2".into(), pending());
        assert!(r.complete(0, "m1").is_some());
        assert!(r.complete(0, "m1").is_none());
        let e = r.unregister(0).unwrap();
        assert_eq!(e.completed, 1);
        assert_eq!(e.pending.len(), 1);
        assert!(r.id_of(b"a").is_none());
    }

    #[test]
    fn connections_count_a_link_per_engine_and_a_heartbeat_per_process() {
        let mut r = Registry::default();
        let (a, _) = r.register(b"a", None);
        assert_eq!(r.connections(), 2, "a link and a heartbeat of its own");
        r.set_heartbeat(a, Some("p1".into()));
        assert_eq!(r.connections(), 2);
        assert_eq!(r.connections_with(Some("p1")), 3, "p1's heartbeat is open");
        assert_eq!(r.connections_with(Some("p2")), 4);
        assert_eq!(r.connections_with(None), 4);
        let (b, _) = r.register(b"b", None);
        r.set_heartbeat(b, Some("p1".into()));
        assert_eq!(r.connections(), 3, "two links, one shared heartbeat");
        let (c, _) = r.register(b"c", None);
        assert_eq!(r.connections(), 5);
        r.set_heartbeat(c, Some("p2".into()));
        assert_eq!(r.connections(), 5);
        r.unregister(a);
        assert_eq!(r.connections(), 4, "p1 still holds b");
        r.unregister(b);
        assert_eq!(r.connections(), 2, "p1 closed with its last engine");
        r.set_heartbeat(c, None);
        assert_eq!(r.connections(), 2);
        r.unregister(c);
        assert_eq!(r.connections(), 0);
    }
}
