//! # zpar-client: driving a cluster from Rust
//!
//! [`Client`] connects to a hub and keeps the engine table current. Its
//! sockets belong to one background I/O thread ([`io`]); every call signs
//! and encodes on the caller's thread and returns an [`AsyncResult`] at once,
//! filled in as replies arrive. Views choose engines:
//!
//! - [`DirectView`] (`client.view(ids)`, `client.all()`): execute, run a
//!   script file ([`mod@script`] inlines its imports on this side), apply,
//!   map, push, pull, scatter, gather, `setup_communicator` for the
//!   engines' tree interconnect, and `bind_kernel` to make engines Jupyter
//!   kernels too ([`mod@kernel`]);
//! - [`LoadBalancedView`] (`client.load_balanced()`): tasks for whichever
//!   engine the hub picks.
//!
//! [`AsyncResult::get`] waits for the result, but never past a lost hub:
//! the I/O thread hears the hub's heartbeat, and a hub silent for
//! [`HUB_TIMEOUT`](client::HUB_TIMEOUT) fails every pending result, and
//! every new request at once, with [`Error::HubLost`]. The same client
//! reconnects when a hub comes back on the same connection file
//! (`zpar hub --reuse`); [`Client::events`] says when it is lost and back.
//! With a CURVE hub the sockets are CURVE clients with the connection
//! file's keys; keys that do not fit are [`Error::Handshake`] at once.
//!
//! [`LocalCluster`] starts a hub and engines as processes (for examples,
//! tests and `zpar cluster`), on this machine or through the ssh and mpi
//! launchers of [`launch`], and stops them on drop; [`mod@bintree`] builds the
//! seed's binary tree over engine ids ([`bintree()`](crate::bintree::bintree)).
//!
//! ```no_run
//! use zpar_client::{LocalCluster, Value};
//! # fn main() -> zpar_client::Result<()> {
//! let cluster = LocalCluster::start(2)?;
//! let view = cluster.client()?.all();
//! let r = view.apply_sync("|a, b| a + b", vec![Value::Int(40), Value::Int(2)])?;
//! assert_eq!(r, vec![Value::Int(42), Value::Int(42)]);
//! # Ok(()) }
//! ```

pub mod balanced;
pub mod bintree;
pub mod client;
pub mod cluster;
pub mod error;
pub mod io;
mod join;
pub mod kernel;
pub mod launch;
pub mod records;
pub mod result;
pub mod script;
mod slice;
mod targets;
pub mod view;
mod watch;

pub use balanced::{Imap, LoadBalancedView, CANCEL_WAIT};
pub use bintree::{
    bintree, communicator_tree, depth, fanout_tree, format_bintree, print_bintree, reverse_bintree,
    subtree, COMMUNICATOR_FANOUT,
};
pub use client::Client;
pub use cluster::{ClusterBuilder, LocalCluster};
pub use error::{Error, HubLoss, Result};
pub use io::ClientEvent;
pub use kernel::BoundKernel;
pub use records::ResultStatus;
pub use result::{wait, AsyncResult, EngineReply, ReturnWhen, Timing, Waited};
pub use script::Script;
pub use slice::Slice;
pub use view::{concat, partition, DirectView, ExecuteOptions, Targets};
pub use zpar_protocol::Value;

/// A reference to a variable on the engine, for apply arguments.
///
/// ```
/// let r = zpar_client::Reference("com");
/// assert_eq!(r, zpar_client::Value::Reference("com".into()));
/// ```
#[allow(non_snake_case)]
pub fn Reference(name: &str) -> Value {
    Value::Reference(name.to_string())
}
