//! Large values: byte-exact round trips at every chunk and threshold edge,
//! through the hub's sockets and through shared memory; scatter and gather
//! with uneven splits; an engine killed with a large value pending; shared
//! segments gone after every test, also after `kill -9` of their writer.

use crate::support::{self, cluster, WAIT};
use std::sync::Mutex;
use zpar::{Client, Error, Value};
use zpar_protocol::bulk::{self, SHARED_MIN_BYTES};
use zpar_protocol::stream::STREAM_MIN_BYTES;
use zpar_protocol::value::CHUNK_BYTES;

/// The tests here count this process's segments; one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Fails unless every segment of this process and of `pids` is gone.
fn no_segments_left(pids: &[u32]) {
    support::wait_until("every shared segment is removed", || {
        bulk::own_segments().is_empty() && pids.iter().all(|p| bulk::segments_of(*p).is_empty())
    });
}

/// Values of `bytes` bytes of each kind, with contents that catch a shifted
/// or repeated chunk.
fn values_of(bytes: usize) -> Vec<Value> {
    let n = bytes / 8;
    vec![
        Value::F64Array((0..n).map(|i| i as f64 * 0.5 - 3.0).collect()),
        Value::I64Array((0..n as i64).map(|i| i * 7919 - 11).collect()),
        Value::Bytes((0..bytes).map(|i| (i * 31 % 251) as u8).collect()),
    ]
}

/// Pushes and pulls `value`; returns whether the push's and the pull's
/// records at the hub name a shared segment (the bytes went through shared
/// memory, not the hub).
fn round_trip(client: &Client, value: &Value) -> (bool, bool) {
    let view = client.view(0);
    let push = view.push_ref("big", value).unwrap();
    push.get_timeout(WAIT).unwrap();
    let pull = view.pull("big").unwrap();
    let back = pull.get_timeout(WAIT).unwrap();
    assert!(
        back == vec![value.clone()],
        "a {} of {} came back different",
        value.kind(),
        value_len(value)
    );
    // The engine holds exactly the value too (length and a checksum there).
    let len = view
        .execute("big.len()")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(len, vec![Value::Int(value_len(value) as i64)]);
    let in_shared_memory = |ar: &zpar::AsyncResult| {
        let records = client
            .db_query(serde_json::json!({"msg_id": ar.msg_ids()[0]}), None)
            .unwrap();
        assert_eq!(records.len(), 1);
        records[0].to_string().contains("\"shm\"")
    };
    (in_shared_memory(&push), in_shared_memory(&pull))
}

fn value_len(v: &Value) -> usize {
    match v {
        Value::F64Array(a) => a.len(),
        Value::I64Array(a) => a.len(),
        Value::Bytes(b) => b.len(),
        _ => 1,
    }
}

#[test]
fn large_values_round_trip_byte_exact_at_every_edge() {
    let _watchdog = support::watchdog();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, client) = cluster(1);
    let edges = [
        0,
        8,
        SHARED_MIN_BYTES - 8,
        SHARED_MIN_BYTES,
        SHARED_MIN_BYTES + 8,
        CHUNK_BYTES - 8,
        CHUNK_BYTES,
        CHUNK_BYTES + 8,
        STREAM_MIN_BYTES - 8,
        STREAM_MIN_BYTES,
        STREAM_MIN_BYTES + 8,
        3 * CHUNK_BYTES + 8,
    ];
    for shared in [false, true] {
        client.set_shared_memory(shared);
        for bytes in edges {
            for v in values_of(bytes) {
                let went = round_trip(&client, &v);
                let expected = shared && bytes >= SHARED_MIN_BYTES;
                assert_eq!(
                    went,
                    (expected, expected),
                    "{} bytes of {} with shared memory {shared}: (push, pull) in shared memory",
                    bytes,
                    v.kind()
                );
            }
        }
        // One byte: a blob only.
        round_trip(&client, &Value::Bytes(vec![0xa5]));
    }
    no_segments_left(&cluster.pids().engines);
}

