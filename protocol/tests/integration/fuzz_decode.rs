//! The `decode` fuzz target's body (`fuzz/src/lib.rs`, included here by
//! path) run over a few hundred deterministic inputs, so the fuzz target's
//! logic is exercised by every `cargo test`, without a fuzzer or nightly.

#[path = "../../../fuzz/src/lib.rs"]
pub mod body;

use crate::common::{sample_message, wire_frames, Rng, RngExt};
use zpar_protocol::{Content, ExecuteRequest, Message, Session, SIGNATURE_SCHEME};

fn join(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.join(&body::SEPARATOR)
}

#[test]
fn a_valid_message_in_the_fuzz_input_format_decodes() {
    let sender = Session::new(body::KEY, SIGNATURE_SCHEME, "seed").unwrap();
    let msg = Message::new(
        &sender,
        Content::ExecuteRequest(ExecuteRequest {
            code: "40 + 2".into(),
            ..Default::default()
        }),
    );
    let input = join(&wire_frames(&sender, msg));
    let parts: Vec<&[u8]> = input.split(|&b| b == body::SEPARATOR).collect();
    let outcome = body::decode_parts(&parts);
    assert!(outcome.keyed.is_ok(), "{outcome:?}");
    assert!(matches!(outcome.resigned, Some(Ok(()))), "{outcome:?}");
    assert!(outcome.open.is_ok(), "{outcome:?}");
}

#[test]
fn fuzz_body_survives_random_and_damaged_inputs() {
    let sender = Session::new(body::KEY, SIGNATURE_SCHEME, "seed").unwrap();
    let mut rng = Rng::with_seed(0xf022_0001);
    let tokens: [&[u8]; 6] = [
        &[body::SEPARATOR],
        b"<IDS|MSG>",
        b"{}",
        br#"{"$zpar": "f64", "buffer": 0, "frames": 1, "len": 1}"#,
        b"\xff",
        b"\"",
    ];
    for i in 0..400 {
        let mut input = if i % 4 == 0 {
            let n = rng.usize(..200);
            rng.bytes(n)
        } else {
            join(&wire_frames(&sender, sample_message(&sender, &mut rng)))
        };
        for _ in 0..rng.usize(..5) {
            if input.is_empty() {
                break;
            }
            let at = rng.usize(..input.len());
            match rng.usize(..3) {
                0 => input[at] = rng.u8(..),
                1 => {
                    input.truncate(at);
                }
                _ => {
                    let token = *rng.pick(&tokens);
                    input.splice(at..at, token.iter().copied());
                }
            }
        }
        body::decode(&input);
    }
}

/// Not a check: writes valid messages of every sample kind, in the fuzz
/// input format, as a seed corpus for `cargo fuzz run decode` (a fuzzer
/// rarely invents a complete header on its own). Run it with
/// `cargo test -p zpar-protocol --test integration -- --ignored write_fuzz_seed_corpus`.
#[test]
#[ignore = "writes fuzz/corpus/decode; run by hand before fuzzing"]
fn write_fuzz_seed_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode");
    std::fs::create_dir_all(&dir).unwrap();
    let sender = Session::new(body::KEY, SIGNATURE_SCHEME, "seed").unwrap();
    let mut rng = Rng::with_seed(0x5eed);
    for i in 0..64 {
        let input = join(&wire_frames(&sender, sample_message(&sender, &mut rng)));
        std::fs::write(dir.join(format!("seed-{i:02}")), input).unwrap();
    }
    eprintln!("wrote 64 seeds to {}", dir.display());
}
