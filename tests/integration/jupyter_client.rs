//! Jupyter's own implementation of the wire format as a zpar client: a
//! Python script using `jupyter_client.session.Session` asks the hub for its
//! engines, runs code on two engines through the hub's fan-out, and sends a
//! load-balanced apply — no zpar code on the client side.

use crate::support::{self, cluster, WAIT};
use std::process::Command;

use crate::pyenv;

#[test]
fn a_jupyter_client_session_drives_a_cluster() {
    let _watchdog = support::watchdog();
    let Some(python) = pyenv::python() else {
        return;
    }; // pyenv printed why (under CI it fails instead)
    let (c, _client) = cluster(2);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/integration/jupyter_client_peer.py"
    );
    let mut peer = Command::new(python);
    peer.arg(script).arg(c.profile().client_file());
    let out = support::output_within(peer, WAIT, "the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("engines: {'0':"), "{stdout}");
    assert!(stdout.contains("execute_reply engine 0 ok 42"), "{stdout}");
    assert!(stdout.contains("execute_reply engine 1 ok 42"), "{stdout}");
    assert!(stdout.contains("apply_reply ok 42"), "{stdout}");
}