#[test]
fn three_hundred_mib_round_trip_byte_exact_both_ways() {
    let _watchdog = support::watchdog();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, client) = cluster(1);
    let n = (300usize << 20) / 8;
    let v = Value::F64Array((0..n).map(|i| i as f64).collect());
    for shared in [true, false] {
        client.set_shared_memory(shared);
        round_trip(&client, &v);
    }
    client
        .view(0)
        .execute("big = ();")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    no_segments_left(&cluster.pids().engines);
}

/// Two clients push large values to one engine at once through the hub:
/// their chunk streams interleave there, and the engine takes each
/// stream's chunks in turn (those of the second wait while it reads the
/// first) and gets both values whole.
#[test]
fn two_clients_streaming_to_one_engine_at_once_both_arrive_whole() {
    let _watchdog = support::watchdog();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, client) = cluster(1);
    let n = (3 * STREAM_MIN_BYTES) / 8;
    let file = client.connection().clone();
    std::thread::scope(|s| {
        for k in 0..2i64 {
            let file = file.clone();
            s.spawn(move || {
                let me = Client::from_connection(file).unwrap();
                me.set_shared_memory(false);
                let v = Value::I64Array((0..n as i64).map(|i| i * 2 + k).collect());
                for round in 0..3 {
                    let name = format!("pushed_{k}");
                    me.view(0)
                        .push(&name, v.clone())
                        .unwrap()
                        .get_timeout(WAIT)
                        .unwrap_or_else(|e| panic!("client {k}, round {round}: {e}"));
                    let back = me.view(0).pull(&name).unwrap();
                    assert_eq!(
                        support::ready(&back).get_one().unwrap(),
                        v,
                        "client {k}, round {round}"
                    );
                }
            });
        }
    });
    no_segments_left(&cluster.pids().engines);
}

#[test]
fn scatter_and_gather_with_uneven_splits_are_exact() {
    let _watchdog = support::watchdog();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, client) = cluster(3);
    let view = client.all();
    // Small (through the hub) and large (shared memory) sequences whose
    // length is not a multiple of 3, and fewer items than engines.
    let large = SHARED_MIN_BYTES * 3 / 8 + 2;
    for shared in [false, true] {
        client.set_shared_memory(shared);
        for n in [2usize, 10, large] {
            for seq in [
                Value::F64Array((0..n).map(|i| i as f64 + 0.25).collect()),
                Value::I64Array((0..n as i64).map(|i| -i).collect()),
                Value::Bytes((0..n).map(|i| (i % 256) as u8).collect()),
            ] {
                view.scatter_ref("part", &seq, false)
                    .unwrap()
                    .get_timeout(WAIT)
                    .unwrap();
                let lens = view
                    .execute("part.len()")
                    .unwrap()
                    .get_timeout(WAIT)
                    .unwrap();
                let expected: Vec<Value> = (0..3)
                    .map(|p| Value::Int(zpar::partition(n, 3, p).len() as i64))
                    .collect();
                assert_eq!(lens, expected, "block lengths of {} items", n);
                let back = support::ready(&view.gather("part").unwrap())
                    .get_gathered()
                    .unwrap();
                assert!(back == seq, "gather of {} {} items differs", n, seq.kind());
            }
        }
    }
    no_segments_left(&cluster.pids().engines);
}

