//! [`AsyncResult`]: the handle every request returns at once.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};
use zpar_protocol::{ReplyMetadata, Value};

/// One engine's answer to one request.
#[derive(Debug, Clone)]
pub struct EngineReply {
    /// The engine that answered; None for a reply the hub made without
    /// any engine (a refused request, which is always an error).
    pub engine: Option<u32>,
    /// The request's msg id.
    pub msg_id: String,
    /// The value, or what went wrong.
    pub outcome: Result<Value>,
    /// The engine's execution counter after this request.
    pub execution_count: Option<u64>,
    /// What the request printed.
    pub stdout: String,
    /// What it wrote to stderr (`debug`).
    pub stderr: String,
    /// When the engine started it (ISO 8601), if it ran.
    pub started: Option<String>,
    /// When the engine finished it (ISO 8601), if it ran.
    pub completed: Option<String>,
    /// When the client received the reply.
    pub received: SystemTime,
}

impl EngineReply {
    /// A reply as received: its outcome, and the output and timings its
    /// metadata carries. `engine` is None for a reply the hub made without
    /// any engine (a refused request).
    pub(crate) fn new(
        engine: Option<u32>,
        msg_id: &str,
        outcome: Result<Value>,
        reply: &zpar_protocol::TaskReply,
        metadata: ReplyMetadata,
    ) -> EngineReply {
        EngineReply {
            engine,
            msg_id: msg_id.to_string(),
            outcome,
            execution_count: reply.execution_count,
            stdout: metadata.stdout,
            stderr: metadata.stderr,
            started: metadata.started,
            completed: metadata.completed,
            received: SystemTime::now(),
        }
    }
}

/// Submission, start, completion and receipt of one request on one engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// When the client sent it.
    pub submitted: SystemTime,
    /// When the engine started it (ISO 8601).
    pub started: Option<String>,
    /// When the engine finished it (ISO 8601).
    pub completed: Option<String>,
    /// When the client received the reply.
    pub received: SystemTime,
}

/// A slot for one expected reply: which msg id, which engine (None: any,
/// for load-balanced tasks).
#[derive(Debug)]
pub(crate) struct Slot {
    pub msg_id: String,
    pub engine: Option<u32>,
    pub reply: Option<EngineReply>,
    /// Output streamed on iopub before the reply came.
    pub streamed: String,
    /// A value that came in shared memory, kept unread: the reply's
    /// outcome is a placeholder until it is asked for (see
    /// [`ResultState::fill_shared`]).
    pub shared: Option<zpar_protocol::value::SharedValue>,
}

impl Slot {
    /// The reply with its value read, if it came in shared memory.
    fn reply_read(&self) -> Option<EngineReply> {
        let mut reply = self.reply.clone()?;
        if let Some(shared) = &self.shared {
            reply.outcome = shared.to_value().map_err(Error::from);
        }
        Some(reply)
    }
}

#[derive(Debug)]
pub(crate) struct Parts {
    pub slots: Vec<Slot>,
    pub done: usize,
    /// Threads waiting on the condvar: a completion wakes them only if
    /// there are any (a wake-up is a system call; most results complete
    /// with nobody waiting on them yet).
    waiters: usize,
}

impl ResultState {
    /// Wakes the threads waiting for this result, if any.
    fn wake(&self, parts: &Parts) {
        if parts.waiters > 0 {
            self.cond.notify_all();
        }
    }
}

/// Shared between the I/O thread (which fills it) and the user's
/// [`AsyncResult`].
#[derive(Debug)]
pub(crate) struct ResultState {
    pub parts: Mutex<Parts>,
    pub cond: Condvar,
    pub submitted: SystemTime,
    /// Told their tags when this result completes (`imap`, [`wait`]), each
    /// under a watcher id of its own.
    on_done: Mutex<Vec<(u64, std::sync::mpsc::Sender<usize>, usize)>>,
    /// Shared segments the requests name, removed once every reply is in
    /// (or the hub is lost). While there are any, the I/O thread owns the
    /// state, so dropping the [`AsyncResult`] does not remove them before
    /// the engines have read them.
    segments: Mutex<Vec<zpar_protocol::bulk::Segment>>,
}

