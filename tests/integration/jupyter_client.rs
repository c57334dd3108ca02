//! Jupyter's own implementation of the wire format as a zpar client: a
//! Python script using `jupyter_client.session.Session` asks the hub for its
//! engines, runs code on two engines through the hub's fan-out, and sends a
//! load-balanced apply — no zpar code on the client side.

use crate::support::{cluster, WAIT};
use std::process::{Command, Stdio};
use std::time::Instant;

#[path = "../../protocol/tests/integration/pyenv.rs"]
mod pyenv;

#[test]
fn a_jupyter_client_session_drives_a_cluster() {
    let Some(python) = pyenv::python() else {
        return;
    }; // pyenv printed why
    let (c, _client) = cluster(2);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/integration/jupyter_client_peer.py"
    );
    let mut child = Command::new(python)
        .arg(script)
        .arg(c.profile().client_file())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the Python client");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the Python client did not finish in time");
        }
        std::thread::yield_now();
    }
    let out = child.wait_with_output().unwrap();
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