/// A program lends its arrays: `push_slice` and `scatter_slice` take a
/// `Vec`, an `Arc<[T]>` or a byte slice by reference, and every engine
/// gets the same bytes, through the hub and through shared memory.
#[test]
fn lent_slices_are_pushed_and_scattered_byte_exact_and_stay_the_programs() {
    let _watchdog = support::watchdog();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, client) = cluster(2);
    let view = client.all();
    let n = SHARED_MIN_BYTES * 3 / 8 + 5;
    let floats: Vec<f64> = (0..n).map(|i| i as f64 * 0.5).collect();
    let ints: std::sync::Arc<[i64]> = (0..n as i64).map(|i| i * 3 - 7).collect();
    let bytes: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
    for shared in [false, true] {
        client.set_shared_memory(shared);
        for (data, whole) in [
            (zpar::Slice::from(&floats), Value::F64Array(floats.clone())),
            (zpar::Slice::from(&*ints), Value::I64Array(ints.to_vec())),
            (zpar::Slice::from(&bytes[..]), Value::Bytes(bytes.clone())),
        ] {
            view.push_slice("lent", data)
                .unwrap()
                .get_timeout(WAIT)
                .unwrap();
            let back = view.pull("lent").unwrap().get_timeout(WAIT).unwrap();
            assert!(
                back == vec![whole.clone(), whole.clone()],
                "a pushed {} differs (shared memory {shared})",
                whole.kind()
            );
            view.scatter_slice("part", data, false)
                .unwrap()
                .get_timeout(WAIT)
                .unwrap();
            let joined = support::ready(&view.gather("part").unwrap())
                .get_gathered()
                .unwrap();
            assert!(
                joined == whole,
                "a scattered {} differs (shared memory {shared})",
                whole.kind()
            );
        }
    }
    // Two numbers over two engines, flattened: one number each.
    view.scatter_slice("one", &[2.5, 3.5][..], true)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let each = view.pull("one").unwrap().get_timeout(WAIT).unwrap();
    assert_eq!(each, vec![Value::Float(2.5), Value::Float(3.5)]);
    assert_eq!(floats.len(), n, "the program still holds its array");
    no_segments_left(&cluster.pids().engines);
}

/// Blocks of uneven sizes, some in shared memory and some inline (and a lone
/// float among f64 blocks), gathered into one value: each shared block is
/// read straight into its place, the reads split over threads across block
/// boundaries (the blocks total more than two read pieces, and the first is
/// large enough to be written as one segment per core). The joined value
/// scattered again (each engine's block in segments of its own) and
/// gathered comes back the same.
#[test]
fn gather_reads_shared_blocks_into_place_beside_inline_ones_byte_exact() {
    let _watchdog = support::watchdog();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, client) = cluster(4);
    let ids = client.ids();
    let piece = bulk::PARALLEL_PIECE_BYTES / 8;
    // Elements per engine: shared, inline, shared, shared.
    let sizes = [2 * piece + 3, 5, piece / 2 + 7, SHARED_MIN_BYTES / 8];
    let f64s = |e: usize, n: usize| -> Vec<f64> {
        (0..n).map(|i| (e * 1_000_003 + i) as f64 * 0.5).collect()
    };
    let i64s =
        |e: usize, n: usize| -> Vec<i64> { (0..n as i64).map(|i| i * 7919 - e as i64).collect() };
    let bytes = |e: usize, n: usize| -> Vec<u8> {
        (0..n * 8).map(|i| ((i * 31 + e) % 251) as u8).collect()
    };
    let cases: Vec<(Vec<Value>, Value)> = vec![
        (
            sizes
                .iter()
                .enumerate()
                .map(|(e, n)| Value::F64Array(f64s(e, *n)))
                .collect(),
            Value::F64Array(
                sizes
                    .iter()
                    .enumerate()
                    .flat_map(|(e, n)| f64s(e, *n))
                    .collect(),
            ),
        ),
        (
            sizes
                .iter()
                .enumerate()
                .map(|(e, n)| Value::I64Array(i64s(e, *n)))
                .collect(),
            Value::I64Array(
                sizes
                    .iter()
                    .enumerate()
                    .flat_map(|(e, n)| i64s(e, *n))
                    .collect(),
            ),
        ),
        (
            sizes
                .iter()
                .enumerate()
                .map(|(e, n)| Value::Bytes(bytes(e, *n)))
                .collect(),
            Value::Bytes(
                sizes
                    .iter()
                    .enumerate()
                    .flat_map(|(e, n)| bytes(e, *n))
                    .collect(),
            ),
        ),
        // A lone float joins f64 blocks as one element.
        (
            vec![
                Value::F64Array(f64s(0, sizes[0])),
                Value::Float(-2.5),
                Value::F64Array(f64s(2, sizes[2])),
                Value::F64Array(f64s(3, sizes[3])),
            ],
            Value::F64Array(
                f64s(0, sizes[0])
                    .into_iter()
                    .chain([-2.5])
                    .chain(f64s(2, sizes[2]))
                    .chain(f64s(3, sizes[3]))
                    .collect(),
            ),
        ),
    ];
    for (blocks, joined) in cases {
        for (id, block) in ids.iter().zip(&blocks) {
            client
                .view(*id)
                .push_ref("part", block)
                .unwrap()
                .get_timeout(WAIT)
                .unwrap();
        }
        let gathered = client.all().gather("part").unwrap();
        support::ready(&gathered);
        // The client took the shared blocks' names when their replies came:
        // nothing is left in /dev/shm, whether or not they are read.
        assert!(bulk::own_segments().is_empty());
        for e in &cluster.pids().engines {
            assert!(
                bulk::segments_of(*e).is_empty(),
                "engine {e} left a segment"
            );
        }
        let back = gathered.get_gathered().unwrap();
        assert!(back == joined, "the gathered {} differs", joined.kind());
        // Read again, and one value per engine: the same bytes.
        assert!(gathered.get_gathered().unwrap() == joined);
        let per_engine = client
            .all()
            .pull("part")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
        assert!(
            per_engine == blocks,
            "pulled {} blocks differ",
            joined.kind()
        );
        // A gather dropped unread leaves nothing either.
        drop(support::ready(&client.all().gather("part").unwrap()).clone());
        client
            .all()
            .scatter_ref("again", &joined, false)
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
        let again = support::ready(&client.all().gather("again").unwrap())
            .get_gathered()
            .unwrap();
        assert!(
            again == joined,
            "{} scattered and gathered again differs",
            joined.kind()
        );
    }
    no_segments_left(&cluster.pids().engines);
}

