//! End-to-end tests of the `roomshard` flows through the built binary: `demo`, import of a
//! tampered archive, crash safety of `decentralise` and `import` under `kill -9` at random
//! points, and a sealed room.
//!
//! The kill trials derive their kill times from a seeded RNG (`ROOMSHARD_KILL_SEED`, default
//! fixed) over the measured duration of an uninterrupted run; `ROOMSHARD_KILL_TRIALS` (default
//! 20) sets how many per flow. State is checked both through the CLI (`rooms --json`) and by
//! opening the home in-process with the `roomshard` crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use roomshard::home::{Home, HomeOptions};
use roomshard_core::{
    DumpSink, Error, ImportState, ObjectKey, Parity, PlacementState, RoomId, Scope, TableDescriptor,
};

fn roomshard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_roomshard"))
}

/// `ROOMSHARD_TEST_BACKEND=postgres` runs the backend-neutral tests (the kill trials, sealing,
/// imports) with every home's control plane and shards in a PostgreSQL database of its own, on
/// one cluster per test process; unset or `sqlite` is the embedded default.
fn on_postgres() -> bool {
    match std::env::var("ROOMSHARD_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("ROOMSHARD_TEST_BACKEND={other:?}: expected sqlite or postgres"),
    }
}

/// The PostgreSQL databases of this process's homes, by home directory.
static DATABASES: std::sync::Mutex<std::collections::BTreeMap<PathBuf, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The URL of `home`'s database, created empty on first use.
fn database_for(home: &Path) -> String {
    let cluster = roomshard_interop_tests::pg::Cluster::shared();
    let mut dbs = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
    let name = dbs
        .entry(home.to_path_buf())
        .or_insert_with(|| cluster.fresh_database("cli"))
        .clone();
    cluster.url(&name)
}

/// The flags that put a command's home (its `--home`) on this process's backend.
///
/// `demo --dir D` gets them for its server home `D/home`; its second home, `D/lite` (where the
/// demo imports the export), is always the embedded default, so commands on it get none.
fn backend_flags(args: &[&str]) -> Vec<String> {
    if !on_postgres() {
        return Vec::new();
    }
    let (flag, sub) = match args.first() {
        Some(&"demo") => ("--dir", Some("home")),
        _ => ("--home", None),
    };
    let Some(i) = args.iter().position(|a| *a == flag) else {
        return Vec::new();
    };
    let home = match sub {
        Some(sub) => Path::new(args[i + 1]).join(sub),
        None => PathBuf::from(args[i + 1]),
    };
    if sub.is_none() && home.file_name().is_some_and(|n| n == "lite") {
        return Vec::new();
    }
    let url = database_for(&home);
    vec!["--control".into(), url.clone(), "--shards".into(), url]
}

/// `roomshard args` on this process's backend.
fn roomshard_on(args: &[&str]) -> Command {
    let mut cmd = roomshard();
    cmd.args(args).args(backend_flags(args));
    cmd
}

/// Whether room `id`'s shard exists in `home`: its SQLite file, or its PostgreSQL schema.
fn shard_exists(home: &Path, id: &str) -> bool {
    if !on_postgres() {
        return home.join(format!("shards/room_{id}.sqlite3")).exists();
    }
    database_for(home);
    let db = DATABASES.lock().unwrap_or_else(|p| p.into_inner())[home].clone();
    let found = roomshard_interop_tests::pg::Cluster::shared().query(
        &db,
        &format!("SELECT count(*) FROM pg_namespace WHERE nspname = 'room_{id}'"),
    );
    found == "1"
}

/// A copy of the home `template` at `to`: its directory and, on PostgreSQL, its database
/// (`CREATE DATABASE … TEMPLATE`, PostgreSQL's own file-level copy).
fn clone_home(template: &Path, to: &Path) {
    copy_dir(template, to);
    if !on_postgres() {
        return;
    }
    let cluster = roomshard_interop_tests::pg::Cluster::shared();
    let source = {
        database_for(template);
        let dbs = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
        dbs[template].clone()
    };
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let name = format!(
        "clone_{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    // The template must have no session: the last command's connections may still be closing.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run(cluster
            .psql_cmd("postgres")
            .arg("-c")
            .arg(format!("CREATE DATABASE \"{name}\" TEMPLATE \"{source}\"")));
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cloning database {source}:\n{}",
            describe(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    DATABASES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(to.to_path_buf(), name);
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the binary with `args`, asserting exit code `code`.
fn cli(args: &[&str], code: i32) -> Output {
    let out = run(&mut roomshard_on(args));
    assert_eq!(
        out.status.code(),
        Some(code),
        "roomshard {}\n{}",
        args.join(" "),
        describe(&out)
    );
    out
}

fn stdout_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{}", describe(out)))
}

/// Asserts that a command's stderr says `text`, showing the whole output otherwise.
fn assert_stderr_has(out: &Output, text: &str) {
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(text),
        "stderr lacks {text:?}: {}",
        describe(out)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn rooms_json(home: &Path) -> Vec<serde_json::Value> {
    let out = cli(&["rooms", "--home", s(home), "--json"], 0);
    stdout_json(&out)["rooms"]
        .as_array()
        .expect("rooms array")
        .clone()
}

fn room_entry(home: &Path, room: &str) -> Option<serde_json::Value> {
    rooms_json(home).into_iter().find(|r| r["room"] == room)
}

/// Copies a directory tree (a home that no process has open).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// SplitMix64: the kill points' RNG.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("ROOMSHARD_KILL_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x5eed_2026);
        eprintln!("kill trials: seed {seed} (set ROOMSHARD_KILL_SEED to replay)");
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn trials() -> usize {
    std::env::var("ROOMSHARD_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Spawns `roomshard args`, kills it with SIGKILL after `after` (unless it ended first), and
/// says whether it was killed.
fn spawn_and_kill(args: &[&str], after: Duration) -> bool {
    let mut child = roomshard_on(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn roomshard");
    let deadline = Instant::now() + after;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "roomshard {} failed before the kill: {status}",
                args.join(" ")
            );
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(2)));
    }
    // Child::kill sends SIGKILL on Unix.
    let killed = child.kill().is_ok();
    child.wait().unwrap();
    killed
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn open(dir: &Path) -> Home {
    let mut options = HomeOptions::default();
    if on_postgres() {
        let url = database_for(dir);
        options.providers.control =
            Some(roomshard_core::ProviderUrl::parse(&url, "--control").unwrap());
        options.providers.shards =
            Some(roomshard_core::ProviderUrl::parse(&url, "--shards").unwrap());
    }
    Home::open(dir, roomshard_example_mesh::schema(), options)
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()))
}

