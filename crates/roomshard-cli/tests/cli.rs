//! End-to-end tests of the `roomshard` binary: key generation, `verify` with its exit codes
//! (0 valid, 1 invalid, 2 usage), `--json`, `--sidecar`, and every golden vector in
//! `conformance/vectors/`.
//!
//! Bundles are written in-process with `roomshard-bundle` (signed with the key the CLI generated),
//! then checked by the built binary. The tampered archive is made with the `zstd` CLI (required:
//! the test fails, never skips, without it).
#![allow(clippy::unwrap_used)]

use roomshard_bundle::{
    BundleMeta, BundleWriter, CopyValue, DbSqlWriter, HashingWriter, LocalP256Signer, Signer,
    WriterOptions,
};
use roomshard_verify::TrustedKeys;
use roomshard_verify::format::{ColumnDescriptor, KeySet, LogicalType, RoomInfo, TableDescriptor};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const ROOM: &str = "cli-room";
const CREATED_AT: &str = "2026-06-01T12:00:00Z";
const MARKER: &[u8] = b"tamper-me: the quick brown fox jumps over the lazy dog";

fn roomshard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_roomshard"))
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard base64 decoding (PEM bodies), so the key-id check does not trust the code under test.
fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .expect("base64 character") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn pem_body(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64_decode(&body)
}

fn col(name: &str, t: LogicalType, nullable: bool) -> ColumnDescriptor {
    ColumnDescriptor::new(name, t, nullable)
}

/// A small bundle signed by `signer`, written to `dir/name`; returns (archive path, sidecar path).
/// `variant` changes one media object, so two variants are different archives.
fn write_bundle(
    dir: &Path,
    name: &str,
    signer: &LocalP256Signer,
    variant: u8,
) -> (PathBuf, PathBuf) {
    let tables = vec![TableDescriptor {
        name: "messages".into(),
        columns: vec![
            col("id", LogicalType::Int8, false),
            col("room_id", LogicalType::Text, false),
            col("body", LogicalType::Text, true),
            col("sent_at", LogicalType::Timestamptz, false),
        ],
        primary_key: vec!["id".into()],
        room_key_column: "room_id".into(),
        id_columns: vec!["id".into()],
        media_columns: vec![],
    }];
    let mut sql = DbSqlWriter::new(Vec::new(), ROOM, &tables).unwrap();
    sql.begin_table("messages").unwrap();
    for i in 1..=3i64 {
        sql.write_row(&[
            CopyValue::Int8(i),
            CopyValue::Text(ROOM.into()),
            if i == 2 {
                CopyValue::Null
            } else {
                CopyValue::Text(format!("hello\t{i}\n ü"))
            },
            CopyValue::Timestamptz("2026-05-01 09:00:00+00".into()),
        ])
        .unwrap();
    }
    let (db_sql, counts) = sql.finish().unwrap();
    let archive = dir.join(name);
    let meta = BundleMeta {
        room: RoomInfo {
            id: ROOM.into(),
            name: Some("CLI room".into()),
        },
        source_instance: "cli.example.org".into(),
        schema_version: "cli-1".into(),
        created_at: CREATED_AT.into(),
        tables,
        exporter: None,
    };
    let out = HashingWriter::new(fs::File::create(&archive).unwrap());
    let mut w = BundleWriter::new(out, meta, WriterOptions::default()).unwrap();
    w.add_db_sql(db_sql.len() as u64, &db_sql[..]).unwrap();
    let mut note = MARKER.to_vec();
    note.push(variant);
    w.add_media("att/a/note.txt", note.len() as u64, &note[..])
        .unwrap();
    let blob: Vec<u8> = (0..5000u32)
        .map(|i| (i * 7 + u32::from(variant)) as u8)
        .collect();
    w.add_media("att/b.bin", blob.len() as u64, &blob[..])
        .unwrap();
    let done = w.finish(&counts, signer).unwrap();
    let (file, digest) = done.out.into_parts();
    file.sync_all().unwrap();
    let sidecar = dir.join(format!("{name}.sigstore.json"));
    fs::write(
        &sidecar,
        roomshard_bundle::sidecar(&digest, &done.manifest, &done.manifest_sha256, signer).unwrap(),
    )
    .unwrap();
    (archive, sidecar)
}

/// `roomshard keys generate --out DIR`; returns the signer loaded from the generated private key.
fn generate_keys(dir: &Path) -> LocalP256Signer {
    let out = run(roomshard().args(["keys", "generate", "--out"]).arg(dir));
    assert_eq!(
        out.status.code(),
        Some(0),
        "keys generate:\n{}",
        describe(&out)
    );
    let pem = fs::read_to_string(dir.join("private.pem")).unwrap();
    LocalP256Signer::from_pkcs8_pem(&pem, None).expect("private.pem is a PKCS#8 P-256 key")
}

