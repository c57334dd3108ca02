//! `zpar dashboard`: a live web page of a cluster, served on 127.0.0.1.
//!
//! The dashboard is an ordinary client of the hub (the public protocol
//! only: the engine table, queue status, task records and engine events).
//! One collector thread asks the hub once a second and keeps the latest
//! [`Snapshot`] as JSON; the HTTP server (tiny_http) serves the page and
//! streams each new snapshot to every open page as a server-sent event.
//! Every request must carry the random token the URL was printed with, as
//! Jupyter's servers do; without it nothing is served.

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use zpar_client::{Client, ClientEvent};

/// The page: HTML, CSS and a small script that draws the snapshots in
/// plain SVG (nothing fetched at run time).
const PAGE: &str = include_str!("page.html");

/// How often the collector asks the hub, and the page is updated.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Task bars the page keeps (the latest), and the window they cover.
const TASKS_KEPT: usize = 5_000;
/// Seconds of task stream and throughput shown.
const WINDOW_SECS: f64 = 120.0;
/// Seconds of task records read again at each poll (see
/// `Collector::read_records`).
const REREAD_SECS: f64 = 5.0;
/// Errors listed (the latest).
const ERRORS_KEPT: usize = 20;

/// One engine's row.
#[derive(Serialize, Clone)]
struct EngineRow {
    id: u32,
    host: String,
    /// `idle`, `busy` or `dead`.
    state: &'static str,
    queue: u64,
    done: u64,
    /// Seconds since it was reported dead.
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_for: Option<f64>,
    /// Its process's resident memory in bytes (packed engines share one).
    #[serde(skip_serializing_if = "Option::is_none")]
    rss: Option<u64>,
    /// Share of one core its serving thread used lately.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu: Option<f64>,
    /// Seconds since the hub last heard its heartbeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    beat_age: Option<f64>,
}

/// A finished task: one bar of the task stream.
#[derive(Serialize, Clone)]
struct TaskBar {
    engine: u32,
    start: f64,
    end: f64,
    status: String,
}

/// What the page shows, sent whole each second.
#[derive(Serialize, Default)]
struct Snapshot {
    /// Unix seconds when it was taken.
    time: f64,
    engines: Vec<EngineRow>,
    tasks: Vec<TaskBar>,
    /// Tasks finished in each of the last seconds, oldest first.
    throughput: Vec<u64>,
    /// Load-balanced tasks not yet given to an engine.
    unassigned: u64,
    /// Requests waiting on engines.
    queued: u64,
    /// The hub's memory and CPU share.
    hub: zpar_protocol::vitals::HubVitals,
    errors: Vec<Json>,
    /// Labelled work of the last minutes: done of total per label.
    progress: Vec<Json>,
    /// Why the last question to the hub failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    hub_error: Option<String>,
}

/// The latest snapshot as JSON, and its number (pages wait for the next);
/// `stop` ends the collector and every page's stream.
struct Latest {
    json: Mutex<(u64, Arc<String>)>,
    changed: Condvar,
    stop: AtomicBool,
}

/// Now, in Unix seconds.
fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Unix seconds as the ISO 8601 time a record query compares.
fn iso_of_secs(secs: f64) -> String {
    zpar_protocol::header::iso8601(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0)))
}

/// Collects snapshots from the hub.
struct Collector {
    client: Client,
    events: std::sync::mpsc::Receiver<ClientEvent>,
    hosts: BTreeMap<u32, String>,
    hosts_at: Option<Instant>,
    dead: BTreeMap<u32, Instant>,
    tasks: VecDeque<TaskBar>,
    errors: VecDeque<Json>,
    /// The latest `received` time already read (the hub's clock, Unix
    /// seconds).
    seen_received: f64,
    /// Tasks read lately, by msg id, with their `received` time: each
    /// poll reads [`REREAD_SECS`] back again, and these are not shown twice.
    shown: HashMap<String, f64>,
    /// Total answered requests per second (from queue status).
    done_total: Option<u64>,
    throughput: VecDeque<u64>,
}

impl Collector {
    fn new(client: Client) -> Result<Collector> {
        let events = client.events()?;
        Ok(Collector {
            client,
            events,
            hosts: BTreeMap::new(),
            hosts_at: None,
            dead: BTreeMap::new(),
            tasks: VecDeque::new(),
            errors: VecDeque::new(),
            seen_received: now_secs(),
            shown: HashMap::new(),
            done_total: None,
            throughput: VecDeque::new(),
        })
    }