fn parity(home: &Path, scope: Scope) -> Parity {
    runtime().block_on(async {
        let h = open(home).await;
        h.roomshard
            .shards
            .parity(&scope, &h.roomshard.schema)
            .await
            .unwrap_or_else(|e| panic!("parity of {scope}: {e}"))
    })
}

/// Parity of room `id`'s dedicated shard, where its placement says it is.
fn shard_parity(home: &Path, id: &str) -> Parity {
    runtime().block_on(async {
        let h = open(home).await;
        let placement = h
            .roomshard
            .control
            .placement(&room(id))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no placement of {id}"));
        h.roomshard
            .shards
            .parity(&placement.dedicated(), &h.roomshard.schema)
            .await
            .unwrap_or_else(|e| panic!("parity of room {id}'s shard: {e}"))
    })
}

fn total_rows(p: &Parity) -> u64 {
    p.tables.iter().map(|t| t.rows).sum()
}

fn room(id: &str) -> RoomId {
    RoomId::new(id).unwrap()
}

/// `seed --home H --room R` with a small workload.
fn seed(home: &Path, room: &str, messages: u64, objects: u64, bytes: u64) {
    cli(
        &[
            "seed",
            "--home",
            s(home),
            "--room",
            room,
            "--messages",
            &messages.to_string(),
            "--media-objects",
            &objects.to_string(),
            "--media-bytes",
            &bytes.to_string(),
        ],
        0,
    );
}

#[test]
fn help_documents_exit_codes() {
    let out = cli(&["--help"], 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Exit codes"), "{text}");
    for sub in ["demo", "import", "decentralise", "receipt", "audit"] {
        let out = cli(&[sub, "--help"], 0);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Exit codes"),
            "{sub} --help"
        );
    }
    let out = cli(&["rooms"], 2);
    assert!(!out.stderr.is_empty());
    let tmp = tempfile::tempdir().unwrap();
    let out = cli(&["rooms", "--home", s(&tmp.path().join("nope"))], 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: "),
        "{}",
        describe(&out)
    );
}

#[test]
fn demo_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("demo");
    let started = Instant::now();
    let out = cli(
        &[
            "demo",
            "--dir",
            s(&d),
            "--messages",
            "400",
            "--media-objects",
            "6",
            "--media-bytes",
            "300000",
            "--json",
        ],
        0,
    );
    eprintln!("demo took {:.1}s", started.elapsed().as_secs_f64());
    let report = stdout_json(&out);
    let archive = d.join("exports/room_general.tar.zst");
    let sidecar = d.join("exports/room_general.tar.zst.sigstore.json");
    let trusted = d.join("keys/trusted-keys.json");
    let dec_receipt = d.join("receipts/decentralise_general.json");
    let imported = report["imported_room"].as_str().expect("imported_room");
    let imp_receipt = d.join(format!("receipts/import_{imported}.json"));
    // Every "Next:" command works as printed: the binary is not on PATH here, so it is named by
    // its full path; each (but the server) runs and succeeds through a shell.
    let next: Vec<String> = report["next"]
        .as_array()
        .expect("next")
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let exe = fs::canonicalize(env!("CARGO_BIN_EXE_roomshard")).unwrap();
    for line in &next {
        assert!(
            line.starts_with(&format!("{} ", exe.display())),
            "{line:?} does not name the binary that printed it"
        );
        if line.contains(" lite serve ") {
            continue;
        }
        let out = run(Command::new("sh").arg("-c").arg(line));
        assert!(out.status.success(), "{line}\n{}", describe(&out));
    }
    // The README's openssl step has a public.pem to use, and it checks the signature.
    let x = tmp.path().join("x");
    extract(&d.join("exports/room_general.tar.zst"), &x);
    // The README's line, as printed there (bash for the process substitution).
    let out = run(Command::new("bash").current_dir(&x).arg("-c").arg(format!(
        "openssl dgst -sha256 -verify {} -signature <(base64 -d export.signature) manifest.json",
        d.join("keys/public.pem").display()
    )));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "{}",
        describe(&out)
    );
    let server_db = d.join("home/global.sqlite3");
    for f in [
        &archive,
        &sidecar,
        &trusted,
        &dec_receipt,
        &imp_receipt,
        &d.join("lite/global.sqlite3"),
    ] {
        assert!(f.is_file(), "{} missing", f.display());
    }
    // The server home's database is a file on the embedded default, PostgreSQL's otherwise.
    assert_eq!(
        server_db.is_file(),
        !on_postgres(),
        "{}",
        server_db.display()
    );
    cli(
        &[
            "verify",
            s(&archive),
            "--trusted-keys",
            s(&trusted),
            "--sidecar",
            s(&sidecar),
        ],
        0,
    );
    let lite_rooms = rooms_json(&d.join("lite"));
    assert!(
        lite_rooms.iter().any(|r| r["room"] == imported),
        "{lite_rooms:?}"
    );
    let home_room = room_entry(&d.join("home"), "general").expect("general in home");
    assert_eq!(home_room["state"], "sovereign", "{home_room}");
    // The receipts verify; a tampered one does not.
    cli(
        &[
            "receipt",
            "verify",
            s(&dec_receipt),
            "--trusted-keys",
            s(&trusted),
        ],
        0,
    );
    cli(
        &[
            "receipt",
            "verify",
            s(&imp_receipt),
            "--trusted-keys",
            s(&d.join("lite/keys/trusted-keys.json")),
        ],
        0,
    );
    let envelope = fs::read_to_string(&dec_receipt).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&envelope).unwrap();
    let sig = value["signatures"][0]["sig"].as_str().unwrap().to_string();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    value["signatures"][0]["sig"] = format!("{flipped}{}", &sig[1..]).into();
    let bad = tmp.path().join("bad-receipt.json");
    fs::write(&bad, value.to_string()).unwrap();
    let out = cli(
        &["receipt", "verify", s(&bad), "--trusted-keys", s(&trusted)],
        1,
    );
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
    // An expired receipt is refused.
    cli(
        &[
            "receipt",
            "verify",
            s(&dec_receipt),
            "--trusted-keys",
            s(&trusted),
            "--now",
            "2999-01-01T00:00:00Z",
        ],
        1,
    );
    let listed = stdout_json(&cli(
        &[
            "receipt",
            "list",
            "general",
            "--home",
            s(&d.join("home")),
            "--json",
        ],
        0,
    ));
    assert!(
        !listed["receipts"].as_array().unwrap().is_empty(),
        "{listed}"
    );
    cli(&["audit", "verify", "--home", s(&d.join("home"))], 0);
    cli(&["audit", "list", "--home", s(&d.join("home"))], 0);
    // A previous demo directory is refused without --force; any other non-empty one always.
    let out = cli(&["demo", "--dir", s(&d)], 2);
    assert_stderr_has(&out, "--force");
    let other = tmp.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("precious.txt"), "keep me").unwrap();
    cli(&["demo", "--dir", s(&other), "--force"], 2);
    assert!(other.join("precious.txt").is_file());
}