#[test]
fn killed_engine_with_a_large_push_pending_gives_engine_died_and_leaves_no_segment() {
    let _watchdog = support::watchdog();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut cluster, client) = cluster(2);
    let busy = client.view(1).execute("loop {}").unwrap();
    let big = Value::F64Array(vec![2.5; (8 << 20) / 8]);
    // Engine 0 takes it at once; engine 1 is busy, so the value waits there.
    let push = client.all().push_ref("big", &big).unwrap();
    support::wait_until("engine 0 has the value", || {
        client
            .view(0)
            .execute("is_def_var(\"big\")")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap()
            == vec![Value::Bool(true)]
    });
    cluster.kill_engine(1).unwrap();
    match push.get_timeout(WAIT) {
        Err(Error::EngineDied { engine: 1, .. }) => {}
        other => panic!("expected EngineDied from engine 1, got {other:?}"),
    }
    assert!(matches!(
        busy.get_timeout(WAIT),
        Err(Error::EngineDied { engine: 1, .. })
    ));
    // No half value anywhere: engine 0 has all of it, and the next transfer works.
    let sum = client
        .view(0)
        .execute("big.sum()")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(sum, vec![Value::Float(2.5 * ((8 << 20) / 8) as f64)]);
    round_trip(&client, &big);
    no_segments_left(&cluster.pids().engines);
}

#[test]
fn segments_of_a_killed_writer_are_swept_by_the_next_zpar_process() {
    let _watchdog = support::watchdog();
    if !bulk::available() {
        return eprintln!("skipped: no /dev/shm on this machine");
    }
    // A real process owns a real segment and is killed with SIGKILL.
    let mut writer = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let pid = writer.id();
    let left = std::path::Path::new(bulk::SHM_DIR).join(format!("zpar-{pid}-0badc0ffee"));
    std::fs::write(&left, vec![1u8; 4096]).unwrap();
    writer.kill().unwrap(); // SIGKILL
    writer.wait().unwrap();
    assert!(left.exists());
    // Any zpar process starting on this host sweeps (here: a cluster's hub,
    // engine and client).
    let (_cluster, _client) = cluster(1);
    assert!(!left.exists(), "the dead writer's segment is still there");
}