    fn snapshot(&mut self) -> Snapshot {
        let now = now_secs();
        let mut snap = Snapshot {
            time: now,
            ..Snapshot::default()
        };
        for event in self.events.try_iter() {
            match event {
                ClientEvent::EngineUnregistered { engine, .. } => {
                    self.dead.insert(engine, Instant::now());
                }
                ClientEvent::EngineRegistered(id) => {
                    self.dead.remove(&id);
                }
                _ => {}
            }
        }
        if self
            .hosts_at
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
            || self
                .client
                .ids()
                .iter()
                .any(|id| !self.hosts.contains_key(id))
        {
            if let Ok(hosts) = self.client.engine_hosts(PERIOD) {
                self.hosts.extend(hosts);
                self.hosts_at = Some(Instant::now());
            }
        }
        let queue = match self.client.queue_status_with_vitals() {
            Ok(q) => q,
            Err(e) => {
                snap.hub_error = Some(e.to_string());
                return snap;
            }
        };
        snap.unassigned = queue.unassigned;
        snap.hub = queue.hub.unwrap_or_default();
        let mut done_now = 0;
        for (id, q) in &queue.engines {
            done_now += q.completed;
            snap.queued += q.queue;
            let vitals = q.vitals.unwrap_or_default();
            snap.engines.push(EngineRow {
                id: *id,
                host: self.hosts.get(id).cloned().unwrap_or_default(),
                state: if q.queue > 0 { "busy" } else { "idle" },
                queue: q.queue,
                done: q.completed,
                dead_for: None,
                rss: vitals.rss,
                // Rounded: every digit is sent for every engine each second.
                cpu: vitals.cpu.map(|c| (c * 1000.0).round() / 1000.0),
                beat_age: vitals.beat_age.map(|a| (a * 10.0).round() / 10.0),
            });
        }
        for (id, at) in &self.dead {
            if !queue.engines.contains_key(id) {
                snap.engines.push(EngineRow {
                    id: *id,
                    host: self.hosts.get(id).cloned().unwrap_or_default(),
                    state: "dead",
                    queue: 0,
                    done: 0,
                    dead_for: Some((at.elapsed().as_secs_f64() * 10.0).round() / 10.0),
                    rss: None,
                    cpu: None,
                    beat_age: None,
                });
            }
        }
        snap.engines.sort_by_key(|e| e.id);
        let finished = self
            .done_total
            .map_or(0, |before| done_now.saturating_sub(before));
        self.done_total = Some(done_now);
        self.throughput.push_back(finished);
        while self.throughput.len() > WINDOW_SECS as usize {
            self.throughput.pop_front();
        }
        snap.throughput = self.throughput.iter().copied().collect();
        self.read_records(now, &mut snap);
        snap.tasks = self.tasks.iter().cloned().collect();
        snap.errors = self.errors.iter().cloned().collect();
        snap
    }