impl ResultState {
    pub fn new(slots: Vec<(String, Option<u32>)>) -> Arc<ResultState> {
        Arc::new(ResultState {
            parts: Mutex::new(Parts {
                slots: slots
                    .into_iter()
                    .map(|(msg_id, engine)| Slot {
                        msg_id,
                        engine,
                        reply: None,
                        streamed: String::new(),
                        shared: None,
                    })
                    .collect(),
                done: 0,
                waiters: 0,
            }),
            cond: Condvar::new(),
            submitted: SystemTime::now(),
            on_done: Mutex::new(Vec::new()),
            segments: Mutex::new(Vec::new()),
        })
    }

    /// Keeps `segments` until every slot is filled.
    pub fn keep_segments(&self, segments: Vec<zpar_protocol::bulk::Segment>) {
        if segments.is_empty() {
            return;
        }
        let parts = self.parts.lock().expect("result lock");
        if parts.done < parts.slots.len() {
            self.segments
                .lock()
                .expect("segments lock")
                .extend(segments);
        }
    }

    /// Whether it holds shared segments the engines still have to read.
    pub fn holds_segments(&self) -> bool {
        !self.segments.lock().expect("segments lock").is_empty()
    }

    /// Files a reply in its slot. Returns true if it was expected. A reply
    /// the hub made without naming an engine (`engine_known` false) fills
    /// the first open slot of its msg id.
    pub fn fill(&self, reply: EngineReply, engine_known: bool) -> bool {
        self.fill_shared(reply, engine_known, None)
    }

    /// [`fill`](Self::fill) with the reply's value kept in shared memory,
    /// unread: `get` reads it, straight into its place for `get_gathered`,
    /// and with no copy of it left behind in the result.
    pub fn fill_shared(
        &self,
        reply: EngineReply,
        engine_known: bool,
        shared: Option<zpar_protocol::value::SharedValue>,
    ) -> bool {
        let mut parts = self.parts.lock().expect("result lock");
        let idx = parts.slots.iter().position(|s| {
            s.reply.is_none()
                && s.msg_id == reply.msg_id
                && (!engine_known || s.engine.is_none_or(|e| Some(e) == reply.engine))
        });
        let Some(i) = idx else { return false };
        parts.slots[i].reply = Some(reply);
        parts.slots[i].shared = shared;
        parts.done += 1;
        if parts.done == parts.slots.len() {
            self.completed(&parts);
        }
        true
    }

    /// Every slot is filled: the segments go, waiters wake, watchers are
    /// told (called with the parts locked).
    fn completed(&self, parts: &Parts) {
        self.segments.lock().expect("segments lock").clear();
        self.wake(parts);
        for (_, tx, tag) in self.on_done.lock().expect("notify lock").drain(..) {
            let _ = tx.send(tag);
        }
    }

    /// Sends `tag` on `tx` when every slot is filled (at once if they
    /// are); returns the watcher's id, to [`forget`](Self::forget) it.
    pub fn notify_when_done(&self, tx: std::sync::mpsc::Sender<usize>, tag: usize) -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let parts = self.parts.lock().expect("result lock");
        if parts.done == parts.slots.len() {
            let _ = tx.send(tag);
        } else {
            self.on_done
                .lock()
                .expect("notify lock")
                .push((id, tx, tag));
        }
        id
    }

    /// Stops telling watcher `id` (a wait that gave up).
    pub fn forget(&self, id: u64) {
        self.on_done
            .lock()
            .expect("notify lock")
            .retain(|(watcher, _, _)| *watcher != id);
    }

    /// Fills every slot still open with `error` (the hub was lost: those
    /// replies will never come). Returns how many were open.
    pub fn fail_open(&self, error: &Error) -> usize {
        self.fail_slots(error, |_| true)
    }

    /// Fills the open slots of one msg id with `error`. Returns how many
    /// were open.
    pub fn fail_msg(&self, msg_id: &str, error: &Error) -> usize {
        self.fail_slots(error, |s| s.msg_id == msg_id)
    }

    /// Fills the open slots `pick` takes with `error`; wakes the waiters
    /// once every slot is filled. Returns how many it filled.
    fn fail_slots(&self, error: &Error, pick: impl Fn(&Slot) -> bool) -> usize {
        let mut parts = self.parts.lock().expect("result lock");
        let mut failed = 0;
        for s in parts
            .slots
            .iter_mut()
            .filter(|s| s.reply.is_none() && pick(s))
        {
            s.reply = Some(EngineReply {
                engine: s.engine,
                msg_id: s.msg_id.clone(),
                outcome: Err(error.clone()),
                execution_count: None,
                stdout: std::mem::take(&mut s.streamed),
                stderr: String::new(),
                started: None,
                completed: None,
                received: SystemTime::now(),
            });
            failed += 1;
        }
        parts.done += failed;
        if failed > 0 && parts.done == parts.slots.len() {
            self.completed(&parts);
        }
        failed
    }

    /// Appends streamed output for the slot of (msg id, engine).
    pub fn stream(&self, msg_id: &str, engine: u32, text: &str) {
        let mut parts = self.parts.lock().expect("result lock");
        if let Some(s) = parts.slots.iter_mut().find(|s| {
            s.msg_id == msg_id && s.engine.is_none_or(|e| e == engine) && s.reply.is_none()
        }) {
            s.streamed.push_str(text);
        }
    }
}

