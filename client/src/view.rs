//! [`DirectView`]: requests to named engines (the load-balanced view is in
//! [`crate::balanced`]).

use crate::bintree::communicator_tree;
use crate::client::{Client, Request};
use crate::error::{Error, Result};
pub use crate::join::concat;
use crate::result::{AsyncResult, Shape};
use crate::script::Script;
use crate::slice::Slice;
pub use crate::targets::Targets;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;
use zpar_protocol::value::SharedOut;
use zpar_protocol::Channel;
use zpar_protocol::{
    ApplyRequest, Content, ExecuteRequest, PullRequest, PushRequest, RequestMetadata, Value,
};

/// The engine-side loop that applies a function to each item of a chunk.
pub(crate) const MAP_CHUNK: &str = "|zpar_items, zpar_f| { let zpar_out = []; for zpar_x in zpar_items { zpar_out.push(zpar_f.call(zpar_x)); } zpar_out }";

/// Limits for one [`execute`](DirectView::execute_with) request, sent in
/// its metadata; what is not set is the engine's own (`zpar engine
/// --max-operations`, no timeout).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecuteOptions {
    /// How long each engine lets the code run before it stops it with a
    /// `Timeout` error.
    pub timeout: Option<Duration>,
    /// How many Rhai operations each engine allows the code before it stops
    /// it with an `OperationLimit` error (0: no limit).
    pub max_operations: Option<u64>,
    /// Other request metadata, sent as it is (set keys above win).
    pub extra: Map<String, Json>,
}

impl ExecuteOptions {
    /// With a timeout.
    pub fn timeout(mut self, timeout: Duration) -> ExecuteOptions {
        self.timeout = Some(timeout);
        self
    }

    /// With an operation limit.
    pub fn max_operations(mut self, limit: u64) -> ExecuteOptions {
        self.max_operations = Some(limit);
        self
    }

    /// The request metadata these options send.
    fn into_metadata(self) -> Map<String, Json> {
        let mut metadata = self.extra;
        metadata.extend(
            RequestMetadata {
                timeout: self.timeout.map(|t| t.as_secs_f64()),
                max_operations: self.max_operations,
                ..Default::default()
            }
            .to_map(),
        );
        metadata
    }
}

/// Raw request metadata, sent as it is.
impl From<Map<String, Json>> for ExecuteOptions {
    fn from(extra: Map<String, Json>) -> ExecuteOptions {
        ExecuteOptions {
            extra,
            ..Default::default()
        }
    }
}

/// Requests to named engines. Calls return an [`AsyncResult`] at once; with
/// [`block`](Self::block) set they wait for it first.
///
/// ```no_run
/// use zpar_client::{Client, Value};
/// # fn main() -> zpar_client::Result<()> {
/// let client = Client::connect()?;
/// let view = client.all();
/// view.scatter("xs", Value::from((0..100i64).collect::<Vec<i64>>()), false)?.get()?;
/// view.execute("let total = xs.sum();")?.get()?;
/// let totals = view.pull("total")?.get()?;       // one value per engine
/// let squares = view.map_sync("|x| x * x", (0..8).map(Value::Int).collect())?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DirectView {
    client: Client,
    targets: Targets,
    /// Wait for each request before returning its result.
    pub block: bool,
    /// The label every request of this view carries ([`Self::label`]).
    label: Option<String>,
}

impl Client {
    /// A direct view over some engines.
    pub fn view(&self, targets: impl Into<Targets>) -> DirectView {
        DirectView::new(self.clone(), targets.into())
    }

    /// A direct view over all engines (resolved at each call).
    pub fn all(&self) -> DirectView {
        self.view(Targets::All)
    }
}

impl DirectView {
    pub(crate) fn new(client: Client, targets: Targets) -> DirectView {
        DirectView {
            client,
            targets,
            block: false,
            label: None,
        }
    }