fn verify_json(archive: &Path, keys: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let out = run(roomshard()
        .arg("verify")
        .arg(archive)
        .arg("--trusted-keys")
        .arg(keys)
        .arg("--json")
        .args(extra));
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{}", describe(&out)));
    (out, report)
}

#[test]
fn keys_generate_writes_private_public_and_trusted_set_and_refuses_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let out = run(roomshard().args(["keys", "generate", "--out"]).arg(&dir));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let set = dir.join("trusted-keys.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "private.pem mode is {mode:o}");
    }
    let private_pem = fs::read_to_string(&private).unwrap();
    assert!(
        private_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{private_pem}"
    );
    let public_pem = fs::read_to_string(&public).unwrap();
    assert!(
        public_pem.starts_with("-----BEGIN PUBLIC KEY-----"),
        "{public_pem}"
    );

    // The key id is p256-<first 16 hex digits of SHA-256(SPKI DER)>, computed independently.
    let want_id = format!(
        "p256-{}",
        &hex(&Sha256::digest(pem_body(&public_pem)))[..16]
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&want_id),
        "stdout names the key id {want_id}:\n{stdout}"
    );
    let keyset_text = fs::read(&set).unwrap();
    let keyset: KeySet =
        serde_json::from_slice(&keyset_text).expect("trusted-keys.json is a key set");
    assert_eq!(keyset.keys.len(), 1);
    assert_eq!(keyset.keys[0].id, want_id);
    assert_eq!(keyset.keys[0].public_key_pem.trim(), public_pem.trim());
    assert!(!keyset.keys[0].revoked);
    TrustedKeys::from_json(&keyset_text).expect("the verifier accepts the generated key set");
    let signer = LocalP256Signer::from_pkcs8_pem(&private_pem, None).unwrap();
    assert_eq!(
        signer.key_id(),
        want_id,
        "private.pem and public.pem are one key pair"
    );

    // A second run refuses to overwrite (exit 2) and leaves the files alone.
    let again = run(roomshard().args(["keys", "generate", "--out"]).arg(&dir));
    assert_eq!(
        again.status.code(),
        Some(2),
        "overwrite must be refused:\n{}",
        describe(&again)
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists"),
        "{}",
        describe(&again)
    );
    assert_eq!(fs::read_to_string(&private).unwrap(), private_pem);
    assert_eq!(fs::read_to_string(&public).unwrap(), public_pem);

    // Ed25519 and validity bounds.
    let ed = tmp.path().join("ed");
    let out = run(roomshard()
        .args([
            "keys",
            "generate",
            "--alg",
            "ed25519",
            "--not-before",
            "2026-01-01T00:00:00Z",
            "--out",
        ])
        .arg(&ed));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let set: KeySet =
        serde_json::from_slice(&fs::read(ed.join("trusted-keys.json")).unwrap()).unwrap();
    assert!(
        set.keys[0].id.starts_with("ed25519-"),
        "{:?}",
        set.keys[0].id
    );
    assert_eq!(
        set.keys[0].not_before.as_deref(),
        Some("2026-01-01T00:00:00Z")
    );

    // A malformed timestamp is a usage error.
    let out = run(roomshard()
        .args(["keys", "generate", "--not-after", "tomorrow", "--out"])
        .arg(tmp.path().join("bad")));
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn verify_end_to_end_exit_codes_json_and_sidecar() {
    let tmp = tempfile::tempdir().unwrap();
    let keys_dir = tmp.path().join("keys");
    let signer = generate_keys(&keys_dir);
    let keys = keys_dir.join("trusted-keys.json");
    let (archive, sidecar) = write_bundle(tmp.path(), "room_cli-room.tar.zst", &signer, 0);
    let (other_archive, other_sidecar) = write_bundle(tmp.path(), "other.tar.zst", &signer, 1);
    assert_ne!(
        fs::read(&archive).unwrap(),
        fs::read(&other_archive).unwrap()
    );

    // Valid: exit 0, human summary with VALID and the signer.
    let out = run(roomshard()
        .arg("verify")
        .arg(&archive)
        .arg("--trusted-keys")
        .arg(&keys));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("VALID"), "{}", describe(&out));
    assert!(stdout.contains(signer.key_id()), "{}", describe(&out));

    // --json: a report with valid=true and the signer's key id.
    let (out, report) = verify_json(&archive, &keys, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(report["valid"], true, "{report:#}");
    assert!(report["error"].is_null(), "{report:#}");
    assert_eq!(report["signer"]["key_id"], signer.key_id(), "{report:#}");
    assert_eq!(report["signer"]["algorithm"], "ecdsa-p256-sha256");
    assert_eq!(report["room"]["id"], ROOM);
    assert_eq!(report["tables"][0]["found_rows"], 3, "{report:#}");
    assert_eq!(
        report["files"].as_array().map(Vec::len),
        Some(3),
        "{report:#}"
    );

    // The archive from standard input (`-`).
    let mut child = roomshard()
        .args(["verify", "-", "--trusted-keys"])
        .arg(&keys)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&fs::read(&archive).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stdin: {}", describe(&out));

    // Tampered content (one media byte changed, recompressed by the zstd CLI): exit 1 and the
    // reason on stderr.
    let tampered = tamper_media(&archive, &tmp.path().join("tampered.tar.zst"));
    let out = run(roomshard()
        .arg("verify")
        .arg(&tampered)
        .arg("--trusted-keys")
        .arg(&keys));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("INVALID") && stderr.contains("digest_mismatch"),
        "{}",
        describe(&out)
    );
    let (out, report) = verify_json(&tampered, &keys, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report["valid"], false);
    assert_eq!(report["error"]["reason"], "digest_mismatch", "{report:#}");

    // Truncated archive: exit 1.
    let bytes = fs::read(&archive).unwrap();
    let truncated = tmp.path().join("truncated.tar.zst");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let (out, report) = verify_json(&truncated, &keys, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(report["valid"], false, "{report:#}");

    // A key set without the signer: exit 1, unknown_key.
    let stranger = tmp.path().join("stranger");
    generate_keys(&stranger);
    let (out, report) = verify_json(&archive, &stranger.join("trusted-keys.json"), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(report["error"]["reason"], "unknown_key", "{report:#}");

    // Sidecars: the right one passes, another archive's fails.
    let out = run(roomshard()
        .arg("verify")
        .arg(&archive)
        .arg("--trusted-keys")
        .arg(&keys)
        .arg("--sidecar")
        .arg(&sidecar));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sidecar: ok"),
        "{}",
        describe(&out)
    );
    let (out, report) = verify_json(
        &archive,
        &keys,
        &["--sidecar", other_sidecar.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        report["error"]["reason"], "sidecar_digest_mismatch",
        "{report:#}"
    );
    assert_eq!(report["sidecar"]["valid"], false, "{report:#}");
    assert_eq!(
        report["sidecar"]["error"]["reason"], "sidecar_digest_mismatch",
        "{report:#}"
    );
    // --json reports the sidecar's own result when it passes, too.
    let (out, report) = verify_json(&archive, &keys, &["--sidecar", sidecar.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(report["sidecar"]["valid"], true, "{report:#}");
    assert_eq!(report["sidecar"]["key_id"], signer.key_id(), "{report:#}");
    assert!(
        report["sidecar"]["subject_name"]
            .as_str()
            .unwrap()
            .ends_with(".tar.zst"),
        "{report:#}"
    );
    let out = run(roomshard()
        .arg("verify")
        .arg(&other_archive)
        .arg("--trusted-keys")
        .arg(&keys)
        .arg("--sidecar")
        .arg(&sidecar));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sidecar_digest_mismatch"),
        "{}",
        describe(&out)
    );

    // Usage errors: exit 2.
    let missing = tmp.path().join("no-such-file.tar.zst");
    let out = run(roomshard()
        .arg("verify")
        .arg(&missing)
        .arg("--trusted-keys")
        .arg(&keys));
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing archive: {}",
        describe(&out)
    );
    let out = run(roomshard().arg("verify").arg(&archive));
    assert_eq!(
        out.status.code(),
        Some(2),
        "no --trusted-keys: {}",
        describe(&out)
    );
    let out = run(roomshard().args(["verify", "--frobnicate"]).arg(&archive));
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown flag: {}",
        describe(&out)
    );
    let out = run(roomshard().arg("frobnicate"));
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown command: {}",
        describe(&out)
    );
    let out = run(roomshard()
        .arg("verify")
        .arg(&archive)
        .arg("--trusted-keys")
        .arg(&missing));
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing key set: {}",
        describe(&out)
    );
    let bad_keys = tmp.path().join("bad-keys.json");
    fs::write(&bad_keys, b"{\"keys\": 42}").unwrap();
    let out = run(roomshard()
        .arg("verify")
        .arg(&archive)
        .arg("--trusted-keys")
        .arg(&bad_keys));
    assert_eq!(
        out.status.code(),
        Some(2),
        "malformed key set: {}",
        describe(&out)
    );
    let out = run(roomshard()
        .arg("verify")
        .arg(&archive)
        .arg("--trusted-keys")
        .arg(&keys)
        .arg("--sidecar")
        .arg(&missing));
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing sidecar: {}",
        describe(&out)
    );
}

