//! How to run a hub: the configuration [`Hub::bind`](crate::Hub::bind)
//! takes — interface and ports, keys, heartbeat, scheduler, where task
//! records live, CURVE — and what it derives from it before binding.

use crate::core::scheduler::Scheme;
use crate::error::HubError;
use std::path::PathBuf;
use std::time::Duration;
use zpar_protocol::curve::CurveKeys;
use zpar_protocol::Profile;

/// How to run a hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Interface to bind (default 127.0.0.1; `0.0.0.0` for all).
    pub ip: String,
    /// The address written into the connection files, for peers to connect
    /// to (default: `ip`, or this host's outward address when `ip` is a
    /// wildcard).
    pub location: Option<String>,
    /// Ports to bind, in [`PortPlan`] order; 0 picks one at random.
    pub ports: PortPlan,
    /// Where to write connection files.
    pub profile: Profile,
    /// HMAC key; a fresh random one when None.
    pub key: Option<String>,
    /// Heartbeat period.
    pub hb_period: Duration,
    /// Missed heartbeats before an engine is declared dead.
    pub hb_misses: u64,
    /// Load-balancing scheme.
    pub scheme: Scheme,
    /// Where task records live.
    pub db: Db,
    /// Largest request or result buffers recorded, in bytes (None: 64 KiB
    /// in memory, 64 MiB in SQLite).
    pub max_buffer_bytes: Option<usize>,
    /// Whether every socket encrypts with CURVE (default: when `ip` is
    /// not loopback).
    pub curve: CurveMode,
    /// The CURVE keypair when it does (`--reuse` keeps the files'); a fresh
    /// one when None.
    pub curve_keys: Option<CurveKeys>,
    /// How long a request may go unanswered by its engine before the hub
    /// asks the engine what became of it (a request or reply lost on a
    /// dropped connection); see [`crate::core::CoreConfig::recall_after`].
    pub recall_after: Duration,
    /// Relay a value for several engines from engine to engine (off where
    /// engines cannot reach each other's relay ports); see
    /// [`crate::core::CoreConfig::relay`].
    pub relay: bool,
}

/// Whether the hub encrypts with CURVE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CurveMode {
    /// On when the hub binds anything but loopback (`zpar hub`'s default).
    #[default]
    Auto,
    /// Always on (`--curve`).
    On,
    /// Off (`--no-curve`); a warning when the hub binds beyond loopback.
    Off,
}

impl HubConfig {
    /// The address peers connect to: `location`, else `ip` (for a wildcard
    /// `ip`, this host's outward address). Errors when `ip` is not an
    /// address of this host, or when no outward address can be found.
    pub fn location(&self) -> Result<String, HubError> {
        if !zpar_protocol::net::is_local_address(&self.ip) {
            return Err(HubError::NotLocal {
                ip: self.ip.clone(),
            });
        }
        if let Some(l) = &self.location {
            return Ok(l.clone());
        }
        if !zpar_protocol::net::is_wildcard(&self.ip) {
            return Ok(self.ip.clone());
        }
        zpar_protocol::net::outward_address()
            .map(|a| a.to_string())
            .ok_or_else(|| HubError::NoLocation {
                ip: self.ip.clone(),
            })
    }

    /// Whether this hub encrypts: [`CurveMode::On`], or
    /// [`CurveMode::Auto`] with an `ip` that is not loopback.
    pub fn curve_on(&self) -> bool {
        match self.curve {
            CurveMode::On => true,
            CurveMode::Off => false,
            CurveMode::Auto => !zpar_protocol::net::is_loopback(&self.ip),
        }
    }

    /// The buffer cap in force for a store.
    pub fn max_buffer(&self, sqlite: bool) -> usize {
        self.max_buffer_bytes
            .unwrap_or_else(|| crate::records::default_max_buffer(sqlite))
    }
}

/// Where the hub keeps task records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Db {
    /// In memory, at most this many records (oldest finished dropped first).
    Memory {
        /// The bound.
        limit: usize,
    },
    /// In a SQLite file; a restarted hub keeps them.
    Sqlite(PathBuf),
}

impl std::fmt::Display for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Db::Memory { .. } => f.write_str("memory"),
            Db::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
        }
    }
}

impl std::str::FromStr for Db {
    type Err = String;
    fn from_str(s: &str) -> Result<Db, String> {
        match s.split_once(':') {
            Some(("sqlite", path)) if !path.is_empty() => Ok(Db::Sqlite(PathBuf::from(path))),
            _ if s == "memory" => Ok(Db::Memory {
                limit: DEFAULT_DB_LIMIT,
            }),
            _ => Err(format!("unknown --db {s:?}: use memory or sqlite:PATH")),
        }
    }
}

/// Records kept by the memory store unless told otherwise.
pub const DEFAULT_DB_LIMIT: usize = 10_000;

impl HubConfig {
    /// Defaults: loopback, random ports, 1 s heartbeats, 3 misses.
    pub fn new(profile: Profile) -> HubConfig {
        HubConfig {
            ip: "127.0.0.1".into(),
            location: None,
            ports: PortPlan::default(),
            profile,
            key: None,
            hb_period: Duration::from_secs(1),
            hb_misses: 3,
            recall_after: crate::core::DEFAULT_RECALL_AFTER,
            relay: true,
            scheme: Scheme::LeastLoad,
            db: Db::Memory {
                limit: DEFAULT_DB_LIMIT,
            },
            max_buffer_bytes: None,
            curve: CurveMode::Auto,
            curve_keys: None,
        }
    }
}

/// Every port the hub binds; 0 means any free port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortPlan {
    /// Clients' queries (engines register over their link).
    pub registration: u16,
    /// Heartbeat pings to clients.
    pub hb_ping: u16,
    /// Engines' heartbeat: pings out, pongs in.
    pub heartbeat: u16,
    /// Direct requests, client side.
    pub mux_client: u16,
    /// Engines' links: registration, every channel's requests and
    /// replies, and the engines' output.
    pub link: u16,
    /// Load-balanced requests, client side.
    pub task_client: u16,
    /// Control, client side.
    pub control_client: u16,
    /// Output, to clients.
    pub iopub_client: u16,
    /// Notifications.
    pub notification: u16,
}