#[test]
fn tampered_import_is_refused_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    seed(&a, "source", 200, 4, 100_000);
    let exports = tmp.path().join("exports");
    let out = cli(
        &[
            "export",
            "source",
            "--home",
            s(&a),
            "--out",
            s(&exports),
            "--json",
        ],
        0,
    );
    let report = stdout_json(&out);
    let archive = PathBuf::from(report["archive"].as_str().unwrap());
    assert!(archive.is_file());
    let trusted = a.join("keys/trusted-keys.json");

    // The target home already has a room, so the import would need remapping too.
    let b = tmp.path().join("b");
    seed(&b, "resident", 100, 2, 50_000);
    let before_rooms = rooms_json(&b);
    let before_media = files_under(&b.join("media"));

    let mut bytes = fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let tampered = tmp.path().join("room_source.tar.zst");
    fs::write(&tampered, &bytes).unwrap();
    let out = cli(
        &[
            "import",
            s(&tampered),
            "--home",
            s(&b),
            "--trusted-keys",
            s(&trusted),
            "--room",
            "copy",
        ],
        1,
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: "),
        "{}",
        describe(&out)
    );
    // Signed by a key the importer does not trust: refused as well.
    let keys = tmp.path().join("other-keys");
    cli(&["keys", "generate", "--out", s(&keys)], 0);
    cli(
        &[
            "import",
            s(&archive),
            "--home",
            s(&b),
            "--trusted-keys",
            s(&keys.join("trusted-keys.json")),
            "--room",
            "copy",
        ],
        1,
    );
    assert_eq!(rooms_json(&b), before_rooms);
    assert_eq!(files_under(&b.join("media")), before_media);
    assert_eq!(total_rows(&parity(&b, Scope::Pooled(room("copy")))), 0);

    // The untampered archive imports.
    let out = cli(
        &[
            "import",
            s(&archive),
            "--home",
            s(&b),
            "--trusted-keys",
            s(&trusted),
            "--room",
            "copy",
            "--json",
        ],
        0,
    );
    assert_eq!(stdout_json(&out)["room"], "copy");
    assert!(room_entry(&b, "copy").is_some());
    assert_eq!(
        total_rows(&parity(&b, Scope::Pooled(room("copy")))),
        total_rows(&parity(&a, Scope::Pooled(room("source"))))
    );

    // The same archive again: refused (exit 1, naming the flag) unless --allow-duplicate.
    let import_again = |extra: &[&str], code: i32| {
        let mut args = vec![
            "import",
            s(&archive),
            "--home",
            s(&b),
            "--trusted-keys",
            s(&trusted),
            "--json",
        ];
        args.extend_from_slice(extra);
        cli(&args, code)
    };
    let out = import_again(&[], 1);
    assert_stderr_has(&out, "--allow-duplicate");
    let copies = rooms_json(&b).len();
    let out = import_again(&["--allow-duplicate"], 0);
    // `source` is free in this home, so the copy keeps the bundle's own id.
    assert_eq!(stdout_json(&out)["room"], "source");
    assert_eq!(rooms_json(&b).len(), copies + 1);
}

#[test]
fn decentralise_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    seed(&template, "kill", 3000, 8, 400_000);
    let expected = parity(&template, Scope::Pooled(room("kill")));
    assert!(total_rows(&expected) > 3000, "{expected:?}");

    let args = |home: &Path| -> Vec<String> {
        [
            "decentralise",
            "kill",
            "--home",
            s(home),
            "--batch-rows",
            "50",
        ]
        .map(str::to_string)
        .to_vec()
    };
    // An uninterrupted run, timed.
    let clean = tmp.path().join("clean");
    clone_home(&template, &clean);
    let started = Instant::now();
    let a = args(&clean);
    cli(&a.iter().map(String::as_str).collect::<Vec<_>>(), 0);
    let full = started.elapsed();
    eprintln!("uninterrupted decentralise: {:.2}s", full.as_secs_f64());
    assert_eq!(shard_parity(&clean, "kill"), expected);

    let mut rng = Rng::from_env();
    let mut killed = 0;
    // Where the kills left the placement, before the re-run.
    let mut landed: std::collections::BTreeMap<String, usize> = Default::default();
    for trial in 0..trials() {
        let home = tmp.path().join(format!("trial-{trial}"));
        clone_home(&template, &home);
        let a = args(&home);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let after = full.mul_f64(rng.unit());
        let was_killed = spawn_and_kill(&a, after);
        killed += usize::from(was_killed);
        let state = room_entry(&home, "kill").map(|r| r["state"].clone());
        *landed
            .entry(
                state
                    .as_ref()
                    .and_then(|s| s.as_str())
                    .unwrap_or("none")
                    .to_string(),
            )
            .or_default() += 1;
        if state.as_ref().and_then(|s| s.as_str()) != Some("sovereign") {
            let out = run(&mut roomshard_on(&a));
            assert_eq!(
                out.status.code(),
                Some(0),
                "trial {trial} (killed after {after:?}, state {state:?}): resume failed\n{}",
                describe(&out)
            );
        }
        let entry = room_entry(&home, "kill").expect("placement");
        assert_eq!(entry["state"], "sovereign", "trial {trial}: {entry}");
        assert_eq!(entry["is_sharded"], true, "trial {trial}: {entry}");
        assert_eq!(
            shard_parity(&home, "kill"),
            expected,
            "trial {trial}: killed after {after:?}"
        );
        cli(&["audit", "verify", "--home", s(&home)], 0);
        fs::remove_dir_all(&home).unwrap();
    }
    eprintln!(
        "decentralise: {killed} of {} runs killed; placement states after the kill: {landed:?}",
        trials()
    );
    assert!(killed >= trials() / 2, "too few kills landed: {killed}");
    let mid_flow: usize = landed
        .iter()
        .filter(|(s, _)| !["none", "pooled", "sovereign"].contains(&s.as_str()))
        .map(|(_, n)| n)
        .sum();
    assert!(mid_flow >= 1, "no kill landed mid-flow: {landed:?}");
}

/// What a home holds for a room after an import attempt.
struct Landed {
    placement: bool,
    rows: u64,
    objects: u64,
    staging: usize,
    done: usize,
}