/// Decompresses with the zstd CLI, flips one byte inside a media entry's data, recompresses.
fn tamper_media(archive: &Path, dest: &Path) -> PathBuf {
    let zstd = which("zstd").unwrap_or_else(|| {
        panic!("REQUIRED TOOL MISSING: `zstd` CLI (apt-get install -y zstd); this test never skips")
    });
    let out = run(Command::new(&zstd).arg("-dc").arg(archive));
    assert!(out.status.success(), "zstd -dc: {}", describe(&out));
    let mut tar = out.stdout;
    let at = tar
        .windows(MARKER.len())
        .position(|w| w == MARKER)
        .expect("the marker media object is in the tar stream");
    tar[at] ^= 0x20;
    let mut child = Command::new(&zstd)
        .args(["-q", "-c", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&tar));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "zstd -c: {}", describe(&out));
    fs::write(dest, out.stdout).unwrap();
    dest.to_path_buf()
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[test]
fn every_golden_vector_gives_its_verdict_through_the_cli() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/vectors");
    let keys = dir.join("trusted-keys.json");
    let mut stems: Vec<String> = fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".tar.zst").map(str::to_string)
            })
            .collect()
        })
        .unwrap_or_default();
    stems.sort();
    assert!(
        stems.len() >= 30,
        "expected the committed golden vectors in {}, found {}",
        dir.display(),
        stems.len()
    );
    assert!(keys.is_file(), "{} is missing", keys.display());
    let (mut checked, mut wrong) = (0, Vec::new());
    for stem in &stems {
        let expect = fs::read_to_string(dir.join(format!("{stem}.expect")))
            .unwrap_or_else(|e| panic!("{stem}.expect: {e}"));
        // Vectors that need other limits get them through `--limit NAME=VALUE`.
        let limits: Vec<String> = expect
            .lines()
            .filter_map(|l| l.strip_prefix("limits: "))
            .flat_map(|l| l.split_whitespace())
            .flat_map(|pair| ["--limit".to_string(), pair.to_string()])
            .collect();
        let limits: Vec<&str> = limits.iter().map(String::as_str).collect();
        let verdict = expect
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("expect: "))
            .unwrap_or_else(|| panic!("{stem}.expect has no `expect:` line"));
        let (out, report) = verify_json(&dir.join(format!("{stem}.tar.zst")), &keys, &limits);
        let code = out.status.code();
        let reason = report["error"]["reason"].as_str().map(str::to_string);
        match verdict.strip_prefix("fail_") {
            None => {
                if code != Some(0) || report["valid"] != true {
                    wrong.push(format!(
                        "{stem}: expected valid, got exit {code:?} reason {reason:?}"
                    ));
                }
            }
            Some(want) => {
                if code != Some(1) || reason.as_deref() != Some(want) || report["valid"] != false {
                    wrong.push(format!(
                        "{stem}: expected exit 1 {want}, got exit {code:?} reason {reason:?}"
                    ));
                }
                let stderr = String::from_utf8_lossy(&out.stderr);
                if !stderr.contains(want) {
                    wrong.push(format!("{stem}: stderr does not name {want}: {stderr}"));
                }
            }
        }
        checked += 1;
    }
    assert!(
        wrong.is_empty(),
        "vectors with the wrong CLI verdict:\n{}",
        wrong.join("\n")
    );
    assert_eq!(checked, stems.len());
}

