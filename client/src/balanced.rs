//! [`LoadBalancedView`]: tasks for whichever engine is free, with retries,
//! timeouts, dependencies, streaming (`imap`) and batches.

use crate::client::{Client, Request};
use crate::error::{Error, Result};
use crate::result::{AsyncResult, Shape};
use crate::view::MAP_CHUNK;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use zpar_protocol::Channel;
use zpar_protocol::{ApplyRequest, Content, RequestMetadata, Value};

/// The engine-side loop that calls a function once per argument list.
const BATCH: &str = "|zpar_calls, zpar_f| { let zpar_out = []; for zpar_args in zpar_calls { let zpar_g = zpar_f; for zpar_a in zpar_args { zpar_g = zpar_g.curry(zpar_a); } zpar_out.push(zpar_g.call()); } zpar_out }";

/// Tasks for whichever engine is free; the hub chooses (least load, LRU
/// or random: `zpar hub --scheme`).
///
/// ```no_run
/// use std::time::{Duration, Instant};
/// use zpar_client::{Client, Value};
/// # fn main() -> zpar_client::Result<()> {
/// let lb = Client::connect()?.load_balanced().retries(2).timeout(Duration::from_secs(10));
/// let first = lb.apply("|x| x + 1", vec![Value::Int(41)])?;
/// let second = lb.clone().after(first.msg_ids()).apply("|| 2", vec![])?;
/// assert_eq!(first.get_one()?, Value::Int(42));
/// for v in lb.imap("|x| x * x", (0..100).map(Value::Int), false, 16) {
///     println!("{}", v?); // in completion order, at most 16 outstanding
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LoadBalancedView {
    client: Client,
    targets: Option<Vec<u32>>,
    retries: u32,
    timeout: Option<Duration>,
    after: Vec<String>,
    follow: Vec<String>,
    label: Option<String>,
    /// Wait for each request before returning its result.
    pub block: bool,
}

impl Client {
    /// A load-balanced view over all engines.
    pub fn load_balanced(&self) -> LoadBalancedView {
        LoadBalancedView::new(self.clone(), None)
    }
}

impl LoadBalancedView {
    pub(crate) fn new(client: Client, targets: Option<Vec<u32>>) -> LoadBalancedView {
        LoadBalancedView {
            client,
            targets,
            retries: 0,
            timeout: None,
            after: Vec::new(),
            follow: Vec::new(),
            label: None,
            block: false,
        }
    }

    /// Restricts the view to these engines.
    pub fn with_targets(mut self, ids: Vec<u32>) -> LoadBalancedView {
        self.targets = Some(ids);
        self
    }

    /// Re-runs a task elsewhere up to `n` times if its engine dies.
    pub fn retries(mut self, n: u32) -> LoadBalancedView {
        self.retries = n;
        self
    }

    /// Stops a task that runs longer than `t` (wall clock, from its start on
    /// the engine); it fails with [`Error::Timeout`](crate::Error::Timeout).
    pub fn timeout(mut self, t: Duration) -> LoadBalancedView {
        self.timeout = Some(t);
        self
    }

    /// Runs tasks only after these msg ids have succeeded.
    pub fn after(mut self, msg_ids: &[String]) -> LoadBalancedView {
        self.after = msg_ids.to_vec();
        self
    }

    /// Runs tasks on the engine(s) where these msg ids ran.
    pub fn follow(mut self, msg_ids: &[String]) -> LoadBalancedView {
        self.follow = msg_ids.to_vec();
        self
    }

    /// The same view, its tasks labelled `label` in the hub's task
    /// records (see [`DirectView::label`](crate::DirectView::label)).
    pub fn label(mut self, label: impl Into<String>) -> LoadBalancedView {
        self.label = Some(label.into());
        self
    }

    fn task(&self, f: &str, args: Vec<Value>) -> Request {
        let mut buffers = Vec::new();
        let args = args.iter().map(|a| a.encode_into(&mut buffers)).collect();
        let meta = RequestMetadata {
            targets: self.targets.clone(),
            retries: self.retries,
            timeout: self.timeout.map(|t| t.as_secs_f64()),
            after: self.after.clone(),
            follow: self.follow.clone(),
            label: self.label.clone(),
            ..Default::default()
        }
        .to_map();
        Request {
            channel: Channel::Task,
            content: Content::ApplyRequest(ApplyRequest {
                f: f.to_string(),
                args,
            }),
            metadata: meta,
            buffers,
            replies: vec![None],
        }
    }