/// The result of a request to one or more engines, available at once and
/// filled in as replies arrive.
///
/// ```no_run
/// # fn main() -> zpar_client::Result<()> {
/// let client = zpar_client::Client::connect()?;
/// let ar = client.all().execute("let x = 6 * 7; x")?;
/// let by_engine = ar.get_dict()?;           // waits, engine id → value
/// println!("{by_engine:?} {:?}", ar.stdout());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AsyncResult {
    pub(crate) state: Arc<ResultState>,
    pub(crate) msg_ids: Vec<String>,
    /// How to shape the values: flatten per-engine lists (map, gather).
    pub(crate) shape: Shape,
    /// For a script file's run: where its lines came from, to report its
    /// errors in the file (see [`crate::script`]).
    pub(crate) source_map: Option<Arc<crate::script::SourceMap>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One value per reply.
    PerReply,
    /// Each reply is a list; concatenate them (map, gather).
    Concat,
}

impl AsyncResult {
    pub(crate) fn new(state: Arc<ResultState>, shape: Shape) -> AsyncResult {
        let msg_ids = {
            let parts = state.parts.lock().expect("result lock");
            let mut ids: Vec<String> = Vec::new();
            for s in &parts.slots {
                if !ids.contains(&s.msg_id) {
                    ids.push(s.msg_id.clone());
                }
            }
            ids
        };
        AsyncResult {
            state,
            msg_ids,
            shape,
            source_map: None,
        }
    }

    /// The msg ids of the requests behind this result.
    pub fn msg_ids(&self) -> &[String] {
        &self.msg_ids
    }

    /// Whether every reply has arrived.
    pub fn ready(&self) -> bool {
        let p = self.state.parts.lock().expect("result lock");
        p.done == p.slots.len()
    }

    /// Whether a reply that arrived is an error.
    pub fn has_failed(&self) -> bool {
        let p = self.state.parts.lock().expect("result lock");
        p.slots
            .iter()
            .any(|s| s.reply.as_ref().is_some_and(|r| r.outcome.is_err()))
    }

    /// How many replies have arrived, and how many are expected.
    pub fn progress(&self) -> (usize, usize) {
        let p = self.state.parts.lock().expect("result lock");
        (p.done, p.slots.len())
    }