/// A hand-made client on the hub's mux socket, to send chunk streams that
/// break the rules (and requests no zpar client would send, `sizes`).
pub(crate) struct RawClient {
    session: zpar_protocol::Session,
    socket: zmq::Socket,
    _ctx: zmq::Context,
}

impl RawClient {
    pub(crate) fn new(client: &Client) -> RawClient {
        let conn = client.connection().clone();
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::DEALER).unwrap();
        socket.set_linger(0).unwrap();
        socket.connect(&conn.url(conn.mux)).unwrap();
        let session =
            zpar_protocol::Session::new(conn.key.as_bytes(), "hmac-sha256", "streamer").unwrap();
        RawClient {
            session,
            socket,
            _ctx: ctx,
        }
    }

    /// Pushes `x` = `chunks.len()` frames of f64s to engine 0 as a stream
    /// announcing `announced` chunks of `elements` f64s in all, then sends
    /// the chunks given as (index, of, bytes). Returns the request's id.
    fn push_stream(
        &self,
        elements: usize,
        announced: u32,
        chunks: &[(u32, u32, Vec<u8>)],
    ) -> String {
        let id = self.push_stream_head(&[0], elements, announced);
        self.send_chunks(&id, chunks);
        id
    }

    /// The head of a stream pushing `x` (`elements` f64s in `announced`
    /// chunks) to `targets`; returns the request's id. The chunks follow
    /// with [`send_chunks`](Self::send_chunks).
    pub(crate) fn push_stream_head(
        &self,
        targets: &[u32],
        elements: usize,
        announced: u32,
    ) -> String {
        use zpar_protocol::{Content, Message, PushRequest};
        let mut namespace = std::collections::BTreeMap::new();
        namespace.insert(
            "x".to_string(),
            serde_json::json!({"$zpar": "f64", "buffer": 0, "frames": announced, "len": elements}),
        );
        let mut head = Message::new(
            &self.session,
            Content::PushRequest(PushRequest { namespace }),
        );
        head.metadata = serde_json::json!({"targets": targets, "stream_frames": announced})
            .as_object()
            .unwrap()
            .clone();
        let id = head.header.msg_id.clone();
        let frames = self.session.encode_owned(head).into_frames();
        zpar_protocol::send_frames(&self.socket, frames, 0).unwrap();
        id
    }

    /// Sends chunks (index, of, bytes) of the stream whose head was `msg_id`.
    pub(crate) fn send_chunks(&self, msg_id: &str, chunks: &[(u32, u32, Vec<u8>)]) {
        use zpar_protocol::{Content, Message, StreamChunk};
        let send = |m: Message| {
            zpar_protocol::send_frames(&self.socket, self.session.encode_owned(m).into_frames(), 0)
                .unwrap()
        };
        let mut parent =
            Message::new(&self.session, Content::StreamChunk(StreamChunk::default())).header;
        parent.msg_id = msg_id.to_string();
        parent.msg_type = "push_request".into();
        for (index, of, bytes) in chunks {
            let mut chunk = Message::new(
                &self.session,
                Content::StreamChunk(StreamChunk {
                    index: *index,
                    of: *of,
                }),
            );
            chunk.parent_header = Some(parent.clone());
            chunk.buffers = vec![zmq::Message::from(&bytes[..])];
            send(chunk);
        }
    }

    /// Pushes `namespace` (values as JSON, no buffers) to engine 0;
    /// returns the request's id.
    pub(crate) fn push_json(
        &self,
        namespace: std::collections::BTreeMap<String, serde_json::Value>,
    ) -> String {
        use zpar_protocol::{Content, Message, PushRequest};
        let mut push = Message::new(
            &self.session,
            Content::PushRequest(PushRequest { namespace }),
        );
        push.metadata = serde_json::json!({"targets": [0]})
            .as_object()
            .unwrap()
            .clone();
        let id = push.header.msg_id.clone();
        let frames = self.session.encode_owned(push).into_frames();
        zpar_protocol::send_frames(&self.socket, frames, 0).unwrap();
        id
    }

    /// The replies to `msg_id` from `engines` engines: by engine id, its
    /// status and error text.
    pub(crate) fn replies_to(
        &mut self,
        msg_id: &str,
        engines: usize,
    ) -> std::collections::BTreeMap<u32, (zpar_protocol::Status, String)> {
        let mut replies = std::collections::BTreeMap::new();
        while replies.len() < engines {
            let (engine, status, text) = self.next_reply_to(msg_id);
            replies.insert(engine.expect("a reply naming its engine"), (status, text));
        }
        replies
    }

    /// The reply to `msg_id`: its status and error text.
    pub(crate) fn reply_to(&mut self, msg_id: &str) -> (zpar_protocol::Status, String) {
        let (_, status, text) = self.next_reply_to(msg_id);
        (status, text)
    }

    /// The next reply to `msg_id`: its engine, status and error text.
    fn next_reply_to(&mut self, msg_id: &str) -> (Option<u32>, zpar_protocol::Status, String) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                self.socket
                    .poll(zmq::POLLIN, left.as_millis().max(1) as i64)
                    .unwrap()
                    > 0,
                "no reply to {msg_id}"
            );
            let reply = self
                .session
                .decode_frames(zpar_protocol::recv_frames(&self.socket, 0).unwrap())
                .unwrap();
            if reply.parent_header.as_ref().map(|p| p.msg_id.as_str()) != Some(msg_id) {
                continue;
            }
            let engine = zpar_protocol::ReplyMetadata::from_map(&reply.metadata)
                .ok()
                .and_then(|m| m.engine);
            let r = reply.content.task_reply().expect("a task reply").clone();
            return (
                engine,
                r.status,
                format!(
                    "{} {}",
                    r.ename.unwrap_or_default(),
                    r.evalue.unwrap_or_default()
                ),
            );
        }
    }
}