    /// New finished tasks (bars, errors) and labelled progress from the
    /// task records.
    fn read_records(&mut self, now: f64, snap: &mut Snapshot) {
        let keys = [
            "msg_id",
            "engine",
            "started",
            "completed",
            "received",
            "status",
            "ename",
            "evalue",
            "label",
        ];
        // By when the hub received each reply, not when the engine said it
        // finished (engines' clocks and replies' travel would let a task
        // that finished earlier arrive after a later one was read, and be
        // missed); and a few seconds back again, so a record written a
        // moment late is still read.
        let since = self.seen_received - REREAD_SECS;
        let query = json!({"received": {"$gt": iso_of_secs(since)}});
        match self.client.db_query(query, Some(&keys)) {
            Ok(records) => {
                self.shown.retain(|_, received| *received > since);
                for r in records {
                    let time =
                        |k: &str| r[k].as_str().and_then(zpar_protocol::header::parse_iso8601);
                    let received = time("received").unwrap_or(now);
                    self.seen_received = self.seen_received.max(received);
                    let msg_id = r["msg_id"].as_str().unwrap_or_default().to_string();
                    if self.shown.insert(msg_id, received).is_some() {
                        continue;
                    }
                    let (Some(engine), Some(end)) = (r["engine"].as_u64(), time("completed"))
                    else {
                        continue;
                    };
                    let status = r["status"].as_str().unwrap_or("?").to_string();
                    if status == "error" {
                        self.errors.push_back(json!({
                            "engine": engine,
                            "msg_id": r["msg_id"],
                            "ename": r["ename"],
                            "evalue": r["evalue"].as_str().map(|e| e.lines().next().unwrap_or_default().chars().take(200).collect::<String>()),
                            "label": r["label"],
                        }));
                        if self.errors.len() > ERRORS_KEPT {
                            self.errors.pop_front();
                        }
                    }
                    self.tasks.push_back(TaskBar {
                        engine: engine as u32,
                        start: time("started").unwrap_or(end),
                        end,
                        status,
                    });
                }
            }
            Err(e) => snap.hub_error = Some(e.to_string()),
        }
        while self.tasks.len() > TASKS_KEPT
            || self
                .tasks
                .front()
                .is_some_and(|t| t.end < now - WINDOW_SECS)
        {
            self.tasks.pop_front();
        }
        // Labelled work submitted in the window: done of total per label.
        let since = iso_of_secs(now - WINDOW_SECS);
        let query = json!({"submitted": {"$gte": since}, "label": {"$glob": "*"}});
        if let Ok(records) = self.client.db_query(query, Some(&["label", "status"])) {
            let mut by_label: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for r in records {
                let Some(label) = r["label"].as_str() else {
                    continue;
                };
                let entry = by_label.entry(label.to_string()).or_default();
                entry.1 += 1;
                if r["status"].as_str().is_some_and(|s| s != "pending") {
                    entry.0 += 1;
                }
            }
            snap.progress = by_label
                .into_iter()
                .map(|(label, (done, total))| json!({"label": label, "done": done, "total": total}))
                .collect();
        }
    }
}

/// `zpar dashboard`'s options.
#[derive(Args)]
pub struct DashboardArgs {
    /// Profile name (folder `$ZPAR_DIR/profile_NAME`, default `default`).
    #[arg(long, conflicts_with_all = ["profile_dir", "file"])]
    pub profile: Option<String>,
    /// Profile folder, given outright.
    #[arg(long, conflicts_with = "file")]
    pub profile_dir: Option<PathBuf>,
    /// Client connection file (default: the profile's zpar-client.json).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Port on 127.0.0.1 (default: a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Open the page in the desktop's browser (`xdg-open`).
    #[arg(long)]
    pub open: bool,
}

/// `zpar dashboard`: serves the page until interrupted.
pub fn run(args: DashboardArgs) -> Result<()> {
    let file = match args.file {
        Some(f) => f,
        None => {
            zpar_protocol::Profile::resolve(args.profile.as_deref(), args.profile_dir.as_deref())
                .client_file()
        }
    };
    let client = Client::from_file(&file)
        .with_context(|| format!("connecting to the hub of {}", file.display()))?;
    let dashboard = Dashboard::start(client, args.port)?;
    println!("{}", dashboard.url());
    if args.open {
        open_in_browser(dashboard.url());
    }
    crate::cli::wait_for_interrupt()?;
    Ok(())
}

/// Opens `url` with `xdg-open` through a private file that redirects to
/// it, as Jupyter does, so the token is on no command line other users
/// can read (`ps`).
fn open_in_browser(url: &str) {
    let file =
        std::env::temp_dir().join(format!("zpar-dashboard-{}.html", zpar_protocol::new_id()));
    let page = format!(
        "<!doctype html><meta http-equiv=\"refresh\" content=\"0; url={url}\"><a href=\"{url}\">zpar dashboard</a>\n"
    );
    let written = zpar_protocol::private::create_file(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, page.as_bytes()));
    if let Err(e) = written {
        tracing::warn!("cannot write {} ({e}); open the URL above", file.display());
        return;
    }
    if let Err(e) = std::process::Command::new("xdg-open").arg(&file).spawn() {
        tracing::warn!("cannot open a browser (xdg-open: {e}); open the URL above");
    }
}

/// A running dashboard: its URL, and the threads that serve it (stopped
/// when it is dropped).
pub struct Dashboard {
    url: String,
    server: Arc<tiny_http::Server>,
    latest: Arc<Latest>,
}

