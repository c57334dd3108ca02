//! ipyparallel's own `Client` and `%px` magics drive a zpar cluster
//! (issue 16): a Python script (`ipyparallel_peer.py`) reads the hub's
//! `ipcontroller-client.json`, checks every Jupyter message type zpar sends
//! against the spec's required fields, then uses ipyparallel as a notebook
//! user would: ids, queue status, execute on all engines and on one, errors,
//! abort, records, results, `%px`/`%autopx`, a Python `apply` refused
//! clearly, and `shutdown(hub=True)`.

use crate::support::{self, cluster, WAIT};
use std::process::Command;

use crate::pyenv;

#[test]
fn ipyparallels_client_and_px_magics_drive_a_zpar_cluster() {
    let _watchdog = support::watchdog();
    let Some(python) = pyenv::python() else {
        return;
    }; // pyenv printed why (under CI it fails instead)
    let (mut c, _client) = cluster(2);
    let file = c
        .profile()
        .security_dir()
        .join(zpar_hub::hub::IPYPARALLEL_CLIENT_FILE);
    assert!(file.is_file(), "the hub wrote no {}", file.display());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/integration/ipyparallel_peer.py"
    );
    let mut peer = Command::new(python);
    peer.arg(script)
        .arg(&file)
        // IPython keeps its own profile and history; keep them out of $HOME.
        .env("IPYTHONDIR", c.profile().dir.join("ipython"));
    let out = support::output_within(peer, WAIT * 3, "the ipyparallel peer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!(
        "{stdout}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    let has = |line: &str| assert!(stdout.contains(line), "missing {line:?} in:\n{all}");

    // Jupyter conformance, message type by message type.
    for t in [
        "execute_reply/ok",
        "execute_reply/error",
        "apply_reply/error",
        "abort_reply/ok",
        "stream",
        "execute_input",
        "execute_result",
        "error",
        "status",
    ] {
        has(&format!("conformance {t} ok"));
    }
    has("conformance failures 0");

    has("ids [0, 1]");
    has("queue_status engines [0, 1] True ['completed', 'queue', 'tasks']");
    has("execute stdout ['q=42', 'q=42']");
    has("execute engines [0, 1]");
    has("execute results ['42', '42']");
    // zpar's ename and evalue, inside ipyparallel's own exceptions.
    has("error CompositeError ename=RuntimeError evalue=boom engine=0");
    has("error CompositeError ename=RuntimeError evalue=boom engine=1");
    has("single error RemoteError ename=RuntimeError evalue=single");
    has("single result 42 engine 0");
    has("abort raised TaskAborted");
    has("db_query [(True, 0, 'ok')]");
    has("db_query times ['datetime']");
    has("db_query label [(True, 'fit-7')]");
    has("db_query other label 0");
    has("get_result True True ExecuteReply");
    has("apply CompositeError ename=Unsupported evalue=zpar engines run Rhai and cannot load pickled Python");
    has("broadcast CompositeError ename=Unsupported");
    has("still serving ['2', '2']");
    // %px and %autopx print each engine's result.
    for block in ["px", "autopx"] {
        let part = stdout
            .split(&format!("{block} begin"))
            .nth(1)
            .and_then(|s| s.split(&format!("{block} end")).next())
            .unwrap_or_else(|| panic!("no {block} section in:\n{all}"));
        assert!(
            part.contains("Out[0:") && part.contains("Out[1:") && part.matches("42").count() >= 2,
            "{block} did not print both engines' 42:\n{part}\n{all}"
        );
    }
    has("shutdown done");
    c.wait_for_exit(WAIT)
        .unwrap_or_else(|e| panic!("rc.shutdown(hub=True) left the cluster running: {e}\n{all}"));
}