    /// The same view, its requests labelled `label` in the hub's task
    /// records, where queries find them (`{"label": {"$glob": "fit-*"}}`,
    /// see [`Client::db_query`]).
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let client = zpar_client::Client::connect()?;
    /// client.all().label("fit-1").execute("1 + 1")?.get()?;
    /// let fits = client.db_query(serde_json::json!({"label": {"$glob": "fit-*"}}), None)?;
    /// # Ok(()) }
    /// ```
    pub fn label(mut self, label: impl Into<String>) -> DirectView {
        self.label = Some(label.into());
        self
    }

    /// Submits `requests` with this view's label.
    pub(crate) fn submit(
        &self,
        mut requests: Vec<Request>,
        shape: Shape,
        segments: Vec<zpar_protocol::bulk::Segment>,
    ) -> Result<AsyncResult> {
        if let Some(label) = &self.label {
            for r in &mut requests {
                r.metadata
                    .insert("label".into(), Json::String(label.clone()));
            }
        }
        self.client.submit_shared(requests, shape, segments)
    }

    /// The client behind this view.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The engine ids this view addresses now.
    pub fn targets(&self) -> Result<Vec<u32>> {
        self.client.resolve(&self.targets)
    }

    /// Sets [`block`](Self::block).
    pub fn set_block(&mut self, block: bool) -> &mut Self {
        self.block = block;
        self
    }

    pub(crate) fn finish(&self, ar: AsyncResult) -> Result<AsyncResult> {
        if self.block {
            ar.wait(None);
        }
        Ok(ar)
    }

    /// One message for every target; the hub fans it out.
    fn broadcast(
        &self,
        content: Content,
        buffers: Vec<zmq::Message>,
        metadata: Map<String, Json>,
    ) -> Result<AsyncResult> {
        let ids = self.targets()?;
        let mut meta = metadata;
        meta.extend(targets_meta(&ids));
        self.submit_to(ids, content, buffers, meta, Vec::new())
    }

    /// Like [`broadcast`](Self::broadcast), for requests whose large
    /// results may come back in shared memory (pull).
    fn broadcast_shared_replies(
        &self,
        content: Content,
        buffers: Vec<zmq::Message>,
        metadata: Map<String, Json>,
    ) -> Result<AsyncResult> {
        let ids = self.targets()?;
        self.broadcast_to(ids, content, buffers, metadata, Vec::new())
    }

    /// One request to `ids`, with `targets` and, for engines on this host,
    /// `shared_host` in its metadata; `segments` (shared memory it names)
    /// are kept until every target has answered.
    pub(crate) fn broadcast_to(
        &self,
        ids: Vec<u32>,
        content: Content,
        buffers: Vec<zmq::Message>,
        metadata: Map<String, Json>,
        segments: Vec<zpar_protocol::bulk::Segment>,
    ) -> Result<AsyncResult> {
        let mut meta = metadata;
        meta.extend(self.request_meta(&ids));
        self.submit_to(ids, content, buffers, meta, segments)
    }

    fn submit_to(
        &self,
        ids: Vec<u32>,
        content: Content,
        buffers: Vec<zmq::Message>,
        meta: Map<String, Json>,
        segments: Vec<zpar_protocol::bulk::Segment>,
    ) -> Result<AsyncResult> {
        let ar = self.submit(
            vec![Request {
                channel: Channel::Mux,
                content,
                metadata: meta,
                buffers,
                replies: ids.into_iter().map(Some).collect(),
            }],
            Shape::PerReply,
            segments,
        )?;
        self.finish(ar)
    }

    /// `targets` for `ids`, and, when they share this client's host, the
    /// host's id so that large results may come back in shared memory.
    fn request_meta(&self, ids: &[u32]) -> Map<String, Json> {
        RequestMetadata {
            targets: Some(ids.to_vec()),
            shared_host: self
                .client
                .shares_host_with(ids)
                .then(|| zpar_protocol::bulk::host_id().to_string()),
            ..Default::default()
        }
        .to_map()
    }