fn import_state(home: &Path, new: &str) -> Landed {
    runtime().block_on(async {
        let h = open(home).await;
        let rs = &h.roomshard;
        let r = room(new);
        let placement = rs.control.placement(&r).await.unwrap().is_some();
        let rows = total_rows(
            &rs.shards
                .parity(&Scope::Pooled(r.clone()), &rs.schema)
                .await
                .unwrap(),
        );
        let objects = rs
            .media
            .usage(&Scope::Pooled(r.clone()))
            .await
            .unwrap()
            .objects;
        let mine = |state| {
            let rs = rs.clone();
            let r = r.clone();
            async move {
                rs.control
                    .imports(Some(state))
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|i| i.new_room == r)
                    .count()
            }
        };
        Landed {
            placement,
            rows,
            objects,
            staging: mine(ImportState::Staging).await,
            done: mine(ImportState::Done).await,
        }
    })
}

/// Whether a home still has a copy job recorded for `room` (an unfinished recentralise, say).
fn has_job(home: &Path, room_id: &str) -> bool {
    runtime().block_on(async {
        let h = open(home).await;
        h.roomshard
            .control
            .jobs()
            .await
            .unwrap()
            .iter()
            .any(|j| j.room.as_str() == room_id)
    })
}

/// `recentralise` killed at random points, before or after the flip to pooled, is finished by
/// running it again: the room ends pooled with the same rows, and its own shard, bucket and job
/// are gone.
#[test]
fn recentralise_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    seed(&template, "kill", 3000, 8, 400_000);
    let expected = parity(&template, Scope::Pooled(room("kill")));
    cli(
        &[
            "decentralise",
            "kill",
            "--home",
            s(&template),
            "--batch-rows",
            "50",
        ],
        0,
    );
    let args = |home: &Path| -> Vec<String> {
        ["recentralise", "kill", "--home", s(home)]
            .map(str::to_string)
            .to_vec()
    };
    let clean = tmp.path().join("clean");
    clone_home(&template, &clean);
    let started = Instant::now();
    let a = args(&clean);
    cli(&a.iter().map(String::as_str).collect::<Vec<_>>(), 0);
    let full = started.elapsed();
    eprintln!("uninterrupted recentralise: {:.2}s", full.as_secs_f64());
    assert_eq!(parity(&clean, Scope::Pooled(room("kill"))), expected);

    let mut rng = Rng::from_env();
    let mut killed = 0;
    let mut landed: std::collections::BTreeMap<String, usize> = Default::default();
    for trial in 0..trials() {
        let home = tmp.path().join(format!("trial-{trial}"));
        clone_home(&template, &home);
        let a = args(&home);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        // Every other trial aims at the end of the run, where the flip and the cleanup are.
        let after = if trial % 2 == 0 {
            full.mul_f64(rng.unit())
        } else {
            full.mul_f64(0.75 + 0.25 * rng.unit())
        };
        killed += usize::from(spawn_and_kill(&a, after));
        let state = room_entry(&home, "kill").expect("placement")["state"]
            .as_str()
            .unwrap()
            .to_string();
        let pending = has_job(&home, "kill");
        let label = match (state.as_str(), pending) {
            ("pooled", true) => "pooled, cleanup pending".to_string(),
            (other, _) => other.to_string(),
        };
        *landed.entry(label.clone()).or_default() += 1;
        if state != "pooled" || pending {
            let out = run(&mut roomshard_on(&a));
            assert_eq!(
                out.status.code(),
                Some(0),
                "trial {trial} (killed after {after:?}, {label}): resume failed\n{}",
                describe(&out)
            );
        }
        let when = format!("trial {trial} (killed after {after:?}, {label})");
        assert_eq!(
            room_entry(&home, "kill").unwrap()["state"],
            "pooled",
            "{when}"
        );
        assert_eq!(
            parity(&home, Scope::Pooled(room("kill"))),
            expected,
            "{when}"
        );
        assert!(!shard_exists(&home, "kill"), "{when}: shard left");
        assert!(
            !home.join("media/rooms/kill").exists(),
            "{when}: bucket left"
        );
        assert!(!has_job(&home, "kill"), "{when}: job left");
        cli(&["audit", "verify", "--home", s(&home)], 0);
        fs::remove_dir_all(&home).unwrap();
    }
    eprintln!(
        "recentralise: {killed} of {} runs killed; states after the kill: {landed:?}",
        trials()
    );
    // The end-aimed half often lands after the run finished (that is what it probes); the
    // others are uniform.
    assert!(killed >= trials() / 4, "too few kills landed: {killed}");
    assert!(
        landed.get("recentralising").copied().unwrap_or(0) >= 1,
        "no kill landed mid-copy: {landed:?}"
    );
}

#[test]
fn import_is_all_or_nothing_under_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    seed(&a, "origin", 3000, 12, 1_500_000);
    let exports = tmp.path().join("exports");
    cli(
        &["export", "origin", "--home", s(&a), "--out", s(&exports)],
        0,
    );
    let archive = exports.join("room_origin.tar.zst");
    let trusted = a.join("keys/trusted-keys.json");
    let template = tmp.path().join("template");
    seed(&template, "resident", 300, 3, 100_000);
    let media_before = files_under(&template.join("media"));

    let args = |home: &Path| -> Vec<String> {
        [
            "import",
            s(&archive),
            "--home",
            s(home),
            "--trusted-keys",
            s(&trusted),
            "--room",
            "arrival",
        ]
        .map(str::to_string)
        .to_vec()
    };
    let clean = tmp.path().join("clean");
    clone_home(&template, &clean);
    let started = Instant::now();
    let a_clean = args(&clean);
    cli(&a_clean.iter().map(String::as_str).collect::<Vec<_>>(), 0);
    let full = started.elapsed();
    eprintln!("uninterrupted import: {:.2}s", full.as_secs_f64());
    let complete = import_state(&clean, "arrival");
    assert!(complete.placement && complete.rows > 3000 && complete.done == 1);

    let mut rng = Rng::from_env();
    let (mut killed, mut rolled_back) = (0, 0);
    // Every broken invariant of every trial, reported together at the end.
    let mut problems: Vec<String> = Vec::new();
    for trial in 0..trials() {
        let home = tmp.path().join(format!("trial-{trial}"));
        clone_home(&template, &home);
        let a = args(&home);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let after = full.mul_f64(rng.unit());
        killed += usize::from(spawn_and_kill(&a, after));
        // The next open of the home (any command) recovers.
        rooms_json(&home);
        let st = import_state(&home, "arrival");
        let when = format!("trial {trial} (killed after {after:?})");
        if st.staging != 0 {
            problems.push(format!("{when}: a staging import record survived"));
        }
        let got = (st.rows, st.objects, st.done);
        if st.placement {
            if got != (complete.rows, complete.objects, 1) {
                problems.push(format!(
                    "{when}: a placement but an incomplete import: (rows, objects, done) = {got:?}"
                ));
            }
        } else {
            rolled_back += 1;
            if got != (0, 0, 0) {
                problems.push(format!(
                    "{when}: no placement, but (rows, objects, done) = {got:?}"
                ));
            }
            let media_after = files_under(&home.join("media"));
            let extra: Vec<_> = media_after.difference(&media_before).collect();
            if !extra.is_empty() {
                problems.push(format!("{when}: files left under media/: {extra:?}"));
            }
        }
        let audit = run(&mut roomshard_on(&["audit", "verify", "--home", s(&home)]));
        if !audit.status.success() {
            problems.push(format!("{when}: audit verify: {}", describe(&audit)));
        }
        fs::remove_dir_all(&home).unwrap();
    }
    eprintln!(
        "import: {killed} of {} runs killed, {rolled_back} rolled back",
        trials()
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(killed >= trials() / 2, "too few kills landed: {killed}");
}

