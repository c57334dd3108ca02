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

/// A fresh folder for the hub's SQLite file, removed on drop.
struct DbDir(std::path::PathBuf);

impl Drop for DbDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn replies_wait_while_the_record_file_is_locked_and_go_out_with_their_records() {
    let _watchdog = support::watchdog();
    let dir = DbDir(std::env::temp_dir().join(format!("zpar-i33-db-{}", zpar_protocol::new_id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let db = dir.0.join("tasks.db");
    let arg = format!("sqlite:{}", db.display());
    let (_cluster, client) = support::cluster_with(1, &["--db", &arg], &[]);
    let view = client.view(0);
    view.execute("1").unwrap().get_timeout(WAIT).unwrap();
    // Another process holds the file's write lock: the hub cannot record
    // the result, so it must not send it either.
    let other = rusqlite::Connection::open(&db).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let answer = view.execute("40 + 2").unwrap();
    match answer.get_timeout(Duration::from_secs(8)) {
        Err(Error::Timeout { .. }) => {}
        other => panic!("a result whose record is not on disk was sent: {other:?}"),
    }
    other.execute_batch("COMMIT").unwrap();
    drop(other);
    assert_eq!(answer.get_timeout(WAIT).unwrap(), vec![Value::Int(42)]);
    let file = rusqlite::Connection::open(&db).unwrap();
    let (status, n): (String, i64) = file
        .query_row(
            "SELECT status, COUNT(*) FROM tasks WHERE msg_id = ?1",
            [&answer.msg_ids()[0]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (status.as_str(), n),
        ("ok", 1),
        "the record reached the file"
    );
}

#[test]
fn a_result_that_came_in_shared_memory_is_not_read_again_from_the_records() {
    let _watchdog = support::watchdog();
    let (_cluster, client) = cluster(1);
    let view = client.view(0);
    let big = Value::F64Array(vec![0.25; 1 << 20]);
    view.push_ref("big", &big)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let pull = view.pull("big").unwrap();
    assert_eq!(pull.get_timeout(WAIT).unwrap(), vec![big]);
    let record = client
        .db_query(serde_json::json!({"msg_id": pull.msg_ids()[0]}), None)
        .unwrap();
    assert!(
        record[0].to_string().contains("\"shm\""),
        "the value came through shared memory: {}",
        record[0]
    );
    match client
        .get_result(&pull.msg_ids()[0])
        .unwrap()
        .get_timeout(WAIT)
    {
        Err(Error::Hub { ename, message }) => {
            assert_eq!(ename, "ResultNotKept", "{message}");
            assert!(
                message.contains("shared memory") && message.contains("pull"),
                "{message}"
            );
        }
        other => panic!("expected ResultNotKept, got {other:?}"),
    }
}

#[test]
fn requests_that_run_long_are_asked_about_and_wait_on_for_their_replies() {
    let _watchdog = support::watchdog();
    let (_cluster, client) = cluster(2);
    // Asked about every few tenths of a second while they run: the hub
    // says they are pending, and they wait on; none is taken for lost.
    client.set_recall_after(Duration::from_millis(100)).unwrap();
    let long = client
        .view(0)
        .execute("let t = timestamp(); while t.elapsed < 1.5 {} 42")
        .unwrap();
    let quick: Vec<_> = (0..20)
        .map(|i| client.view(1).execute(&format!("{i} * 2")).unwrap())
        .collect();
    for (i, r) in quick.into_iter().enumerate() {
        assert_eq!(r.get_timeout(WAIT).unwrap(), vec![Value::Int(i as i64 * 2)]);
    }
    assert_eq!(long.get_timeout(WAIT).unwrap(), vec![Value::Int(42)]);
}
