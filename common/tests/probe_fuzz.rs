//! Bounded fuzzing of the probe: real media files from `fuzz/corpus/probe` (MP4 with its
//! index at the end or first, fragmented MP4, Matroska, WebM, MPEG-TS), mutated by
//! proptest (bytes overwritten, runs duplicated or dropped, the file cut short), are
//! probed. Whatever the bytes, the probe returns a result or an error within its deadline:
//! no panic, no crash, no hang. A probe that succeeds describes a usable stream.
//!
//! `PROPTEST_CASES` sets how many mutated files are tried (2000 by default, about two
//! seconds; 20 000 took 17 s with no failure).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use framefleet_common::media;
use proptest::prelude::*;

/// Longest a probe of one small mutated file may take before it counts as a hang.
const PROBE_DEADLINE: Duration = Duration::from_secs(20);

fn corpus() -> Vec<(String, Vec<u8>)> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/probe");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .expect("the probe corpus is checked in under fuzz/corpus/probe")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, std::fs::read(&path).expect("corpus file"))
        })
        .collect()
}

/// One way to damage a file.
#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite the byte at this fraction of the file.
    Overwrite(f64, u8),
    /// Repeat a run of bytes (start fraction, length) in place.
    Duplicate(f64, usize),
    /// Drop a run of bytes (start fraction, length).
    Drop(f64, usize),
    /// Keep only this fraction of the file.
    Truncate(f64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (0.0..1.0f64, any::<u8>()).prop_map(|(at, byte)| Mutation::Overwrite(at, byte)),
        1 => (0.0..1.0f64, 1..512usize).prop_map(|(at, len)| Mutation::Duplicate(at, len)),
        1 => (0.0..1.0f64, 1..512usize).prop_map(|(at, len)| Mutation::Drop(at, len)),
        1 => (0.0..1.0f64).prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let at = |fraction: f64, len: usize| ((fraction * len as f64) as usize).min(len);
    match *mutation {
        Mutation::Overwrite(fraction, byte) => {
            if !bytes.is_empty() {
                let index = at(fraction, bytes.len() - 1);
                bytes[index] = byte;
            }
        }
        Mutation::Duplicate(fraction, len) => {
            let start = at(fraction, bytes.len());
            let end = (start + len).min(bytes.len());
            let run = bytes[start..end].to_vec();
            bytes.splice(start..start, run);
        }
        Mutation::Drop(fraction, len) => {
            let start = at(fraction, bytes.len());
            let end = (start + len).min(bytes.len());
            bytes.drain(start..end);
        }
        Mutation::Truncate(fraction) => {
            let keep = at(fraction, bytes.len());
            bytes.truncate(keep);
        }
    }
}

/// What a probe came to: its frame count and picture size, its error, or its panic.
type Outcome = std::thread::Result<Result<(usize, u32, u32), String>>;

/// Probes `bytes` on a thread of its own; `None` when it did not finish in time.
fn probe_within_deadline(bytes: Vec<u8>, name: &str) -> Option<Outcome> {
    let (done, outcome) = mpsc::channel();
    let name = name.to_string();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(move || {
            media::probe(Cursor::new(bytes), &name)
                .map(|info| (info.video.frames.len(), info.video.width, info.video.height))
                .map_err(|e| e.to_string())
        });
        let _ = done.send(result);
    });
    outcome.recv_timeout(PROBE_DEADLINE).ok()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_probe_never_panics_or_hangs_on_damaged_media(
        file in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        media::init();
        let corpus = corpus();
        let (name, original) = &corpus[file.index(corpus.len())];
        let mut bytes = original.clone();
        for mutation in &mutations {
            apply(&mut bytes, mutation);
        }
        match probe_within_deadline(bytes, name) {
            None => prop_assert!(false, "probing {} with {:?} hung", name, mutations),
            Some(Err(_)) => prop_assert!(false, "probing {} with {:?} panicked", name, mutations),
            Some(Ok(Ok((frames, width, height)))) => prop_assert!(
                frames > 0 && width > 0 && height > 0,
                "{}: an empty stream was accepted", name
            ),
            Some(Ok(Err(_))) => {}
        }
    }
}

/// The corpus as checked in: one file per container the probe reads.
const CORPUS: [&str; 6] = [
    "fragmented.mp4",
    "index-at-end.mp4",
    "index-first.mp4",
    "matroska.mkv",
    "transport.ts",
    "webm.webm",
];

#[test]
fn every_corpus_file_probes_cleanly_before_mutation() {
    media::init();
    let corpus = corpus();
    let names: Vec<&str> = corpus.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, CORPUS, "fuzz/corpus/probe is incomplete");
    for (name, bytes) in corpus {
        let info =
            media::probe(Cursor::new(bytes), &name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(info.video.frames.len(), 6, "{name}");
    }
}