/// A dump sink that discards everything.
struct Discard;

#[roomshard_core::async_trait]
impl DumpSink for Discard {
    async fn begin_table(&mut self, _table: &TableDescriptor) -> roomshard_core::Result<()> {
        Ok(())
    }
    async fn rows(&mut self, _chunk: roomshard_core::Bytes) -> roomshard_core::Result<()> {
        Ok(())
    }
    async fn end_table(&mut self, _rows: u64) -> roomshard_core::Result<()> {
        Ok(())
    }
}

/// Whether the media and shard paths of a dedicated room answer `Sealed` (true), work (false).
fn data_paths_sealed(home: &Path, id: &str) -> (bool, bool) {
    runtime().block_on(async {
        let h = open(home).await;
        let rs = &h.roomshard;
        let scope = rs
            .control
            .placement(&room(id))
            .await
            .unwrap()
            .expect("placement")
            .dedicated();
        let key = ObjectKey::new("att/000001.bin").unwrap();
        let media = match rs.media.get(&scope, &key).await {
            Err(Error::Sealed { .. }) => true,
            Ok(mut got) => {
                while let Some(chunk) = got.body.next_chunk().await {
                    chunk.unwrap();
                }
                false
            }
            Err(e) => panic!("media get: unexpected {e}"),
        };
        let shard = match rs.shards.dump(&scope, &rs.schema, &mut Discard).await {
            Err(Error::Sealed { .. }) => true,
            Ok(_) => false,
            Err(e) => panic!("shard dump: unexpected {e}"),
        };
        (media, shard)
    })
}

#[test]
fn sealed_room_refuses_everything_until_regrant() {
    let tmp = tempfile::tempdir().unwrap();
    let h = tmp.path().join("h");
    seed(&h, "vault", 200, 5, 100_000);
    let pooled = parity(&h, Scope::Pooled(room("vault")));
    let plan = stdout_json(&cli(
        &["decentralise", "vault", "--home", s(&h), "--plan", "--json"],
        0,
    ));
    assert_eq!(plan["plan"]["rows"], total_rows(&pooled), "{plan}");
    assert_eq!(plan["plan"]["objects"], 5, "{plan}");
    assert_eq!(room_entry(&h, "vault").unwrap()["state"], "pooled");
    cli(&["decentralise", "vault", "--home", s(&h)], 0);
    assert_eq!(data_paths_sealed(&h, "vault"), (false, false));
    cli(&["revoke", "vault", "--home", s(&h)], 0);
    assert_eq!(room_entry(&h, "vault").unwrap()["state"], "sealed");
    let out_dir = tmp.path().join("out");
    for args in [
        vec!["export", "vault", "--home", s(&h), "--out", s(&out_dir)],
        vec!["decentralise", "vault", "--home", s(&h)],
        vec!["rotate", "vault", "--home", s(&h)],
    ] {
        let out = cli(&args, 1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("error: ") && stderr.contains("sealed"),
            "{}: {}",
            args.join(" "),
            describe(&out)
        );
    }
    assert!(!out_dir.join("room_vault.tar.zst").exists());
    assert_eq!(data_paths_sealed(&h, "vault"), (true, true));

    cli(&["regrant", "vault", "--home", s(&h)], 0);
    assert_eq!(room_entry(&h, "vault").unwrap()["state"], "sovereign");
    assert_eq!(data_paths_sealed(&h, "vault"), (false, false));
    cli(
        &["export", "vault", "--home", s(&h), "--out", s(&out_dir)],
        0,
    );
    cli(&["rotate", "vault", "--home", s(&h)], 0);
    assert_eq!(data_paths_sealed(&h, "vault"), (false, false));
    cli(&["audit", "verify", "--home", s(&h)], 0);
    let state = room_entry(&h, "vault").unwrap();
    assert_eq!(state["state"], PlacementState::Sovereign.as_str());
    // And back: the pooled copy equals what left.
    cli(&["recentralise", "vault", "--home", s(&h)], 0);
    assert_eq!(room_entry(&h, "vault").unwrap()["state"], "pooled");
    assert_eq!(parity(&h, Scope::Pooled(room("vault"))), pooled);
}

