//! Deterministic mutation loops: thousands of valid messages, values and
//! dates, damaged at random (fixed seeds, fastrand), through the decoder.
//! Nothing may panic; every failure must be a typed error.

use crate::common::{sample_message, sample_value, wire_frames, zmq_frames, Rng, RngExt};
use crate::fuzz_decode::body::{decode_parts, value_round_trips, KEY};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use zpar_protocol::header::parse_iso8601;
use zpar_protocol::{ProtocolError, Session, Value, DELIMITER, SIGNATURE_SCHEME};

#[test]
fn mutated_dates_never_panic() {
    let mut rng = Rng::with_seed(0x5eed_da7e);
    let inserts = ["é", "€", "𝄞", "+", "-", ":", ".", "Z", "0", " "];
    for _ in 0..5_000 {
        let mut date: Vec<char> = zpar_protocol::iso8601_now().chars().collect();
        for _ in 0..1 + rng.usize(..3) {
            let at = rng.usize(..date.len() + 1);
            match rng.usize(..3) {
                0 if at < date.len() => {
                    date.remove(at);
                }
                1 if at < date.len() => {
                    date[at] = rng.pick(&inserts).chars().next().unwrap();
                }
                _ => date.insert(at, rng.pick(&inserts).chars().next().unwrap()),
            }
        }
        let date: String = date.into_iter().collect();
        let _ = parse_iso8601(&date);
    }
}

/// The mutations the loop applies, each on owned frames.
fn mutate(frames: &mut Vec<Vec<u8>>, rng: &mut Rng) -> &'static str {
    const JSONISH: &[u8] = b"{}[]\":,0123456789-+.eEtfn\\ \x00\xff\xc3";
    if frames.is_empty() {
        frames.push(rng.bytes(4));
        return "insert into empty";
    }
    let n = frames.len();
    let i = rng.usize(..n);
    match rng.usize(..10) {
        0 => {
            if !frames[i].is_empty() {
                let at = rng.usize(..frames[i].len());
                frames[i][at] ^= 1 << rng.usize(..8);
            }
            "flip a bit"
        }
        1 => {
            if !frames[i].is_empty() {
                let at = rng.usize(..frames[i].len());
                frames[i][at] = if rng.chance(50) {
                    *rng.pick(JSONISH)
                } else {
                    rng.u8(..)
                };
            }
            "replace a byte"
        }
        2 => {
            let len = rng.usize(..frames[i].len() + 1);
            frames[i].truncate(len);
            "truncate a frame"
        }
        3 => {
            let copy = frames[i].clone();
            let at = rng.usize(..n + 1);
            frames.insert(at, copy);
            "duplicate a frame"
        }
        4 => {
            frames.remove(i);
            "drop a frame"
        }
        5 => {
            let j = rng.usize(..n);
            frames.swap(i, j);
            "swap two frames"
        }
        6 => {
            let junk = match rng.usize(..4) {
                0 => DELIMITER.to_vec(),
                1 => b"{}".to_vec(),
                2 => Vec::new(),
                _ => {
                    let len = rng.usize(..64);
                    rng.bytes(len)
                }
            };
            let at = rng.usize(..n + 1);
            frames.insert(at, junk);
            "insert a junk frame"
        }
        7 => {
            let extra = rng.usize(..16);
            let tail = rng.bytes(extra);
            frames[i].extend(tail);
            "extend a frame"
        }
        8 => {
            // Splice a slice of one frame into another (e.g. JSON into JSON).
            let j = rng.usize(..n);
            let src = frames[j].clone();
            let from = rng.usize(..src.len() + 1);
            let to = from + rng.usize(..src.len() - from + 1);
            let at = rng.usize(..frames[i].len() + 1);
            frames[i].splice(at..at, src[from..to].iter().copied());
            "splice frames"
        }
        _ => {
            frames.truncate(i);
            "truncate the message"
        }
    }
}

fn variant(e: &ProtocolError) -> &'static str {
    match e {
        ProtocolError::NoDelimiter { .. } => "NoDelimiter",
        ProtocolError::TooFewFrames { .. } => "TooFewFrames",
        ProtocolError::Oversized { .. } => "Oversized",
        ProtocolError::TooManyFrames { .. } => "TooManyFrames",
        ProtocolError::Utf8 { .. } => "Utf8",
        ProtocolError::Json { .. } => "Json",
        ProtocolError::MissingSignature => "MissingSignature",
        ProtocolError::BadSignature => "BadSignature",
        ProtocolError::Replay { .. } => "Replay",
        _ => "other",
    }
}

fn tally(counts: &mut BTreeMap<&'static str, usize>, r: &Result<(), ProtocolError>) {
    *counts
        .entry(r.as_ref().err().map_or("Ok", variant))
        .or_default() += 1;
}

