//! Issue 33, with real processes: every request gets an answer and no data
//! is lost silently. Fire-and-forget large pushes land; an engine named
//! twice runs a request once; a request of more buffers than a message may
//! hold is refused before it is sent.

use crate::support::{self, cluster, WAIT};
use std::time::Duration;
use zpar::{Error, Value};

#[test]
fn a_large_push_whose_result_is_dropped_at_once_still_lands() {
    let _watchdog = support::watchdog();
    let (cluster, client) = cluster(2);
    let view = client.view(vec![0, 1]);
    // 16 MB: through shared memory (a local cluster). Its result is
    // dropped at once, before the engines have opened the segment.
    drop(
        view.push("x", Value::F64Array(vec![1.5; 2_000_000]))
            .unwrap(),
    );
    let len = view.execute("x.len()").unwrap().get_timeout(WAIT).unwrap();
    assert_eq!(len, vec![Value::Int(2_000_000); 2]);
    // Once every reply is in, the segments go.
    support::wait_until("the push's segments are removed", || {
        zpar_protocol::bulk::own_segments().is_empty()
    });
    drop(cluster);
}

#[test]
fn a_view_naming_an_engine_twice_runs_once_and_answers() {
    let _watchdog = support::watchdog();
    let (_cluster, client) = cluster(2);
    let got = client
        .view(vec![0, 0])
        .execute("40 + 2")
        .unwrap()
        .get_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(got, vec![Value::Int(42)], "one engine, one result");
    let got = client
        .view(vec![1, 0, 1])
        .execute("40 + 2")
        .unwrap()
        .get_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(got, vec![Value::Int(42); 2]);
}

#[test]
fn a_request_of_more_buffers_than_a_message_holds_is_refused_before_sending() {
    let _watchdog = support::watchdog();
    let (_cluster, client) = cluster(1);
    let view = client.view(0);
    // 70,000 small blobs: one buffer frame each, 70 kB in all.
    let blobs = Value::Array(vec![Value::Bytes(vec![7]); 70_000]);
    match view.push("blobs", blobs) {
        Err(e @ Error::TooManyBuffers { buffers, limit }) => {
            assert_eq!(buffers, 70_000);
            assert!(limit < 65_536, "{e}");
            let text = e.to_string();
            assert!(
                text.contains("not sent") && text.contains("fewer, larger values"),
                "{text}"
            );
        }
        Err(other) => panic!("expected TooManyBuffers, got {other}"),
        Ok(ar) => panic!(
            "a request the hub drops was sent; it answers {:?}",
            ar.get_timeout(Duration::from_secs(5))
        ),
    }
    // As many as a message holds go through.
    let fits = Value::Array(vec![Value::Bytes(vec![7]); 60_000]);
    view.push("blobs", fits).unwrap().get_timeout(WAIT).unwrap();
    let n = view
        .execute("blobs.len()")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(n, vec![Value::Int(60_000)]);
}