impl Dashboard {
    /// Connects nothing new: serves `client`'s cluster on 127.0.0.1:`port`
    /// (0: a free port) with a fresh random token.
    pub fn start(client: Client, port: u16) -> Result<Dashboard> {
        let server = tiny_http::Server::http(("127.0.0.1", port))
            .map_err(|e| anyhow::anyhow!("cannot serve on 127.0.0.1:{port}: {e}"))?;
        let server = Arc::new(server);
        let port = server
            .server_addr()
            .to_ip()
            .context("the dashboard's address")?
            .port();
        // 122 random bits from the system's generator (a v4 uuid).
        let token: String = zpar_protocol::new_id().replace('-', "");
        let url = format!("http://127.0.0.1:{port}/?token={token}");
        let latest = Arc::new(Latest {
            json: Mutex::new((0, Arc::new("{}".to_string()))),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut collector = Collector::new(client)?;
        {
            let latest = latest.clone();
            std::thread::Builder::new()
                .name("zpar-dashboard-collector".into())
                .spawn(move || {
                    while !latest.stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let snap = collector.snapshot();
                        let text = serde_json::to_string(&snap).unwrap_or_else(|_| "{}".into());
                        {
                            let mut held = latest.json.lock().unwrap_or_else(|e| e.into_inner());
                            *held = (held.0 + 1, Arc::new(text));
                        }
                        latest.changed.notify_all();
                        std::thread::sleep(PERIOD.saturating_sub(started.elapsed()));
                    }
                })?;
        }
        {
            let server = server.clone();
            let latest = latest.clone();
            std::thread::Builder::new()
                .name("zpar-dashboard-http".into())
                .spawn(move || {
                    for request in server.incoming_requests() {
                        let latest = latest.clone();
                        let token = token.clone();
                        // Each page's event stream holds its own thread.
                        let _ = std::thread::Builder::new()
                            .name("zpar-dashboard-page".into())
                            .spawn(move || serve(request, &token, latest));
                    }
                })?;
        }
        Ok(Dashboard {
            url,
            server,
            latest,
        })
    }

    /// The page's URL, with its token.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.latest.stop.store(true, Ordering::Relaxed);
        self.latest.changed.notify_all();
        self.server.unblock();
    }
}

/// Compares a given token with the real one in time that does not depend
/// on where they differ.
fn same_secret(given: &[u8], real: &[u8]) -> bool {
    given.len() == real.len() && given.iter().zip(real).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

/// Answers one request: the page, its event stream, or 403.
fn serve(request: tiny_http::Request, token: &str, latest: Arc<Latest>) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let given = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .unwrap_or_default();
    let header = |k: &str, v: &str| {
        tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("a valid header")
    };
    if !same_secret(given.as_bytes(), token.as_bytes()) {
        let _ = request.respond(
            tiny_http::Response::from_string(
                "403: wrong or missing token; open the URL `zpar dashboard` printed\n",
            )
            .with_status_code(403),
        );
        return;
    }
    match path {
        "/" => {
            let _ = request.respond(
                tiny_http::Response::from_string(PAGE)
                    .with_header(header("Content-Type", "text/html; charset=utf-8"))
                    .with_header(header("Cache-Control", "no-store")),
            );
        }
        "/events" => stream_events(request.into_writer(), &latest),
        "/snapshot" => {
            let text = latest
                .json
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .clone();
            let _ = request.respond(
                tiny_http::Response::from_string(text.as_str())
                    .with_header(header("Content-Type", "application/json")),
            );
        }
        _ => {
            let _ =
                request.respond(tiny_http::Response::from_string("404\n").with_status_code(404));
        }
    }
}

/// A page's server-sent events: each new snapshot as one `data:` line,
/// written and flushed as soon as the collector has it, until the page
/// goes away. The response is written by hand on the raw socket: the
/// server's own writers buffer, and an event must not wait in a buffer.
fn stream_events(mut out: Box<dyn std::io::Write + Send>, latest: &Latest) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n";
    if out
        .write_all(head.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        return;
    }
    let mut seen = 0;
    while !latest.stop.load(Ordering::Relaxed) {
        let event = {
            let held = latest.json.lock().unwrap_or_else(|e| e.into_inner());
            let (held, _) = latest
                .changed
                .wait_timeout_while(held, PERIOD * 5, |(n, _)| {
                    *n == seen && !latest.stop.load(Ordering::Relaxed)
                })
                .unwrap_or_else(|e| e.into_inner());
            if held.0 == seen {
                // A comment keeps an idle stream open (and finds a page gone).
                ": idle\n\n".to_string()
            } else {
                seen = held.0;
                format!("data: {}\n\n", held.1)
            }
        };
        if out
            .write_all(event.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            return;
        }
    }
}