/// What is wrong, the chunks announced, the chunks sent (index, of,
/// bytes), and what the refusal must say.
type BrokenStream<'a> = (&'a str, u32, Vec<(u32, u32, Vec<u8>)>, &'a str);

fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn broken_chunk_streams_are_refused_clearly_and_the_next_transfer_works() {
    let _watchdog = support::watchdog();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_cluster, client) = cluster(1);
    let mut raw = RawClient::new(&client);
    let a = f64_bytes(&[1.0, 2.0]);
    let b = f64_bytes(&[3.0]);
    let cases: Vec<BrokenStream> = vec![
        (
            "out of order",
            2,
            vec![(1, 2, b.clone()), (0, 2, a.clone())],
            "chunk 1 came where chunk 0 was expected",
        ),
        (
            "duplicated",
            2,
            vec![(0, 2, a.clone()), (0, 2, a.clone()), (1, 2, b.clone())],
            "chunk 0 came where chunk 1 was expected",
        ),
        (
            "oversized",
            2,
            vec![(0, 2, vec![0; CHUNK_BYTES + 8]), (1, 2, b.clone())],
            "more than a chunk's",
        ),
        (
            "mislabelled",
            2,
            vec![(0, 3, a.clone()), (1, 2, b.clone())],
            "says it has 3 chunks",
        ),
        (
            "truncated",
            2,
            vec![(0, 2, a.clone())],
            "refused as truncated: 1 of 2 chunks arrived",
        ),
    ];
    for (what, announced, chunks, says) in cases {
        let id = raw.push_stream(3, announced, &chunks);
        let (status, text) = raw.reply_to(&id);
        assert_eq!(status, zpar_protocol::Status::Error, "{what}: {text}");
        // Chunks that never came were lost on the way; the others broke the
        // stream's rules.
        let class = if what == "truncated" {
            "Lost"
        } else {
            "BadRequest"
        };
        assert!(
            text.contains(class) && text.contains(says),
            "{what}: {text}"
        );
        // Nothing was set, and the next transfers (a client's, a stream's) work.
        let defined = client
            .view(0)
            .execute("is_def_var(\"x\")")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
        assert_eq!(
            defined,
            vec![Value::Bool(false)],
            "{what}: a half value was set"
        );
        let id = raw.push_stream(3, 2, &[(0, 2, a.clone()), (1, 2, b.clone())]);
        assert_eq!(raw.reply_to(&id).0, zpar_protocol::Status::Ok, "{what}");
        let x = client.view(0).pull("x").unwrap().get_timeout(WAIT).unwrap();
        assert_eq!(x, vec![Value::F64Array(vec![1.0, 2.0, 3.0])], "{what}");
        client.view(0).execute("x = (); let x = (); clear_x()").ok();
        client.clear(0u32).unwrap().get_timeout(WAIT).unwrap();
    }
}