    /// Waits until every reply is in, or `timeout` passes (None: forever).
    /// True if everything arrived.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut p = self.state.parts.lock().expect("result lock");
        while p.done < p.slots.len() {
            p.waiters += 1;
            match deadline {
                None => p = self.state.cond.wait(p).expect("result lock"),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        p.waiters -= 1;
                        return false;
                    }
                    p = self
                        .state
                        .cond
                        .wait_timeout(p, left)
                        .expect("result lock")
                        .0;
                }
            }
            p.waiters -= 1;
        }
        true
    }

    /// Waits for every reply; the values in request order, or the error(s).
    ///
    /// It waits as long as the work takes, but never past a lost hub: if
    /// the hub goes silent (killed, its host gone) every reply still
    /// missing fails with [`Error::HubLost`] within the client's limit
    /// ([`Client::set_hub_timeout`](crate::Client::set_hub_timeout)).
    ///
    /// ```no_run
    /// use zpar_client::Error;
    /// # fn main() -> zpar_client::Result<()> {
    /// let client = zpar_client::Client::connect()?;
    /// match client.all().execute("long_computation()")?.get() {
    ///     Ok(values) => println!("{values:?}"),
    ///     Err(Error::HubLost { url, .. }) => eprintln!("hub at {url} lost; restart it with --reuse"),
    ///     Err(e) => eprintln!("{e}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn get(&self) -> Result<Vec<Value>> {
        self.wait(None);
        self.collect()
    }

    /// Like [`get`](Self::get), giving up after `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<Value>> {
        if !self.wait(Some(timeout)) {
            let (done, total) = self.progress();
            return Err(Error::Timeout {
                waited: timeout,
                what: format!("{} of {total} replies to {}", total - done, self.describe()),
            });
        }
        self.collect()
    }

    /// The single value of a one-engine request.
    pub fn get_one(&self) -> Result<Value> {
        let mut v = self.get()?;
        match v.len() {
            1 => Ok(v.pop().expect("one")),
            n => Err(Error::Value(format!("expected one value, got {n}"))),
        }
    }

    /// Waits and converts the values into a serde type.
    pub fn get_as<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<T>> {
        self.get()?
            .iter()
            .map(|v| v.to_serde().map_err(|e| Error::Value(e.to_string())))
            .collect()
    }

    /// Waits; values keyed by engine id. With several requests per engine
    /// (a map), the last one's value wins.
    pub fn get_dict(&self) -> Result<BTreeMap<u32, Value>> {
        self.wait(None);
        let replies = self.replies();
        errors_of(&replies)?;
        Ok(replies
            .into_iter()
            .filter_map(|r| Some((r.engine?, r.outcome.ok()?)))
            .collect())
    }

    /// The replies received so far, in request order.
    pub fn replies(&self) -> Vec<EngineReply> {
        let p = self.state.parts.lock().expect("result lock");
        let replies = p.slots.iter().filter_map(Slot::reply_read);
        match &self.source_map {
            None => replies.collect(),
            Some(map) => replies
                .map(|mut r| {
                    r.outcome = r.outcome.map_err(|e| map.remap(e));
                    r
                })
                .collect(),
        }
    }

    /// What each engine printed, so far (streamed output included).
    pub fn stdout(&self) -> BTreeMap<u32, String> {
        let p = self.state.parts.lock().expect("result lock");
        let mut out: BTreeMap<u32, String> = BTreeMap::new();
        for s in &p.slots {
            match (&s.reply, s.engine) {
                (Some(r), _) => {
                    if let Some(e) = r.engine {
                        out.entry(e).or_default().push_str(&r.stdout)
                    }
                }
                (None, Some(e)) if !s.streamed.is_empty() => {
                    out.entry(e).or_default().push_str(&s.streamed)
                }
                _ => {}
            }
        }
        out
    }

    /// What each engine wrote to stderr.
    pub fn stderr(&self) -> BTreeMap<u32, String> {
        let p = self.state.parts.lock().expect("result lock");
        let mut out: BTreeMap<u32, String> = BTreeMap::new();
        for r in p.slots.iter().filter_map(|s| s.reply.as_ref()) {
            if let Some(e) = r.engine {
                out.entry(e).or_default().push_str(&r.stderr);
            }
        }
        out
    }

    /// Timings of each finished request, by engine.
    pub fn timings(&self) -> Vec<(u32, Timing)> {
        let p = self.state.parts.lock().expect("result lock");
        p.slots
            .iter()
            .filter_map(|s| s.reply.as_ref())
            .filter_map(|r| {
                Some((
                    r.engine?,
                    Timing {
                        submitted: self.state.submitted,
                        started: r.started.clone(),
                        completed: r.completed.clone(),
                        received: r.received,
                    },
                ))
            })
            .collect()
    }

    /// Waits and joins the values into one, as `gather` means it: numeric
    /// arrays into one numeric array, lists into one list.
    pub fn get_gathered(&self) -> Result<Value> {
        self.wait(None);
        {
            // Joined straight from the replies, each copied once into the
            // result (not cloned first); blocks still in shared memory are
            // read straight into their places, all at once.
            let p = self.state.parts.lock().expect("result lock");
            let filled: Vec<&Slot> = p.slots.iter().filter(|s| s.reply.is_some()).collect();
            let blocks: Option<Vec<crate::join::Block>> = filled
                .iter()
                .map(
                    |s| match (&s.shared, s.reply.as_ref().map(|r| &r.outcome)) {
                        (Some(shared), _) => Some(crate::join::Block::Shared(shared)),
                        (None, Some(Ok(v))) => Some(crate::join::Block::Value(v)),
                        _ => None,
                    },
                )
                .collect();
            if let Some(blocks) = blocks {
                return crate::join::concat_blocks(&blocks);
            }
        }
        let replies = self.replies();
        errors_of(&replies)?;
        Ok(crate::join::concat(
            replies.into_iter().filter_map(|r| r.outcome.ok()).collect(),
        ))
    }

    /// Waits, showing a progress bar (done/total, rate, ETA) when stderr is
    /// a terminal, and nothing when not.
    pub fn wait_interactive(&self) {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            self.wait(None);
            return;
        }
        let (_, total) = self.progress();
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} tasks  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        while !self.wait(Some(Duration::from_millis(100))) {
            bar.set_position(self.progress().0 as u64);
        }
        bar.finish_and_clear();
    }

    fn describe(&self) -> String {
        match self.msg_ids.as_slice() {
            [one] => format!("request {one}"),
            many => format!("{} requests", many.len()),
        }
    }

    fn collect(&self) -> Result<Vec<Value>> {
        let replies = self.replies();
        errors_of(&replies)?;
        let values = replies.into_iter().filter_map(|r| r.outcome.ok());
        match self.shape {
            Shape::PerReply => Ok(values.collect()),
            Shape::Concat => Ok(match crate::join::concat(values.collect()) {
                Value::Array(a) => a,
                Value::F64Array(a) => a.into_iter().map(Value::Float).collect(),
                Value::I64Array(a) => a.into_iter().map(Value::Int).collect(),
                other => vec![other],
            }),
        }
    }
}