    fn finish(&self, ar: AsyncResult) -> Result<AsyncResult> {
        if self.block {
            ar.wait(None);
        }
        Ok(ar)
    }

    /// Runs `f(args)` on one engine.
    pub fn apply(&self, f: &str, args: Vec<Value>) -> Result<AsyncResult> {
        let ar = self
            .client
            .submit(vec![self.task(f, args)], Shape::PerReply)?;
        self.finish(ar)
    }

    /// Same as [`apply`](Self::apply).
    pub fn apply_async(&self, f: &str, args: Vec<Value>) -> Result<AsyncResult> {
        self.apply(f, args)
    }

    /// [`apply`](Self::apply) and wait for the value.
    pub fn apply_sync(&self, f: &str, args: Vec<Value>) -> Result<Value> {
        self.apply(f, args)?.get_one()
    }

    /// Applies `f` to every item, `chunksize` items per task; results in
    /// input order.
    pub fn map(&self, f: &str, seq: Vec<Value>, chunksize: usize) -> Result<AsyncResult> {
        let chunksize = chunksize.max(1);
        let requests = seq
            .chunks(chunksize)
            .map(|c| {
                self.task(
                    MAP_CHUNK,
                    vec![Value::Array(c.to_vec()), Value::Function(f.to_string())],
                )
            })
            .collect();
        let ar = self.client.submit(requests, Shape::Concat)?;
        self.finish(ar)
    }

    /// [`map`](Self::map) and wait.
    pub fn map_sync(&self, f: &str, seq: Vec<Value>, chunksize: usize) -> Result<Vec<Value>> {
        self.map(f, seq, chunksize)?.get()
    }

    /// Calls `f` once per argument list, `batch` calls per message: many
    /// small tasks without one message each. Results in input order; a
    /// failing call fails its batch.
    pub fn apply_batch(
        &self,
        f: &str,
        calls: Vec<Vec<Value>>,
        batch: usize,
    ) -> Result<AsyncResult> {
        let requests = calls
            .chunks(batch.max(1))
            .map(|c| {
                let lists = c.iter().map(|args| Value::Array(args.clone())).collect();
                self.task(
                    BATCH,
                    vec![Value::Array(lists), Value::Function(f.to_string())],
                )
            })
            .collect();
        let ar = self.client.submit(requests, Shape::Concat)?;
        self.finish(ar)
    }

    /// Applies `f` to each item as its own task, keeping at most
    /// `max_outstanding` in flight, and yields results as they come: in
    /// input order if `ordered`, else in completion order.
    ///
    /// The first `max_outstanding` tasks are submitted at once; `items` is
    /// read lazily after that, one item per result taken, so it may be
    /// endless: memory holds at most `max_outstanding` tasks and results
    /// (in input order, a result that waits for an earlier one counts as
    /// in flight). [`Imap::cancel`] stops it.
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let lb = zpar_client::Client::connect()?.load_balanced();
    /// let mut squares = lb.imap("|x| x * x", (0..).map(zpar_client::Value::Int), true, 100);
    /// for v in squares.by_ref().take(1_000) {
    ///     println!("{}", v?);
    /// }
    /// squares.cancel()?; // the 100 in flight are aborted, running ones stopped
    /// # Ok(()) }
    /// ```
    pub fn imap<I>(&self, f: &str, items: I, ordered: bool, max_outstanding: usize) -> Imap
    where
        I: IntoIterator<Item = Value>,
        I::IntoIter: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut map = Imap {
            view: self.clone(),
            f: f.to_string(),
            items: Some(Box::new(items.into_iter())),
            ordered,
            max_outstanding: max_outstanding.max(1),
            next_index: 0,
            next_yield: 0,
            outstanding: std::collections::HashMap::new(),
            ready: BTreeMap::new(),
            tx,
            rx,
        };
        // The first tasks start at once, not at the first `next`.
        map.fill();
        map
    }
}

/// How long [`Imap::cancel`] waits for the tasks it aborts to answer.
pub const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// Streaming results of [`LoadBalancedView::imap`].
pub struct Imap {
    view: LoadBalancedView,
    f: String,
    /// The items still to submit; None once cancelled.
    items: Option<Box<dyn Iterator<Item = Value> + Send>>,
    ordered: bool,
    max_outstanding: usize,
    next_index: usize,
    next_yield: usize,
    /// Tasks submitted and not yet answered, by item index.
    outstanding: std::collections::HashMap<usize, AsyncResult>,
    /// Results in, not yet yielded (in input order: waiting for an
    /// earlier one).
    ready: BTreeMap<usize, Result<Value>>,
    tx: std::sync::mpsc::Sender<usize>,
    rx: std::sync::mpsc::Receiver<usize>,
}