#[test]
fn verify_limit_flag_refuses_unknown_names_and_bad_values() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/vectors");
    let keys = dir.join("trusted-keys.json");
    let archive = dir.join("valid_basic.tar.zst");
    for bad in [
        "max_entrys=3",
        "max_entries",
        "max_entries=-1",
        "max_window_log=99",
    ] {
        let out = run(roomshard()
            .arg("verify")
            .arg(&archive)
            .arg("--trusted-keys")
            .arg(&keys)
            .args(["--limit", bad]));
        assert_eq!(
            out.status.code(),
            Some(2),
            "--limit {bad}: {}",
            describe(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--limit"),
            "{bad}"
        );
    }
}

#[test]
fn verify_key_validity_judges_the_key_window_at_the_chosen_time_and_a_directory_is_usage() {
    // valid_basic was created 2026-06-01 by a key valid 2026-01-01..2027-01-01.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/vectors");
    let keys = dir.join("trusted-keys.json");
    let archive = dir.join("valid_basic.tar.zst");
    let verdict = |extra: &[&str]| {
        let (out, report) = verify_json(&archive, &keys, extra);
        (out.status.code(), report["error"]["reason"].clone())
    };
    assert_eq!(verdict(&[]), (Some(0), serde_json::Value::Null));
    assert_eq!(
        verdict(&["--key-validity", "signed"]),
        (Some(0), serde_json::Value::Null)
    );
    assert_eq!(
        verdict(&["--key-validity", "2026-12-31T23:59:59Z"]),
        (Some(0), serde_json::Value::Null)
    );
    // After the key retired: a backdated signature no longer counts.
    assert_eq!(
        verdict(&["--key-validity", "2027-01-01T00:00:01Z"]),
        (Some(1), serde_json::json!("key_expired"))
    );
    assert_eq!(
        verdict(&["--key-validity", "2025-12-31T00:00:00Z"]),
        (Some(1), serde_json::json!("key_not_yet_valid"))
    );
    // A directory is a usage error, not an invalid archive.
    let out = run(roomshard()
        .arg("verify")
        .arg(&dir)
        .arg("--trusted-keys")
        .arg(&keys));
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is a directory"),
        "{}",
        describe(&out)
    );
    // `now` is accepted (its verdict depends on today's date, so only the exit code's range).
    let now = run(roomshard()
        .arg("verify")
        .arg(&archive)
        .arg("--trusted-keys")
        .arg(&keys)
        .args(["--key-validity", "now"]));
    assert!(
        matches!(now.status.code(), Some(0 | 1)),
        "{}",
        describe(&now)
    );
    for bad in ["yesterday", "2026-02-31T00:00:00Z"] {
        let out = run(roomshard()
            .arg("verify")
            .arg(&archive)
            .arg("--trusted-keys")
            .arg(&keys)
            .args(["--key-validity", bad]));
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--key-validity"),
            "{bad}: {}",
            describe(&out)
        );
    }
}