fn errors_of(replies: &[EngineReply]) -> Result<()> {
    let mut errors: Vec<Error> = replies
        .iter()
        .filter_map(|r| r.outcome.as_ref().err().cloned())
        .collect();
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.pop().expect("one")),
        _ => Err(Error::Multiple(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(engine: u32, msg_id: &str, outcome: Result<Value>) -> EngineReply {
        EngineReply {
            engine: Some(engine),
            msg_id: msg_id.into(),
            outcome,
            execution_count: None,
            stdout: format!("out{engine}"),
            stderr: String::new(),
            started: None,
            completed: None,
            received: SystemTime::now(),
        }
    }

    #[test]
    fn fills_slots_in_request_order() {
        let st = ResultState::new(vec![("m".into(), Some(1)), ("m".into(), Some(0))]);
        let ar = AsyncResult::new(st.clone(), Shape::PerReply);
        assert!(!ar.ready());
        assert!(st.fill(reply(0, "m", Ok(Value::Int(0))), true));
        assert!(
            !st.fill(reply(0, "m", Ok(Value::Int(9))), true),
            "no second reply from one engine"
        );
        assert!(!ar.wait(Some(Duration::from_millis(1))));
        assert!(st.fill(reply(1, "m", Ok(Value::Int(1))), true));
        assert_eq!(ar.get().unwrap(), vec![Value::Int(1), Value::Int(0)]);
        assert_eq!(ar.get_dict().unwrap().len(), 2);
        assert_eq!(ar.stdout()[&1], "out1");
    }

    #[test]
    fn errors_are_combined() {
        let st = ResultState::new(vec![
            ("a".into(), Some(0)),
            ("b".into(), Some(1)),
            ("c".into(), Some(2)),
        ]);
        let ar = AsyncResult::new(st.clone(), Shape::PerReply);
        st.fill(reply(0, "a", Ok(Value::Int(0))), true);
        st.fill(
            reply(
                1,
                "b",
                Err(Error::EngineDied {
                    engine: 1,
                    msg_id: "b".into(),
                }),
            ),
            true,
        );
        st.fill(reply(2, "c", Err(Error::UnknownEngine(2))), true);
        let e = ar.get().unwrap_err();
        assert!(matches!(&e, Error::Multiple(v) if v.len() == 2), "{e}");
        assert!(e.to_string().contains("engine 1 died"));
    }

    #[test]
    fn a_lost_hub_fails_every_open_slot_once() {
        let st = ResultState::new(vec![("a".into(), Some(0)), ("a".into(), Some(1))]);
        let ar = AsyncResult::new(st.clone(), Shape::PerReply);
        st.fill(reply(0, "a", Ok(Value::Int(0))), true);
        let lost = Error::HubLost {
            url: "tcp://127.0.0.1:1".into(),
            reason: crate::error::HubLoss::Restarted,
        };
        assert_eq!(st.fail_open(&lost), 1);
        assert_eq!(st.fail_open(&lost), 0);
        assert!(ar.ready());
        let e = ar.get().unwrap_err();
        assert!(matches!(e, Error::HubLost { .. }), "{e}");
        assert_eq!(ar.replies()[0].outcome.as_ref().unwrap(), &Value::Int(0));
    }

    #[test]
    fn timeouts_say_what_is_missing() {
        let st = ResultState::new(vec![("a".into(), None)]);
        let ar = AsyncResult::new(st, Shape::Concat);
        let e = ar.get_timeout(Duration::from_millis(5)).unwrap_err();
        assert!(e.to_string().contains("1 of 1 replies to request a"), "{e}");
    }
}

/// When [`wait`] returns: as Python's `concurrent.futures.wait` and
/// ipyparallel's `Client.wait` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnWhen {
    /// When every result is complete.
    AllCompleted,
    /// When any result is complete.
    FirstCompleted,
    /// When any result is complete with an error (then every result that
    /// is complete counts), or when all are.
    FirstException,
}