impl Imap {
    /// How many tasks are in flight (submitted, not yet answered).
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Stops the map: no further item is submitted, and every task in
    /// flight is aborted where it waits and stopped where it runs
    /// ([`Client::abort_running`]). Returns once each has been answered,
    /// or with [`Error::Timeout`] after [`CANCEL_WAIT`] if some have not (a
    /// script deep in a long native call stops when the call returns); the
    /// iterator then ends either way (results that were in are dropped).
    pub fn cancel(&mut self) -> Result<()> {
        self.items = None;
        self.ready.clear();
        if self.outstanding.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = self
            .outstanding
            .values()
            .flat_map(|ar| ar.msg_ids().iter().cloned())
            .collect();
        let engines = match &self.view.targets {
            Some(t) => t.clone(),
            None => self.view.client.ids(),
        };
        let deadline = Instant::now() + CANCEL_WAIT;
        if !engines.is_empty() {
            self.view
                .client
                .abort_running(engines, Some(ids))?
                .get_timeout(CANCEL_WAIT)?;
        }
        let unanswered = self
            .outstanding
            .values()
            .filter(|ar| !ar.wait(Some(deadline.saturating_duration_since(Instant::now()))))
            .count();
        self.outstanding.clear();
        match unanswered {
            0 => Ok(()),
            n => Err(Error::Timeout {
                waited: CANCEL_WAIT,
                what: format!("{n} cancelled tasks to stop (still in a native call?)"),
            }),
        }
    }

    /// Submits items while fewer than `max_outstanding` are in flight.
    fn fill(&mut self) {
        while self.outstanding.len() + self.ready.len() < self.max_outstanding {
            let Some(item) = self.items.as_mut().and_then(|items| items.next()) else {
                self.items = None;
                break;
            };
            let i = self.next_index;
            self.next_index += 1;
            let req = self.view.task(&self.f, vec![item]);
            match self.view.client.submit_notify(
                vec![req],
                Shape::PerReply,
                Some((self.tx.clone(), i)),
            ) {
                Ok(ar) => {
                    self.outstanding.insert(i, ar);
                }
                Err(e) => {
                    self.ready.insert(i, Err(e));
                }
            }
        }
    }
}

impl Imap {
    /// Like [`Iterator::next`], with the item's index (its place in the
    /// input), waiting at most `timeout` for a result: `Ok(None)` once the
    /// map is over, [`Error::Timeout`] when no result came in time (ask
    /// again), so a caller can look at other things (a Ctrl-C, to
    /// [`cancel`](Self::cancel)) between results.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<(usize, Result<Value>)>> {
        self.advance(Some(Instant::now() + timeout))
            .map_err(|()| Error::Timeout {
                waited: timeout,
                what: format!("a result of the map ({} in flight)", self.outstanding.len()),
            })
    }

    /// The next result and its item's index, waiting until `deadline`
    /// (None: as long as it takes); `Err(())` if the deadline passed first.
    fn advance(
        &mut self,
        deadline: Option<Instant>,
    ) -> std::result::Result<Option<(usize, Result<Value>)>, ()> {
        loop {
            self.fill();
            if self.ordered {
                if let Some(v) = self.ready.remove(&self.next_yield) {
                    self.next_yield += 1;
                    return Ok(Some((self.next_yield - 1, v)));
                }
            } else if let Some(v) = self.ready.pop_first() {
                return Ok(Some(v));
            }
            if self.outstanding.is_empty() {
                return Ok(None);
            }
            // Every task gets a reply (a result, an error, EngineDied).
            let tag = match deadline {
                None => self.rx.recv().map_err(|_| ())?,
                Some(d) => self
                    .rx
                    .recv_timeout(d.saturating_duration_since(Instant::now()))
                    .map_err(|_| ())?,
            };
            if let Some(ar) = self.outstanding.remove(&tag) {
                self.ready.insert(tag, ar.get_one());
            }
        }
    }
}

impl Iterator for Imap {
    type Item = Result<Value>;

    fn next(&mut self) -> Option<Result<Value>> {
        self.advance(None).ok().flatten().map(|(_, v)| v)
    }
}