/// Runs SQL against a home's global database as someone with write access to the file would,
/// after dropping the append-only trigger.
fn tamper(home: &Path, statements: &[&str]) {
    runtime().block_on(async {
        let pool = global_db(home).await;
        sqlx::query("DROP TRIGGER IF EXISTS roomshard_audit_no_delete")
            .execute(&pool)
            .await
            .unwrap();
        for sql in statements {
            // Test-controlled statements, not input.
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    });
}

/// A pool on a home's global database, bypassing `Home::open` (and so its recovery).
async fn global_db(home: &Path) -> sqlx::SqlitePool {
    let db = home.join("global.sqlite3");
    sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap()
}

/// Removing the newest audit entries leaves an intact chain (every link still holds). What
/// reveals the cut: the audit anchor of the receipts the home recorded (checked on every `audit
/// verify`), a receipt its holder kept (`--receipt`) once the recorded ones are gone too, and a
/// head noted earlier (`--expect-head`).
/// SQLite-specific (scripts/test.sh runs it on the embedded default only).
#[test]
fn audit_verify_detects_a_truncated_tail_by_receipt_anchors_and_expect_head() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("demo");
    cli(&["demo", "--dir", s(&d)], 0);
    let home = d.join("home");
    let verify = |extra: &[&str], code: i32| {
        let mut args = vec!["audit", "verify", "--home", s(&home), "--json"];
        args.extend_from_slice(extra);
        stdout_json(&cli(&args, code))
    };
    let receipt = d.join("receipts/decentralise_general.json");
    let before = verify(&["--receipt", s(&receipt)], 0);
    let head = before["head"].as_str().unwrap().to_string();
    let rows = before["rows"].as_u64().unwrap();
    let anchors = before["anchors"].as_array().unwrap();
    assert!(
        anchors.len() >= 2,
        "recorded receipts plus the held one: {before}"
    );
    assert!(anchors.iter().all(|a| a["problem"].is_null()), "{before}");
    assert_eq!(
        verify(&["--expect-head", &head], 0)["expected_head_seq"],
        rows
    );
    // The decentralise receipt anchors the entry of the flip to sovereign.
    let shown = stdout_json(&cli(
        &[
            "receipt",
            "verify",
            s(&receipt),
            "--trusted-keys",
            s(&d.join("keys/trusted-keys.json")),
            "--json",
        ],
        0,
    ));
    let anchored = shown["predicate"]["audit"]["seq"].as_u64().unwrap();
    assert!(anchored >= 1 && anchored < rows, "{shown}");

    // Cut the log back to before that entry: the chain holds, the recorded receipts do not.
    tamper(
        &home,
        &[&format!(
            "DELETE FROM roomshard_audit WHERE seq >= {anchored}"
        )],
    );
    let caught = verify(&[], 1);
    assert_eq!(caught["rows"].as_u64(), Some(anchored - 1), "{caught}");
    let problem = caught["broken"]["problem"].as_str().unwrap();
    assert!(
        problem.contains("recorded decentralise receipt of room general")
            && problem.contains("removed from its end"),
        "{caught}"
    );

    // Remove the recorded receipts too: only what is held outside the home reveals the cut.
    tamper(&home, &["DELETE FROM roomshard_receipts"]);
    let cut = verify(&[], 0);
    assert_eq!(cut["intact"], true, "the chain itself still holds: {cut}");
    let caught = verify(&["--receipt", s(&receipt)], 1);
    assert!(
        caught["broken"]["problem"]
            .as_str()
            .unwrap()
            .contains("decentralise_general.json"),
        "{caught}"
    );
    let caught = verify(&["--expect-head", &head], 1);
    assert!(
        caught["broken"]["problem"]
            .as_str()
            .unwrap()
            .contains("not in the chain"),
        "{caught}"
    );
    // An older head is still found: only what came after it was cut.
    let older = cut["head"].as_str().unwrap().to_string();
    assert_eq!(
        verify(&["--expect-head", &older], 0)["expected_head_seq"],
        anchored - 1
    );

    // A receipt that is not this home's (tampered) is refused, not trusted for its anchor.
    let envelope = std::fs::read_to_string(&receipt).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&envelope).unwrap();
    json["signatures"][0]["sig"] = serde_json::Value::String("AAAA".into());
    let forged = tmp.path().join("forged.json");
    std::fs::write(&forged, json.to_string()).unwrap();
    let out = cli(
        &[
            "audit",
            "verify",
            "--home",
            s(&home),
            "--receipt",
            s(&forged),
        ],
        1,
    );
    assert_stderr_has(&out, "not a receipt of this home");
}

#[test]
fn export_refuses_overwrite_without_force_leaves_no_empty_dir_and_receipt_out_is_never_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("demo");
    cli(
        &[
            "demo",
            "--dir",
            s(&d),
            "--messages",
            "50",
            "--media-objects",
            "2",
        ],
        0,
    );
    let home = d.join("home");
    let out_dir = tmp.path().join("out");
    let export = |extra: &[&str], code: i32| {
        let mut args = vec![
            "export",
            "general",
            "--home",
            s(&home),
            "--out",
            s(&out_dir),
        ];
        args.extend_from_slice(extra);
        cli(&args, code)
    };
    export(&[], 0);
    let archive = out_dir.join("room_general.tar.zst");
    let before = fs::read(&archive).unwrap();
    let out = export(&[], 2);
    assert_stderr_has(&out, "--force");
    assert_eq!(
        fs::read(&archive).unwrap(),
        before,
        "the refused run changed nothing"
    );
    export(&["--force"], 0);
    // Revoke, recentralise and abort issue no receipt: --receipt-out is refused up front (exit
    // 2), and the room is left as it was.
    let receipt = tmp.path().join("r.json");
    for command in ["revoke", "recentralise", "abort"] {
        let out = cli(
            &[
                command,
                "general",
                "--home",
                s(&home),
                "--receipt-out",
                s(&receipt),
            ],
            2,
        );
        assert_stderr_has(&out, "issues no receipt");
        assert!(!receipt.exists());
    }
    assert_eq!(room_entry(&home, "general").unwrap()["state"], "sovereign");
    // A sovereign room has no job to abort: refused, saying so, and left as it was.
    let out = cli(&["abort", "general", "--home", s(&home)], 1);
    assert_stderr_has(&out, "nothing to abort");
    assert_eq!(room_entry(&home, "general").unwrap()["state"], "sovereign");
    // A failing export (no such room) into a new directory leaves no directory behind.
    let fresh = tmp.path().join("fresh");
    let out = cli(
        &[
            "export",
            "nosuchroom",
            "--home",
            s(&home),
            "--out",
            s(&fresh),
        ],
        1,
    );
    assert!(!fresh.exists(), "{}", describe(&out));
}

/// Staging imports in a home's journal, read straight from the database (opening the home would
/// run recovery, which is what is being tested).
fn staging_imports(home: &Path) -> i64 {
    if on_postgres() {
        database_for(home);
        let db = DATABASES.lock().unwrap_or_else(|p| p.into_inner())[home].clone();
        return roomshard_interop_tests::pg::Cluster::shared()
            .query(
                &db,
                "SELECT count(*) FROM roomshard_imports WHERE state = 'staging'",
            )
            .parse()
            .unwrap();
    }
    runtime().block_on(async {
        let pool = global_db(home).await;
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM roomshard_imports WHERE state = 'staging'")
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        n
    })
}

/// Two `roomshard import` processes of one archive into one home at once: without
/// `--allow-duplicate` one lands and the other is refused up front; with it both land under
/// distinct room ids. (An open of the home during a live import is tested in the library's
/// `export_import.rs`, with a store slow enough that the two overlap for sure.)
#[test]
fn concurrent_imports_in_real_processes_are_refused_up_front_or_both_land() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    seed(&a, "origin", 3000, 12, 1_500_000);
    let exports = tmp.path().join("exports");
    cli(
        &["export", "origin", "--home", s(&a), "--out", s(&exports)],
        0,
    );
    let archive = exports.join("room_origin.tar.zst");
    let trusted = a.join("keys/trusted-keys.json");
    let home = tmp.path().join("b");
    seed(&home, "resident", 50, 1, 1000);
    let spawn = |extra: &[&str]| {
        let mut args = vec![
            "import",
            s(&archive),
            "--home",
            s(&home),
            "--trusted-keys",
            s(&trusted),
            "--json",
        ];
        args.extend_from_slice(extra);
        roomshard_on(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // One bundle twice at once: one lands, the other is refused before it writes anything.
    let (first, second) = (spawn(&[]), spawn(&[]));
    let outs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let mut codes: Vec<_> = outs.iter().map(|o| o.status.code()).collect();
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(1)],
        "{}\n{}",
        describe(&outs[0]),
        describe(&outs[1])
    );
    let refused = outs.iter().find(|o| o.status.code() == Some(1)).unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("right now") || why.contains("already imported"),
        "{why}"
    );
    let rooms: Vec<String> = rooms_json(&home)
        .iter()
        .map(|r| r["room"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rooms, ["origin", "resident"], "exactly one copy landed");
    assert_eq!(staging_imports(&home), 0);
    let complete = import_state(&home, "origin");

    // With duplicates allowed, both land, under distinct ids.
    let (first, second) = (spawn(&["--allow-duplicate"]), spawn(&["--allow-duplicate"]));
    let outs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let mut landed = Vec::new();
    for out in &outs {
        assert_eq!(out.status.code(), Some(0), "{}", describe(out));
        let room = stdout_json(out)["room"].as_str().unwrap().to_string();
        let st = import_state(&home, &room);
        assert_eq!(
            (st.rows, st.objects, st.done),
            (complete.rows, complete.objects, 1)
        );
        landed.push(room);
    }
    assert_ne!(landed[0], landed[1], "{landed:?}");
    assert_eq!(rooms_json(&home).len(), 4);
}