    /// Where large values for `ids` go: a shared segment when they share
    /// this client's host, else buffer frames.
    pub(crate) fn shared_out(&self, ids: &[u32]) -> Option<SharedOut> {
        self.client
            .shares_host_with(ids)
            .then(|| SharedOut::new(zpar_protocol::bulk::SHARED_MIN_BYTES).for_readers(ids.len()))
    }

    /// Runs code on every target; each reply's value is the code's last
    /// expression (unit if none). The value comes back in the reply, so it
    /// is not also published on iopub as an `execute_result` (that second
    /// message cost each round trip about a third); `print` output still
    /// streams.
    pub fn execute(&self, code: &str) -> Result<AsyncResult> {
        self.execute_with(code, ExecuteOptions::default())
    }

    /// Like [`execute`](Self::execute) with limits for this request
    /// ([`ExecuteOptions`]: a timeout, an operation limit). A raw metadata
    /// map converts too, and is sent as it is.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use zpar_client::{Client, ExecuteOptions};
    /// # fn main() -> zpar_client::Result<()> {
    /// let view = Client::connect()?.all();
    /// let options = ExecuteOptions::default().timeout(Duration::from_secs(5));
    /// view.execute_with("long_work()", options)?.get()?;
    /// # Ok(()) }
    /// ```
    pub fn execute_with(
        &self,
        code: &str,
        options: impl Into<ExecuteOptions>,
    ) -> Result<AsyncResult> {
        let metadata = options.into().into_metadata();
        self.broadcast(
            Content::ExecuteRequest(ExecuteRequest {
                code: code.to_string(),
                // The reply carries the value; see `execute`.
                silent: true,
                store_history: true,
                ..Default::default()
            }),
            vec![],
            metadata,
        )
    }

    /// Runs a local `.rhai` file on every target, as ipyparallel's
    /// `view.run(filename)` does: its `fn` definitions and top-level `let`
    /// variables stay in each engine's namespace for later `execute`s and
    /// `apply`s. The result reports per engine like
    /// [`execute`](Self::execute)'s (the file's last expression, unit if
    /// none); with [`block`](Self::block) set it waits first.
    ///
    /// The file is read here, on the client, and sent as code: engines on
    /// other hosts need no copy of it and no shared filesystem. An
    /// `import "util" as util;` at the top level of the file is resolved on
    /// this side too, relative to the importing file's folder (`.rhai` added
    /// when the path has no extension), and the imported file's text is
    /// inlined in its place, once per file; `util::f` then names the
    /// inlined `f`. So imported `fn`s and variables also stay in the
    /// namespaces, under their plain names. The details are in
    /// [`mod@crate::script`].
    ///
    /// Errors:
    /// - a missing or unreadable file, or an `import` that cannot be inlined
    ///   (inside a block, a computed path, a cycle), is an
    ///   [`Error::ScriptFile`] here, before anything is sent;
    /// - an engine's error is an [`Error::InFile`] naming the file (the
    ///   imported one, if it is there), its line and column, around the
    ///   engine's [`Error::RemoteError`].
    ///
    /// ```no_run
    /// use zpar_client::{Client, Value};
    /// # fn main() -> zpar_client::Result<()> {
    /// let view = Client::connect()?.all();
    /// // examples/bintree.rhai: fn connect(..) { .. }  let add = |a, b| a + b; ...
    /// view.run("examples/bintree.rhai")?.get()?;
    /// let sums = view.apply_sync("|| add.call(40, 2)", vec![])?;
    /// assert!(sums.iter().all(|s| *s == Value::Int(42)));
    /// # Ok(()) }
    /// ```
    pub fn run(&self, path: impl AsRef<std::path::Path>) -> Result<AsyncResult> {
        let script = Script::load(path)?;
        self.run_script(&script)
    }

    /// Like [`run`](Self::run), but returns at once even with
    /// [`block`](Self::block) set. A missing file is still an error here.
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let view = zpar_client::Client::connect()?.all();
    /// let ar = view.run_async("setup.rhai")?;
    /// // ... other work ...
    /// ar.get_timeout(std::time::Duration::from_secs(30))?;
    /// # Ok(()) }
    /// ```
    pub fn run_async(&self, path: impl AsRef<std::path::Path>) -> Result<AsyncResult> {
        let script = Script::load(path)?;
        self.submit_script(&script)
    }