/// What [`wait`] found: the indexes of the results complete and of those
/// still pending, each in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Waited {
    /// Complete results.
    pub done: Vec<usize>,
    /// Results still waiting for replies.
    pub pending: Vec<usize>,
}

/// Waits for `results` until `return_when` holds or `timeout` passes
/// (None: no limit), without polling: each result tells the waiter when
/// it completes.
///
/// ```no_run
/// use zpar_client::{wait, ReturnWhen};
/// # fn main() -> zpar_client::Result<()> {
/// let client = zpar_client::Client::connect()?;
/// let lb = client.load_balanced();
/// let jobs: Vec<_> = (0..8).map(|i| lb.apply("|x| 10 / x", vec![i.into()])).collect::<Result<_, _>>()?;
/// let refs: Vec<_> = jobs.iter().collect();
/// let w = wait(&refs, ReturnWhen::FirstException, None);
/// for i in &w.done {
///     if let Err(e) = jobs[*i].get() {
///         eprintln!("task {i} failed: {e}; {} still pending", w.pending.len());
///     }
/// }
/// # Ok(()) }
/// ```
pub fn wait(
    results: &[&AsyncResult],
    return_when: ReturnWhen,
    timeout: Option<Duration>,
) -> Waited {
    let deadline = timeout.map(|t| Instant::now() + t);
    let (tx, rx) = std::sync::mpsc::channel();
    let watchers: Vec<u64> = results
        .iter()
        .enumerate()
        .map(|(i, r)| r.state.notify_when_done(tx.clone(), i))
        .collect();
    drop(tx);
    let mut done = vec![false; results.len()];
    let (mut complete, mut failed) = (0, false);
    loop {
        let enough = match return_when {
            ReturnWhen::AllCompleted => complete == results.len(),
            ReturnWhen::FirstCompleted => complete > 0 || results.is_empty(),
            ReturnWhen::FirstException => failed || complete == results.len(),
        };
        if enough {
            break;
        }
        let next = match deadline {
            None => rx.recv().ok(),
            Some(d) => rx
                .recv_timeout(d.saturating_duration_since(Instant::now()))
                .ok(),
        };
        let Some(i) = next else { break };
        if !std::mem::replace(&mut done[i], true) {
            complete += 1;
            failed |= results[i].has_failed();
        }
    }
    for (r, id) in results.iter().zip(watchers) {
        r.state.forget(id);
    }
    // Results that completed after the last look count too.
    let (done, pending): (Vec<usize>, Vec<usize>) =
        (0..results.len()).partition(|i| done[*i] || results[*i].ready());
    Waited { done, pending }
}