/// ~10,000 valid signed messages of several types (with and without
/// buffers, identities and parents), each mutated one to three times and
/// decoded three ways (as received with the key, re-signed with the key, and
/// without a key) through the fuzz target's body. Nothing may panic, and what
/// is accepted must round-trip. The tallies check that the loop reaches every
/// layer, not just the signature check.
#[test]
fn mutated_messages_never_panic_the_decoder() {
    const MESSAGES: usize = 10_000;
    let sender = Session::new(KEY, SIGNATURE_SCHEME, "mutator").unwrap();
    let mut rng = Rng::with_seed(0x2a5e_ed0f_2a11);
    let mut keyed = BTreeMap::new();
    let mut resigned = BTreeMap::new();
    let mut open = BTreeMap::new();
    for i in 0..MESSAGES {
        let msg = sample_message(&sender, &mut rng);
        let mut frames = wire_frames(&sender, msg);
        let mut done = Vec::new();
        for _ in 0..1 + rng.usize(..3) {
            done.push(mutate(&mut frames, &mut rng));
        }
        let outcome =
            catch_unwind(AssertUnwindSafe(|| decode_parts(&frames))).unwrap_or_else(|_| {
                panic!("message {i} panicked the decoder after {done:?}; frames: {frames:?}")
            });
        tally(&mut keyed, &outcome.keyed);
        if let Some(r) = &outcome.resigned {
            tally(&mut resigned, r);
        }
        tally(&mut open, &outcome.open);
    }
    eprintln!("as received, keyed: {keyed:?}\nre-signed: {resigned:?}\nunsigned: {open:?}");
    for kind in ["Ok", "NoDelimiter", "TooFewFrames", "BadSignature"] {
        assert!(keyed.get(kind) > Some(&0), "no {kind} among {keyed:?}");
    }
    for kind in ["Ok", "Json", "Utf8"] {
        assert!(
            resigned.get(kind) > Some(&0),
            "no {kind} among {resigned:?}"
        );
        assert!(open.get(kind) > Some(&0), "no {kind} among {open:?}");
    }
}

/// Replaces one node of a JSON tree with something a marker parser might
/// trip on.
fn mutate_json(json: &mut Json, rng: &mut Rng) {
    let mut nodes = 0;
    count_nodes(json, &mut nodes);
    let target = rng.usize(..nodes);
    let mut seen = 0;
    replace_node(json, target, &mut seen, rng);
}

fn count_nodes(json: &Json, n: &mut usize) {
    *n += 1;
    match json {
        Json::Array(a) => a.iter().for_each(|v| count_nodes(v, n)),
        Json::Object(o) => o.values().for_each(|v| count_nodes(v, n)),
        _ => {}
    }
}

fn replace_node(json: &mut Json, target: usize, seen: &mut usize, rng: &mut Rng) -> bool {
    if *seen == target {
        *json = match rng.usize(..6) {
            0 => json!(*rng.pick(&[
                0u64,
                1,
                2,
                8,
                u64::MAX,
                i64::MAX as u64,
                1 << 53,
                usize::MAX as u64 / 8 + 1
            ])),
            1 => json!(*rng.pick(&[-1i64, i64::MIN, -8])),
            2 => json!(*rng.pick(&[0.5f64, -0.0, 1e300, 3.0])),
            3 => {
                json!(*rng
                    .pick(&["f64", "i64", "bytes", "map", "fn", "ref", "float", "nan", "-inf", ""]))
            }
            4 => {
                let kind = *rng.pick(&["f64", "i64", "bytes", "map", "float", "fn", "ref"]);
                let mut marker = json!({"$zpar": kind, "buffer": rng.usize(..4), "frames": rng.usize(..3), "len": rng.usize(..5)});
                if rng.chance(50) {
                    marker["v"] = json.clone();
                }
                marker
            }
            _ => match json {
                Json::Object(o) if !o.is_empty() => {
                    let key = o.keys().nth(rng.usize(..o.len())).unwrap().clone();
                    o.remove(&key);
                    return true;
                }
                _ => Json::Null,
            },
        };
        return true;
    }
    *seen += 1;
    match json {
        Json::Array(a) => a.iter_mut().any(|v| replace_node(v, target, seen, rng)),
        Json::Object(o) => o.values_mut().any(|v| replace_node(v, target, seen, rng)),
        _ => false,
    }
}

/// Value::decode over mutated encodings: marker fields replaced by huge,
/// negative or mistyped numbers, markers dropped in, fields deleted, buffers
/// dropped, truncated or extended, and the JSON text itself damaged.
#[test]
fn mutated_value_markers_never_panic_value_decode() {
    let mut rng = Rng::with_seed(0x00dd_ba11);
    let (mut ok, mut failed) = (0, 0);
    for i in 0..5_000 {
        let value = sample_value(&mut rng, 3);
        let (mut json, buffers) = value.encode();
        let mut buffers: Vec<Vec<u8>> = buffers.iter().map(|b| b.to_vec()).collect();
        for _ in 0..1 + rng.usize(..3) {
            mutate_json(&mut json, &mut rng);
        }
        if !buffers.is_empty() && rng.chance(30) {
            let b = rng.usize(..buffers.len());
            match rng.usize(..3) {
                0 => {
                    buffers.remove(b);
                }
                1 => {
                    let len = rng.usize(..buffers[b].len() + 1);
                    buffers[b].truncate(len);
                }
                _ => buffers[b].extend([0u8; 8]),
            }
        }
        // Also through the text: a damaged byte, then whatever still parses.
        let mut text = serde_json::to_vec(&json).unwrap();
        if rng.chance(30) && !text.is_empty() {
            let at = rng.usize(..text.len());
            text[at] = rng.u8(..);
        }
        let Ok(json) = serde_json::from_slice::<Json>(&text) else {
            continue;
        };
        let frames = zmq_frames(&buffers);
        let result = catch_unwind(AssertUnwindSafe(|| {
            Value::decode(&json, &frames).map(|v| value_round_trips(&v))
        }))
        .unwrap_or_else(|_| panic!("value {i} panicked Value::decode: {json}"));
        match result {
            Ok(()) => ok += 1,
            Err(e) => {
                assert!(matches!(e, ProtocolError::Value(_)), "{e:?}");
                failed += 1;
            }
        }
    }
    eprintln!("mutated values: {ok} decoded, {failed} rejected");
    assert!(ok > 0 && failed > 0);
}