    /// Runs a [`Script`] loaded before (with [`Script::load`]) on every
    /// target: [`run`](Self::run) without reading the files again.
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let script = zpar_client::Script::load("setup.rhai")?;
    /// let client = zpar_client::Client::connect()?;
    /// client.view(0).run_script(&script)?.get()?;
    /// client.view(1).run_script(&script)?.get()?;
    /// # Ok(()) }
    /// ```
    pub fn run_script(&self, script: &Script) -> Result<AsyncResult> {
        let ar = self.submit_script(script)?;
        self.finish(ar)
    }

    fn submit_script(&self, script: &Script) -> Result<AsyncResult> {
        let ids = self.targets()?;
        let mut ar = self.submit(
            vec![Request {
                channel: Channel::Mux,
                content: Content::ExecuteRequest(ExecuteRequest {
                    code: script.code().to_string(),
                    // The reply carries the value; see `execute`.
                    silent: true,
                    store_history: true,
                    ..Default::default()
                }),
                metadata: targets_meta(&ids),
                buffers: vec![],
                replies: ids.into_iter().map(Some).collect(),
            }],
            Shape::PerReply,
            Vec::new(),
        )?;
        ar.source_map = Some(script.source_map());
        Ok(ar)
    }

    /// Calls `f` (a closure like `|a, b| a + b`, a `fn` definition, or the
    /// name of an engine function) with `args` on every target. Arguments
    /// may be [`Value::Reference`]s to engine variables.
    pub fn apply(&self, f: &str, args: Vec<Value>) -> Result<AsyncResult> {
        let ids = self.targets()?;
        let mut buffers = Vec::new();
        let mut shared = self.shared_out(&ids);
        let args = args
            .iter()
            .map(|a| encode(a, &mut buffers, &mut shared))
            .collect();
        self.broadcast_to(
            ids,
            Content::ApplyRequest(ApplyRequest {
                f: f.to_string(),
                args,
            }),
            buffers,
            Map::new(),
            shared.map(|s| s.segments).unwrap_or_default(),
        )
    }

    /// Same as [`apply`](Self::apply).
    pub fn apply_async(&self, f: &str, args: Vec<Value>) -> Result<AsyncResult> {
        self.apply(f, args)
    }

    /// [`apply`](Self::apply) and wait: one value per target.
    pub fn apply_sync(&self, f: &str, args: Vec<Value>) -> Result<Vec<Value>> {
        self.apply(f, args)?.get()
    }

    /// Applies `f` to every item of `seq`, split in contiguous blocks over
    /// the targets; results in input order.
    pub fn map(&self, f: &str, seq: Vec<Value>) -> Result<AsyncResult> {
        let ids = self.targets()?;
        let n = seq.len();
        let mut requests = Vec::with_capacity(ids.len());
        for (p, id) in ids.iter().enumerate() {
            let range = partition(n, ids.len(), p);
            if range.is_empty() {
                continue;
            }
            let chunk = Value::Array(seq[range].to_vec());
            let mut buffers = Vec::new();
            let args = vec![
                chunk.encode_into(&mut buffers),
                Value::Function(f.to_string()).encode_into(&mut buffers),
            ];
            requests.push(Request {
                channel: Channel::Mux,
                content: Content::ApplyRequest(ApplyRequest {
                    f: MAP_CHUNK.into(),
                    args,
                }),
                metadata: targets_meta(&[*id]),
                buffers,
                replies: vec![Some(*id)],
            });
        }
        let ar = self.submit(requests, Shape::Concat, Vec::new())?;
        self.finish(ar)
    }

    /// [`map`](Self::map) and wait.
    pub fn map_sync(&self, f: &str, seq: Vec<Value>) -> Result<Vec<Value>> {
        self.map(f, seq)?.get()
    }