#[test]
fn engine_killed_mid_stream_gives_engine_died_and_no_value() {
    let _watchdog = support::watchdog();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut cluster, client) = cluster(2);
    let mut raw = RawClient::new(&client);
    // Engine 0 has the head and one chunk of two when it dies.
    let id = raw.push_stream(3, 2, &[(0, 2, f64_bytes(&[1.0, 2.0]))]);
    support::wait_until("engine 0 is receiving the stream", || {
        client.queue_status().unwrap().engines[&0].queue > 0
    });
    cluster.kill_engine(0).unwrap();
    let (status, text) = raw.reply_to(&id);
    assert_eq!(status, zpar_protocol::Status::Error);
    assert!(text.contains("EngineDied"), "{text}");
    // A result stream cut by a kill: either all of it or EngineDied, never
    // a part.
    client.set_shared_memory(false);
    let n = (96usize << 20) / 8;
    let big = Value::F64Array((0..n).map(|i| i as f64).collect());
    let one = client.view(1);
    one.push_ref("big", &big)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let pull = one.pull("big").unwrap();
    cluster.kill_engine(1).unwrap();
    match pull.get_timeout(WAIT) {
        Ok(v) => assert!(
            v == vec![big.clone()],
            "a pull cut by a kill gave a partial value"
        ),
        Err(Error::EngineDied { engine: 1, .. }) => {}
        Err(e) => panic!("expected the value or EngineDied, got {e}"),
    }
}

/// A value for several engines through the hub is relayed along a chain of
/// engines (the hub sends the chunks to the first only): each engine gets
/// it whole, from the relay's lower size (1 MiB, a stream only because it
/// goes to several) to a stream of its own size, also to some engines and
/// while one of the chain is busy running a script.
#[test]
fn a_value_for_several_engines_is_relayed_and_each_gets_it_whole() {
    let _watchdog = support::watchdog();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (cluster, client) = cluster(4);
    client.set_shared_memory(false);
    let check = |targets: &[u32], n: usize| {
        let value = Value::F64Array((0..n).map(|i| i as f64 * 0.25 + 1.0).collect());
        let view = client.view(targets.to_vec());
        view.push_ref("big", &value)
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
        let sums = view
            .execute("[big.len(), big.sum()]")
            .unwrap()
            .get_timeout(WAIT)
            .unwrap();
        let want = (0..n).map(|i| i as f64 * 0.25 + 1.0).sum::<f64>();
        for (engine, sum) in targets.iter().zip(&sums) {
            assert_eq!(
                sum,
                &Value::Array(vec![Value::Int(n as i64), Value::Float(want)]),
                "engine {engine} of {targets:?}, {n} f64s"
            );
        }
    };
    let relay_only = (zpar_protocol::stream::RELAY_MIN_BYTES + 8 * 1000) / 8;
    check(&[0, 1, 2, 3], relay_only);
    check(&[0, 1, 2, 3], (STREAM_MIN_BYTES + 3 * CHUNK_BYTES) / 8 + 5);
    check(&[3, 1], relay_only);
    // Engine 1 runs a script until stopped: the chain passes the chunks
    // through its relay thread all the same (engines 2 and 3 get the value
    // while it runs), and engine 1 takes its own when it is free.
    let busy = client
        .view(1)
        .execute(&crate::support::running_loop())
        .unwrap();
    support::wait_until_printed(&busy, 1, "running");
    let value = Value::F64Array(vec![3.0; relay_only]);
    let push = client
        .view(vec![0, 1, 2, 3])
        .push_ref("big", &value)
        .unwrap();
    support::wait_until(
        "engines 0, 2 and 3 have the value while engine 1 runs",
        || push.replies().iter().filter(|r| r.outcome.is_ok()).count() == 3,
    );
    client
        .abort_running(1u32, Some(busy.msg_ids().to_vec()))
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    push.get_timeout(WAIT).unwrap();
    assert!(matches!(
        busy.get_timeout(WAIT),
        Err(Error::Aborted { engine: 1, .. })
    ));
    let sums = client
        .view(vec![0, 1, 2, 3])
        .execute("big.sum()")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(sums, vec![Value::Float(3.0 * relay_only as f64); 4]);
    no_segments_left(&cluster.pids().engines);
}

