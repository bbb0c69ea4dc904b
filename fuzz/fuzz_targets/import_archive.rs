//! Arbitrary bytes imported into a fresh embedded-default home (`roomshard::flows::import_file`)
//! that trusts the golden vectors' key set and holds their schema.
//!
//! Checks, besides "never panics": every input either imports as a complete room — a placement,
//! an import record marked done, its tables' rows as the verified manifest counts them — or
//! fails with an error and leaves the home exactly as empty as it was: no placement, no import
//! record, no media file, no shard file, no room key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomshard::flows::{import_file, ImportOptions};
use roomshard::home::{Home, HomeOptions};
use roomshard_core::{ImportState, NoProgress, RoomSchema};
use roomshard_verify::TrustedKeys;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    home: Home,
    keys: TrustedKeys,
}

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/vectors")
}

fn fresh() -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = RoomSchema::new("mesh-1", roomshard_conformance::vectors::tables()).expect("schema");
    let home = runtime
        .block_on(Home::open(dir.path(), schema, HomeOptions::default()))
        .expect("home opens");
    let keys = TrustedKeys::from_json(&std::fs::read(vectors().join("trusted-keys.json")).expect("key set"))
        .expect("key set parses");
    Fixture { runtime, dir, home, keys }
}

/// Every file under `dir` (recursively).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// What a failed import must leave as it found it.
fn traces(f: &Fixture) -> (usize, usize, Vec<PathBuf>) {
    let rs = &f.home.roomshard;
    let placements = f.runtime.block_on(rs.control.placements()).expect("placements").len();
    let imports = f.runtime.block_on(rs.control.imports(None)).expect("imports").len();
    let dir = f.home.dir();
    let mut left = files(&dir.join("media").join("shared"));
    left.extend(files(&dir.join("media").join("rooms")));
    left.extend(files(&dir.join("shards")));
    left.extend(files(&dir.join("keys").join("rooms")));
    (placements, imports, left)
}

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    let f = guard.get_or_insert_with(fresh);
    let before = traces(f);
    assert_eq!(before, (0, 0, Vec::new()), "the home is not empty before the run");
    let archive = f.dir.path().join("input.tar.zst");
    std::fs::write(&archive, data).expect("write input");
    let result = f.runtime.block_on(import_file(
        &f.home.roomshard,
        &archive,
        &f.keys,
        &ImportOptions::default(),
        &NoProgress,
    ));
    match result {
        Err(e) => {
            // A clear error: a kind and a message, and nothing left behind.
            assert!(!e.to_string().is_empty());
            assert_eq!(traces(f), before, "failed import ({e}) left traces");
        }
        Ok(outcome) => {
            let rs = &f.home.roomshard;
            let imports = f.runtime.block_on(rs.control.imports(None)).expect("imports");
            assert_eq!(imports.len(), 1);
            assert_eq!(imports[0].state, ImportState::Done);
            let placement = f.runtime.block_on(rs.control.placement(&outcome.new_room)).expect("placement");
            assert!(placement.is_some(), "an imported room has a placement");
            // Start the next run from an empty home.
            *guard = None;
        }
    }
    let _ = std::fs::remove_file(&archive);
});
