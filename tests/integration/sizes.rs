//! Values and requests of every size: strings, arrays and maps of a
//! hundred MiB travel like numeric arrays (as buffers, or in shared
//! memory); a request or a reply too large for one message frame is
//! answered at once, naming the limit, and leaves the engine as it was.

use crate::bulk::RawClient;
use crate::support::{cluster, watchdog, WAIT};
use std::collections::BTreeMap;
use zpar::{Error, Value};
use zpar_protocol::{Limits, Status};

/// A string of `bytes` bytes whose every MiB differs (a shifted or
/// repeated chunk shows), with multi-byte characters across chunk edges.
fn text_of(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 16);
    let mut i = 0u64;
    while s.len() < bytes {
        s.push_str(&format!("{i:x}é,"));
        i += 1;
    }
    s
}

#[test]
fn strings_arrays_and_maps_of_a_hundred_mib_are_pushed_and_pulled_intact() {
    let _watchdog = watchdog();
    let (_cluster, client) = cluster(1);
    let view = client.view(0);
    let text = Value::Str(text_of(100 << 20));
    let numbers = Value::Array(
        (0..2_000_000i64)
            .map(|i| {
                if i % 3 == 0 {
                    Value::Float(i as f64 / 7.0)
                } else {
                    Value::Int(i * 1_000_003)
                }
            })
            .collect(),
    );
    let mut fields = BTreeMap::new();
    fields.insert("numbers".to_string(), numbers);
    fields.insert("floats".to_string(), Value::F64Array(vec![0.25; 300_000]));
    fields.insert("name".to_string(), Value::Str("run 7".into()));
    let map = Value::Map(fields);
    for shared in [false, true] {
        client.set_shared_memory(shared);
        for v in [&text, &map] {
            view.push_ref("big", v).unwrap().get_timeout(WAIT).unwrap();
            let back = view.pull("big").unwrap().get_timeout(WAIT).unwrap();
            assert!(
                back == vec![v.clone()],
                "a {} came back different (shared memory {shared})",
                v.kind()
            );
        }
        // The engine holds it as a Rhai value of its own.
        let n = view.execute("big.numbers.len()").unwrap().get_timeout(WAIT);
        assert_eq!(n.unwrap(), vec![Value::Int(2_000_000)]);
    }
}

#[test]
fn a_request_too_large_is_refused_at_once_naming_the_limit() {
    let _watchdog = watchdog();
    let (_cluster, client) = cluster(1);
    let limit = Limits::default().max_json_frame;
    // zpar's client refuses it before sending.
    let code = "1;".repeat(limit / 2 + 16);
    let started = std::time::Instant::now();
    match client.view(0).execute(&code) {
        Err(e @ Error::TooLarge { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&limit.to_string()), "{text}");
            assert!(text.contains("split it over several requests"), "{text}");
        }
        Err(e) => panic!("refused, but not for its size: {e}"),
        Ok(_) => panic!("a request of {} bytes was sent", code.len()),
    }
    assert!(started.elapsed() < WAIT);
    // Another peer's is answered by the hub, signed, at once.
    let mut raw = RawClient::new(&client);
    let mut namespace = BTreeMap::new();
    namespace.insert(
        "x".to_string(),
        serde_json::Value::String("y".repeat(limit)),
    );
    let id = raw.push_json(namespace);
    let (status, text) = raw.reply_to(&id);
    assert_eq!(status, Status::Error);
    assert!(text.starts_with("TooLarge "), "{text}");
    assert!(text.contains(&format!("the limit is {limit}")), "{text}");
    // The engine never saw it, and serves.
    let two = client.view(0).execute("1 + 1").unwrap().get_timeout(WAIT);
    assert_eq!(two.unwrap(), vec![Value::Int(2)]);
}

#[test]
fn a_reply_too_large_is_answered_at_once_and_the_engine_stays_true() {
    let _watchdog = watchdog();
    let (_cluster, client) = cluster(1);
    let view = client.view(0);
    let mib = (Limits::default().max_json_frame >> 20) + 4;
    let big = format!("let s = \"\"; s.pad({mib} * 1048576, \"y\");");
    // Printed output rides in the reply's metadata: past a frame, its ends
    // are kept with a note, and the request's own outcome stands.
    let printed = view.execute(&format!("{big} print(s); 7")).unwrap();
    assert_eq!(printed.get_timeout(WAIT).unwrap(), vec![Value::Int(7)]);
    let out = &printed.stdout()[&0];
    assert!(
        out.contains("bytes of output left out"),
        "{}",
        &out[..200.min(out.len())]
    );
    assert!(
        out.len() < Limits::default().max_json_frame,
        "{}",
        out.len()
    );
    // An error whose message is more than a frame: answered TooLarge.
    match view
        .execute(&format!("{big} throw s"))
        .unwrap()
        .get_timeout(WAIT)
    {
        Err(Error::RemoteError { ename, message, .. }) => {
            assert_eq!(ename, "TooLarge");
            assert!(message.contains("more than the 67108864"), "{message}");
        }
        other => panic!("not refused for its size: {:.300}", format!("{other:?}")),
    }
    // The hub's account of the engine is true: nothing queued, and it serves.
    let queue = client.queue_status().unwrap();
    assert_eq!(queue.engines[&0].queue, 0, "{queue:?}");
    let two = view.execute("1 + 1").unwrap().get_timeout(WAIT);
    assert_eq!(two.unwrap(), vec![Value::Int(2)]);
}