    /// Sets one variable on every target.
    pub fn push(&self, name: &str, value: impl Into<Value>) -> Result<AsyncResult> {
        let mut ns = BTreeMap::new();
        ns.insert(name.to_string(), value.into());
        self.push_many(ns)
    }

    /// Sets several variables on every target.
    pub fn push_many(&self, namespace: BTreeMap<String, Value>) -> Result<AsyncResult> {
        self.push_values(namespace.iter())
    }

    /// Sets `name` to `value` on every target without taking the value:
    /// nothing is cloned, the bytes are copied once, straight onto the wire
    /// or into shared memory.
    ///
    /// ```no_run
    /// # fn main() -> zpar_client::Result<()> {
    /// let client = zpar_client::Client::connect()?;
    /// let data = zpar_client::Value::F64Array(vec![1.0; 1 << 24]);
    /// for _ in 0..3 {
    ///     client.all().push_ref("data", &data)?.get()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn push_ref(&self, name: &str, value: &Value) -> Result<AsyncResult> {
        let name = name.to_string();
        self.push_values(std::iter::once((&name, value)))
    }

    fn push_values<'a>(
        &self,
        namespace: impl Iterator<Item = (&'a String, &'a Value)>,
    ) -> Result<AsyncResult> {
        let ids = self.targets()?;
        let mut buffers = Vec::new();
        let mut shared = self.shared_out(&ids);
        let namespace = namespace
            .map(|(k, v)| (k.clone(), encode(v, &mut buffers, &mut shared)))
            .collect();
        self.broadcast_to(
            ids,
            Content::PushRequest(PushRequest { namespace }),
            buffers,
            Map::new(),
            shared.map(|s| s.segments).unwrap_or_default(),
        )
    }

    /// Reads one variable from every target: one value per target.
    pub fn pull(&self, name: &str) -> Result<AsyncResult> {
        self.broadcast_shared_replies(
            Content::PullRequest(PullRequest {
                names: vec![name.to_string()],
                single: true,
            }),
            vec![],
            Map::new(),
        )
    }

    /// Reads several variables from every target: an array per target.
    pub fn pull_many(&self, names: &[&str]) -> Result<AsyncResult> {
        self.broadcast_shared_replies(
            Content::PullRequest(PullRequest {
                names: names.iter().map(|s| s.to_string()).collect(),
                single: false,
            }),
            vec![],
            Map::new(),
        )
    }

    /// `push` and wait.
    pub fn set(&self, name: &str, value: impl Into<Value>) -> Result<()> {
        self.push(name, value)?.get().map(|_| ())
    }

    /// `pull` and wait: one value per target.
    pub fn get(&self, name: &str) -> Result<Vec<Value>> {
        self.pull(name)?.get()
    }

    /// Splits a sequence (array, numeric array, or blob) into contiguous
    /// blocks, one per target — the first `len % n` targets get one item
    /// more, as in ipyparallel — and sets `name` to its block on each. With
    /// `flatten`, a one-item block is set as the item itself.
    pub fn scatter(&self, name: &str, seq: impl Into<Value>, flatten: bool) -> Result<AsyncResult> {
        self.scatter_ref(name, &seq.into(), flatten)
    }

    /// [`scatter`](Self::scatter) without taking the sequence. Numeric
    /// arrays and blobs go as [`scatter_slice`](Self::scatter_slice) sends
    /// them (block by block straight from `seq`, or through shared memory);
    /// a plain array's blocks are encoded one by one.
    pub fn scatter_ref(&self, name: &str, seq: &Value, flatten: bool) -> Result<AsyncResult> {
        if let Some(s) = Slice::of(seq) {
            return self.scatter_slice(name, s, flatten);
        }
        let ids = self.targets()?;
        let Value::Array(items) = seq else {
            return Err(Error::Value(format!(
                "scatter needs a sequence, not a {}",
                seq.kind()
            )));
        };
        let mut requests = Vec::with_capacity(ids.len());
        for (p, id) in ids.iter().enumerate() {
            let range = partition(items.len(), ids.len(), p);
            let block = if flatten && range.len() == 1 {
                items[range.start].clone()
            } else {
                Value::Array(items[range].to_vec())
            };
            let mut buffers = Vec::new();
            let mut namespace = BTreeMap::new();
            namespace.insert(name.to_string(), block.encode_into(&mut buffers));
            requests.push(Request {
                channel: Channel::Mux,
                content: Content::PushRequest(PushRequest { namespace }),
                metadata: targets_meta(&[*id]),
                buffers,
                replies: vec![Some(*id)],
            });
        }
        let ar = self.submit(requests, Shape::PerReply, Vec::new())?;
        self.finish(ar)
    }

    /// Pulls `name` from every target and joins the blocks in target order.
    /// Use [`AsyncResult::get_gathered`] for the joined value.
    pub fn gather(&self, name: &str) -> Result<AsyncResult> {
        let ids = self.targets()?;
        let requests = ids
            .iter()
            .map(|id| Request {
                channel: Channel::Mux,
                content: Content::PullRequest(PullRequest {
                    names: vec![name.to_string()],
                    single: true,
                }),
                metadata: self.request_meta(&[*id]),
                buffers: vec![],
                replies: vec![Some(*id)],
            })
            .collect();
        let ar = self.submit(requests, Shape::Concat, Vec::new())?;
        self.finish(ar)
    }

    /// Creates a `BinaryTreeCommunicator` named `name` on every target,
    /// connects them along [`communicator_tree`] (fan-out 8 over the
    /// targets' ids in ascending order; root: the lowest id; a pre-order
    /// tree, so reductions fold in ascending id order, whatever order the
    /// view lists its targets in) and returns once every link is live.
    pub fn setup_communicator(&self, name: &str, timeout: Duration) -> Result<()> {
        if !is_identifier(name) {
            return Err(Error::Value(format!(
                "{name:?} is not a valid variable name"
            )));
        }
        let tree = communicator_tree(&self.targets()?);
        let ids: Vec<u32> = tree.keys().copied().collect();
        let Some((places, root, tree_height)) = crate::bintree::places(&tree) else {
            return Err(Error::Value(
                "setup_communicator needs at least one engine".into(),
            ));
        };
        // One round trip creates every engine's communicator and brings
        // back its address (and the root's publisher), rather than three:
        // at a thousand engines each round trip costs a few hundred ms.
        let per_engine: Vec<Request> = ids
            .iter()
            .map(|id| {
                let is_root = *id == root;
                let reply = if is_root {
                    format!("[{name}.info, {name}.pub_url]")
                } else {
                    format!("[{name}.info]")
                };
                Request {
                    channel: Channel::Mux,
                    content: Content::ExecuteRequest(ExecuteRequest {
                        code: format!(
                            "let {name} = BinaryTreeCommunicator({id}, {is_root}); {reply}"
                        ),
                        silent: false,
                        store_history: false,
                        ..Default::default()
                    }),
                    metadata: targets_meta(&[*id]),
                    buffers: vec![],
                    replies: vec![Some(*id)],
                }
            })
            .collect();
        let started = std::time::Instant::now();
        let created = self
            .client
            .submit(per_engine, Shape::PerReply)?
            .get_timeout(timeout)?;
        tracing::debug!(engines = ids.len(), took = ?started.elapsed(), "communicators created");
        let mut pub_url = Value::Unit;
        let mut peers: BTreeMap<String, Value> = BTreeMap::new();
        for (id, made) in ids.iter().zip(created) {
            let (info, url) = match made {
                Value::Array(mut a) if a.len() == 2 && *id == root => {
                    let url = a.pop().unwrap_or_default();
                    (a.pop().unwrap_or_default(), Some(url))
                }
                Value::Array(mut a) if a.len() == 1 => (a.pop().unwrap_or_default(), None),
                other => {
                    return Err(Error::Value(format!(
                        "engine {id} answered the communicator's creation with {}, not its address",
                        other.kind()
                    )))
                }
            };
            peers.insert(id.to_string(), info);
            if let Some(url) = url {
                pub_url = url;
            }
        }
        // Each engine needs only its place in the tree and its parent's
        // address: one request per engine with just that, rather than the
        // whole tree and every address to every engine (O(N) data, not
        // O(N²), for a thousand engines).
        let per_engine: Vec<Request> = ids
            .iter()
            .map(|id| {
                let mut args = Vec::new();
                let place = &places[id];
                let own_peers: BTreeMap<String, Value> = place
                    .parent
                    .and_then(|p| Some((p.to_string(), peers.get(&p.to_string())?.clone())))
                    .into_iter()
                    .collect();
                let int = |i: u32| Value::Int(i.into());
                let place = Value::Map(BTreeMap::from([
                    ("parent".into(), place.parent.map_or(Value::Unit, int)),
                    (
                        "children".into(),
                        Value::Array(place.children.iter().copied().map(int).collect()),
                    ),
                    ("root".into(), int(root)),
                    ("height".into(), int(place.height)),
                    ("tree_height".into(), int(tree_height)),
                    ("engines".into(), Value::Int(ids.len() as i64)),
                ]));
                // The engines wait for each other as long as this call
                // waits for them (the communicator's own timeout is for
                // its collectives).
                let call = ApplyRequest {
                    f: "|c, peers, place, url, wait| c.connect_place(peers, place, url, wait)"
                        .into(),
                    args: [
                        Value::Reference(name.into()),
                        Value::Map(own_peers),
                        place,
                        pub_url.clone(),
                        Value::Float(timeout.as_secs_f64()),
                    ]
                    .iter()
                    .map(|a| a.encode_into(&mut args))
                    .collect(),
                };
                Request {
                    channel: Channel::Mux,
                    content: Content::ApplyRequest(call),
                    metadata: targets_meta(&[*id]),
                    buffers: args,
                    replies: vec![Some(*id)],
                }
            })
            .collect();
        let started = std::time::Instant::now();
        self.client
            .submit(per_engine, Shape::PerReply)?
            .get_timeout(timeout + timeout)?;
        tracing::debug!(engines = ids.len(), took = ?started.elapsed(), "communicators connected");
        Ok(())
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(crate) fn targets_meta(ids: &[u32]) -> Map<String, Json> {
    RequestMetadata {
        targets: Some(ids.to_vec()),
        ..Default::default()
    }
    .to_map()
}

/// Block `p` of `n` items split over `q` parts: the first `n % q` parts get
/// one item more (ipyparallel's partition).
///
/// ```
/// use zpar_client::partition;
/// assert_eq!(partition(10, 4, 0), 0..3);
/// assert_eq!(partition(10, 4, 1), 3..6);
/// assert_eq!(partition(10, 4, 3), 8..10);
/// ```
pub fn partition(n: usize, q: usize, p: usize) -> Range<usize> {
    let (base, rem) = (n / q, n % q);
    let low = p * base + p.min(rem);
    let high = low + base + usize::from(p < rem);
    low..high
}

/// Encodes `v`, large arrays into `shared` when given.
fn encode(v: &Value, buffers: &mut Vec<zmq::Message>, shared: &mut Option<SharedOut>) -> Json {
    match shared {
        Some(out) => v.encode_shared(buffers, out),
        None => v.encode_into(buffers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_everything_once() {
        for n in 0..30 {
            for q in 1..9 {
                let mut next = 0;
                for p in 0..q {
                    let r = partition(n, q, p);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn blocks_and_concat_round_trip() {
        let v = Value::F64Array((0..10).map(f64::from).collect());
        let s = Slice::of(&v).unwrap();
        let parts: Vec<Value> = (0..3).map(|p| s.block(partition(10, 3, p))).collect();
        assert_eq!(concat(parts), v);
        let a = Value::Array((0..3).map(Value::Int).collect());
        assert_eq!(
            concat(vec![
                Value::Int(0),
                Value::Array(vec![Value::Int(1), Value::Int(2)])
            ]),
            a
        );
    }
}