/// `--control/--shards/--media/--keys URL` put a home's providers where the URLs say, on every
/// command that opens the home; unknown schemes and malformed URLs are usage errors (exit 2)
/// that never print a password.
/// Extracts `archive` into `dir` with GNU tar and zstd, as the README does.
fn extract(archive: &Path, dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let out = run(Command::new("tar")
        .arg("-I")
        .arg("zstd")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir));
    assert!(out.status.success(), "{}", describe(&out));
}

/// Seeds room `general` (40 messages, 2 objects) into `home` through `cli`, a runner that adds
/// provider URLs.
fn seed_general(cli: &dyn Fn(&[&str], i32) -> Output, home: &Path) {
    cli(
        &[
            "seed",
            "--home",
            s(home),
            "--room",
            "general",
            "--messages",
            "40",
            "--media-objects",
            "2",
        ],
        0,
    );
}

/// SQLite-specific (scripts/test.sh runs it on the embedded default only).
#[test]
fn provider_urls_place_a_home_and_bad_ones_are_refused_without_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let home = root.join("home");
    let urls = [
        format!(
            "--control=sqlite://{}",
            root.join("db/global.sqlite3").display()
        ),
        format!(
            "--shards=sqlite://{}",
            root.join("shards-elsewhere").display()
        ),
        format!("--media=file://{}", root.join("media-elsewhere").display()),
        format!(
            "--keys=local-keys://{}",
            root.join("keys-elsewhere").display()
        ),
    ];
    let with = |args: &[&str], code: i32| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(urls.iter().map(String::as_str));
        cli(&all, code)
    };
    seed_general(&with, &home);
    with(&["decentralise", "general", "--home", s(&home)], 0);
    assert!(root.join("db/global.sqlite3").is_file());
    assert!(root.join("shards-elsewhere/room_general.sqlite3").is_file());
    assert!(root.join("media-elsewhere/rooms/general").is_dir());
    assert!(root.join("keys-elsewhere/rooms/general").is_dir());
    for default in [
        "global.sqlite3",
        "shards/room_general.sqlite3",
        "media/rooms",
        "keys/rooms",
    ] {
        assert!(
            !home.join(default).exists(),
            "{default} made under the home"
        );
    }
    // The same home without the URLs is another (empty) home: it is not found.
    cli(&["rooms", "--home", s(&home)], 2);
    let listed = stdout_json(&with(&["rooms", "--home", s(&home), "--json"], 0));
    assert_eq!(listed["rooms"][0]["state"], "sovereign", "{listed}");
    // The placement records where the store put the shard, not a name the flow made up.
    let shard_url = listed["rooms"][0]["shard_url"].as_str().unwrap_or_default();
    assert_eq!(
        shard_url,
        format!(
            "sqlite://{}",
            root.join("shards-elsewhere/room_general.sqlite3").display()
        ),
        "{listed}"
    );
    with(&["audit", "verify", "--home", s(&home)], 0);

    for (flag, url, expect) in [
        (
            "--shards",
            "mysql://mesh:hunter2@db1/mesh",
            "no provider for scheme `mysql`",
        ),
        ("--control", "mesh:hunter2@db1/mesh", "not a provider URL"),
        ("--media", "file://relative/dir", "a host is not allowed"),
        (
            "--keys",
            "s3://bucket?secret_access_key=hunter2",
            "no provider for scheme `s3`",
        ),
    ] {
        let out = cli(&["rooms", "--home", s(&home), &format!("{flag}={url}")], 2);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(flag) && err.contains(expect),
            "{flag} {url}: {err}"
        );
        assert!(!err.contains("hunter2"), "a secret was printed: {err}");
    }
    // A PostgreSQL server that cannot be reached: a failure naming it, without its password.
    let started = Instant::now();
    let out = cli(
        &[
            "rooms",
            "--home",
            s(&home),
            "--control=postgres://mesh:hunter2@127.0.0.1:1/mesh",
        ],
        1,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("hunter2"), "a secret was printed: {err}");
    eprintln!(
        "unreachable PostgreSQL reported after {:?}",
        started.elapsed()
    );
}