/// An engine killed in the middle of a relay chain: its own request fails
/// with `EngineDied`, the engines after it fail naming it (their chunks
/// came through it) and keep no part of the value, the engine before it
/// gets the value, and the next push to the engines left works.
#[test]
fn an_engine_killed_mid_relay_fails_those_after_it_naming_it_and_the_next_push_works() {
    let _watchdog = support::watchdog();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut cluster, client) = cluster(4);
    let mut raw = RawClient::new(&client);
    let (a, b) = (f64_bytes(&[1.0, 2.0]), f64_bytes(&[3.0]));
    // The chain is 0 → 1 → 2 → 3 (engine 0 is idle, and all share a host).
    let id = raw.push_stream_head(&[0, 1, 2, 3], 3, 2);
    raw.send_chunks(&id, &[(0, 2, a)]);
    support::wait_until("the hub sent every engine the stream's head", || {
        client
            .queue_status()
            .unwrap()
            .engines
            .values()
            .all(|e| e.queue > 0)
    });
    cluster.kill_engine(1).unwrap();
    raw.send_chunks(&id, &[(1, 2, b)]);
    let replies = raw.replies_to(&id, 4);
    assert_eq!(replies[&0].0, zpar_protocol::Status::Ok, "{replies:?}");
    assert!(replies[&1].1.contains("EngineDied"), "{replies:?}");
    for (engine, through) in [(2, "[0, 1]"), (3, "[0, 1, 2]")] {
        let (status, text) = &replies[&engine];
        assert_eq!(*status, zpar_protocol::Status::Error, "{replies:?}");
        assert!(
            text.contains(&format!("relayed through engines {through}")),
            "engine {engine}: {text}"
        );
    }
    let defined = client
        .view(vec![0, 2, 3])
        .execute("is_def_var(\"x\")")
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    assert_eq!(
        defined,
        vec![Value::Bool(true), Value::Bool(false), Value::Bool(false)]
    );
    client.set_shared_memory(false);
    let value = Value::F64Array(vec![2.0; (STREAM_MIN_BYTES + CHUNK_BYTES) / 8]);
    let view = client.view(vec![0, 2, 3]);
    view.push_ref("y", &value)
        .unwrap()
        .get_timeout(WAIT)
        .unwrap();
    let sums = view.execute("y.sum()").unwrap().get_timeout(WAIT).unwrap();
    let want = Value::Float(2.0 * ((STREAM_MIN_BYTES + CHUNK_BYTES) / 8) as f64);
    assert_eq!(sums, vec![want.clone(), want.clone(), want]);
    no_segments_left(&cluster.pids().engines);
}
