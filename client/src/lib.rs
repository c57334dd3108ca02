//! zpar-client (in progress)
pub mod bintree;
pub mod client;
pub mod cluster;
pub mod error;
pub mod io;
pub mod result;
pub mod view;

pub use bintree::{bintree, depth, format_bintree, print_bintree, reverse_bintree, subtree};
pub use client::Client;
pub use cluster::{ClusterBuilder, LocalCluster};
pub use error::{Error, Result};
pub use io::ClientEvent;
pub use result::{AsyncResult, EngineReply, Timing};
pub use view::{concat, partition, DirectView, LoadBalancedView, Targets};
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