#[test]
fn an_ed25519_home_signs_exports_and_receipts_that_verify_here_and_with_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let home = root.join("home");
    let keys = format!(
        "--keys=local-keys://{}?signing=ed25519",
        root.join("keys").display()
    );
    let with = |args: &[&str], code: i32| {
        let mut all: Vec<&str> = args.to_vec();
        all.push(&keys);
        cli(&all, code)
    };
    seed_general(&with, &home);
    let receipt = root.join("decentralise.json");
    with(
        &[
            "decentralise",
            "general",
            "--home",
            s(&home),
            "--receipt-out",
            s(&receipt),
        ],
        0,
    );
    let out_dir = root.join("out");
    with(
        &[
            "export",
            "general",
            "--home",
            s(&home),
            "--out",
            s(&out_dir),
        ],
        0,
    );
    // The published key set says ed25519, and so does every signature made with it.
    let trusted = home.join("keys/trusted-keys.json");
    let set: serde_json::Value = serde_json::from_slice(&fs::read(&trusted).unwrap()).unwrap();
    assert_eq!(set["keys"][0]["alg"], "ed25519", "{set}");
    let key_id = set["keys"][0]["id"].as_str().unwrap().to_string();
    assert!(key_id.starts_with("ed25519-"), "{key_id}");
    let archive = out_dir.join("room_general.tar.zst");
    let report = stdout_json(&cli(
        &[
            "verify",
            s(&archive),
            "--trusted-keys",
            s(&trusted),
            "--sidecar",
            s(&out_dir.join("room_general.tar.zst.sigstore.json")),
            "--json",
        ],
        0,
    ));
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["signer"]["key_id"], key_id.as_str(), "{report}");
    cli(
        &[
            "receipt",
            "verify",
            s(&receipt),
            "--trusted-keys",
            s(&trusted),
        ],
        0,
    );

    // Stock tools agree: the manifest says ed25519 and `openssl pkeyutl -rawin` checks it.
    let x = root.join("x");
    extract(&archive, &x);
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(x.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["signature"]["algorithm"], "ed25519", "{manifest}");
    fs::write(
        x.join("public.pem"),
        set["keys"][0]["public_key_pem"].as_str().unwrap(),
    )
    .unwrap();
    let out = run(Command::new("bash").current_dir(&x).arg("-c").arg(
        "base64 -d export.signature > sig.bin && openssl pkeyutl -verify -pubin -inkey public.pem \
         -rawin -in manifest.json -sigfile sig.bin",
    ));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Signature Verified Successfully"),
        "{}",
        describe(&out)
    );
    // A key directory holding the other algorithm is refused, not silently switched.
    let out = cli(
        &[
            "rooms",
            "--home",
            s(&home),
            &format!(
                "--keys=local-keys://{}?signing=ecdsa-p256-sha256",
                root.join("keys").display()
            ),
        ],
        1,
    );
    assert_stderr_has(&out, "is ed25519, not ecdsa-p256-sha256");
}

/// SQLite-specific (scripts/test.sh runs it on the embedded default only).
#[test]
fn decentralise_adopts_a_customers_own_database_and_recentralise_leaves_it() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    seed_general(&|args: &[&str], code: i32| cli(args, code), &home);
    let theirs = tmp.path().join("customer/general.sqlite3");
    let adopt = format!("--adopt-shard=sqlite://{}", theirs.display());
    // Their database does not exist: refused, nothing made, and abort takes the room back.
    let out = cli(&["decentralise", "general", "--home", s(&home), &adopt], 1);
    assert_stderr_has(&out, "never created");
    assert!(!theirs.exists(), "the adopted database was created");
    cli(&["abort", "general", "--home", s(&home)], 0);

    fs::create_dir_all(theirs.parent().unwrap()).unwrap();
    fs::write(&theirs, b"").unwrap();
    let plan = cli(
        &[
            "decentralise",
            "general",
            "--home",
            s(&home),
            &adopt,
            "--plan",
        ],
        0,
    );
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.contains("adopt shard sqlite://"), "{plan}");
    assert!(!plan.contains("create shard"), "{plan}");
    cli(&["decentralise", "general", "--home", s(&home), &adopt], 0);
    let entry = room_entry(&home, "general").expect("placement");
    assert_eq!(entry["state"], "sovereign", "{entry}");
    assert_eq!(entry["adopted"]["shard"], true, "{entry}");
    assert_eq!(
        entry["shard_url"],
        format!("sqlite://{}", theirs.display()),
        "{entry}"
    );
    assert!(!home.join("shards/room_general.sqlite3").exists());
    let filled = fs::metadata(&theirs).unwrap().len();
    assert!(filled > 0, "the rows went into the customer's database");

    cli(&["recentralise", "general", "--home", s(&home)], 0);
    assert_eq!(room_entry(&home, "general").unwrap()["state"], "pooled");
    assert!(
        theirs.is_file() && fs::metadata(&theirs).unwrap().len() > 0,
        "recentralise deleted or emptied the customer's database"
    );
    cli(&["audit", "verify", "--home", s(&home)], 0);
}

/// `decentralise --cutover-limit-ms`: a limit no cutover can meet aborts each attempt, the room
/// is writable in the shared store again (state `copying`, rows untouched), and the same command
/// with the default limit finishes the job; `0` is a usage error.
#[test]
fn decentralise_cutover_limit_aborts_and_reopens_writes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    seed(&home, "bounded", 200, 2, 4096);
    let before = parity(&home, Scope::Pooled(room("bounded")));
    let out = cli(
        &[
            "decentralise",
            "bounded",
            "--home",
            s(&home),
            "--cutover-limit-ms",
            "0",
        ],
        2,
    );
    assert_stderr_has(&out, "--cutover-limit-ms must be at least 1");
    let out = cli(
        &[
            "decentralise",
            "bounded",
            "--home",
            s(&home),
            "--cutover-limit-ms",
            "1",
        ],
        1,
    );
    assert_stderr_has(&out, "exceeded its limit of 1 ms 3 times");
    let entry = room_entry(&home, "bounded").expect("room listed");
    assert_eq!(entry["state"], "copying", "{entry}");
    assert_eq!(parity(&home, Scope::Pooled(room("bounded"))), before);
    cli(&["decentralise", "bounded", "--home", s(&home)], 0);
    assert_eq!(
        room_entry(&home, "bounded").expect("listed")["state"],
        "sovereign"
    );
    assert_eq!(shard_parity(&home, "bounded"), before);
}

/// `usage`: rows per table equal to the room's parity counts, bytes of its rows and its media,
/// read from the copy that serves it before and after a decentralise; a sealed room says so.
#[test]
fn usage_reports_rows_bytes_and_media_where_the_room_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    seed(&home, "metered", 300, 4, 200_000);
    let check = |state: &str, parity: &Parity| -> serde_json::Value {
        let out = cli(&["usage", "metered", "--home", s(&home), "--json"], 0);
        let u = stdout_json(&out);
        assert_eq!(u["state"], state, "{u}");
        assert_eq!(u["rows"], total_rows(parity), "{u}");
        for t in &parity.tables {
            assert_eq!(u["tables"][&t.table], t.rows, "table {} in {u}", t.table);
        }
        assert_eq!(u["objects"], 4, "{u}");
        assert_eq!(u["media_bytes"], 200_000, "{u}");
        // At least the bytes of the message bodies themselves.
        let bytes = u["shard_bytes"].as_u64().expect("shard_bytes");
        assert!(bytes > 300 * 20, "{u}");
        u
    };
    check("pooled", &parity(&home, Scope::Pooled(room("metered"))));
    cli(&["decentralise", "metered", "--home", s(&home)], 0);
    let u = check("sovereign", &shard_parity(&home, "metered"));
    let text = cli(&["usage", "metered", "--home", s(&home)], 0);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.contains("room metered (sovereign)"), "{text}");
    assert!(text.contains(&format!("rows   {}", u["rows"])), "{text}");
    assert!(text.contains("4 objects"), "{text}");
    cli(&["revoke", "metered", "--home", s(&home)], 0);
    let sealed = cli(&["usage", "metered", "--home", s(&home)], 1);
    assert_stderr_has(&sealed, "sealed");
}