#[test]
fn keys_generate_refuses_an_empty_window_and_reports_json() {
    let tmp = tempfile::tempdir().unwrap();
    for (nb, na) in [
        ("2026-06-01T00:00:00Z", "2026-06-01T00:00:00Z"),
        ("2026-06-01T00:00:00Z", "2026-01-01T00:00:00Z"),
    ] {
        let dir = tmp.path().join(format!("bad-{na}"));
        let out = run(roomshard()
            .args(["keys", "generate", "--out"])
            .arg(&dir)
            .args(["--not-before", nb, "--not-after", na]));
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--not-after"),
            "{}",
            describe(&out)
        );
        assert!(!dir.join("private.pem").exists(), "nothing written");
    }
    let dir = tmp.path().join("good");
    let out = run(roomshard()
        .args(["keys", "generate", "--json", "--out"])
        .arg(&dir)
        .args([
            "--not-before",
            "2026-01-01T00:00:00Z",
            "--not-after",
            "2027-01-01T00:00:00Z",
        ]));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["algorithm"], "ecdsa-p256-sha256", "{report}");
    assert_eq!(report["not_after"], "2027-01-01T00:00:00Z");
    assert!(report["key_id"].as_str().unwrap().starts_with("p256-"));
    for file in ["private_key", "public_key", "trusted_keys"] {
        assert!(
            Path::new(report[file].as_str().unwrap()).is_file(),
            "{file}: {report}"
        );
    }
}

#[test]
fn inspect_lists_an_archive_without_keys_and_says_it_is_unverified() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/vectors");
    let out = run(roomshard()
        .arg("inspect")
        .arg(dir.join("valid_basic.tar.zst")));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("UNVERIFIED "), "{text}");
    for want in [
        "room: general",
        "vectors-p256-main",
        "table messages: 4 rows",
        "media/att/0001-diagram.png 3000 bytes",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    let out = run(roomshard()
        .args(["inspect", "--json"])
        .arg(dir.join("valid_basic.tar.zst")));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"], false, "{report}");
    assert_eq!(report["valid"], false, "no key vouched for it: {report}");
    // A structural fault before the signature is still reported (exit 1).
    let out = run(roomshard()
        .arg("inspect")
        .arg(dir.join("path_traversal.tar.zst")));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("path_traversal"),
        "{}",
        describe(&out)
    );
}
