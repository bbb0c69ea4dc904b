//! A bundle is an ordinary `.tar.zst`: GNU tar and the zstd CLI list and extract it, and
//! `sha256sum` of every extracted file matches the manifest (docs/bundle-format.md §1–3).
#![allow(clippy::unwrap_used)]

use roomshard_interop_tests::{
    build_fixture, extract_with_gnu_tar, repo_root, require_tool, run_ok, sha256_hex,
};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Lists, extracts and checksums one archive with GNU tools; returns the entry names.
fn check_archive_with_gnu_tools(archive: &Path, work: &Path) -> Vec<String> {
    let tar = require_tool("tar", "apt-get install -y tar (GNU tar)");
    let zstd = require_tool("zstd", "apt-get install -y zstd");
    let sha256sum = require_tool("sha256sum", "apt-get install -y coreutils");
    let version = run_ok(Command::new(&tar).arg("--version"));
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("GNU tar"),
        "`tar` on PATH is not GNU tar: {}",
        String::from_utf8_lossy(&version.stdout)
    );

    // zstd's own integrity test of every frame.
    run_ok(Command::new(&zstd).arg("-t").arg("-q").arg(archive));

    // Listing, two ways: tar driving zstd, and zstd piped into tar.
    let verbose = run_ok(Command::new(&tar).arg("--zstd").arg("-tvf").arg(archive));
    let verbose = String::from_utf8(verbose.stdout).expect("tar -tv output is UTF-8");
    for line in verbose.lines() {
        assert!(
            line.starts_with('-'),
            "every entry must be a regular file, tar -tv shows: {line:?}\n{verbose}"
        );
    }
    let listing = run_ok(Command::new(&tar).arg("--zstd").arg("-tf").arg(archive));
    let names: Vec<String> = String::from_utf8(listing.stdout)
        .expect("tar -t output is UTF-8")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), verbose.lines().count());
    let mut zstd_cat = Command::new(&zstd)
        .arg("-dc")
        .arg(archive)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning zstd -dc");
    let piped = Command::new(&tar)
        .arg("-tf")
        .arg("-")
        .stdin(zstd_cat.stdout.take().unwrap())
        .output()
        .expect("running tar -tf -");
    assert!(zstd_cat.wait().unwrap().success(), "zstd -dc failed");
    assert!(
        piped.status.success(),
        "tar -tf - failed: {}",
        String::from_utf8_lossy(&piped.stderr)
    );
    let piped_names: Vec<String> = String::from_utf8(piped.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        piped_names, names,
        "zstd -dc | tar -t lists the same entries as tar --zstd -t"
    );

    // Spec order: db.sql, media/… ascending by bytes, manifest.json, export.signature.
    assert!(names.len() >= 3, "too few entries: {names:?}");
    assert_eq!(names[0], "db.sql", "db.sql first: {names:?}");
    let n = names.len();
    assert_eq!(names[n - 2], "manifest.json", "{names:?}");
    assert_eq!(names[n - 1], "export.signature", "{names:?}");
    let media = &names[1..n - 2];
    assert!(media.iter().all(|m| m.starts_with("media/")), "{names:?}");
    let mut sorted = media.to_vec();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(media, &sorted[..], "media entries in ascending byte order");

    // Extract and checksum with sha256sum.
    let dest = extract_with_gnu_tar(archive, &work.join("extracted"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dest.join("manifest.json")).unwrap())
            .expect("manifest JSON");
    let files = manifest["files"].as_array().expect("manifest.files");
    let listed: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        listed,
        names[..n - 2].to_vec(),
        "manifest.files lists exactly the content entries, in order"
    );

    let mut cmd = Command::new(&sha256sum);
    cmd.current_dir(&dest).arg("--");
    for p in &listed {
        cmd.arg(p);
    }
    let sums = String::from_utf8(run_ok(&mut cmd).stdout).unwrap();
    let sums: Vec<(&str, &str)> = sums
        .lines()
        .map(|l| l.split_once("  ").expect("sha256sum line: HASH  PATH"))
        .collect();
    assert_eq!(sums.len(), files.len());
    for (f, (hash, path)) in files.iter().zip(&sums) {
        assert_eq!(f["path"].as_str().unwrap(), *path);
        assert_eq!(f["sha256"].as_str().unwrap(), *hash, "sha256sum of {path}");
        let size = fs::metadata(dest.join(path)).unwrap().len();
        assert_eq!(f["size"].as_u64().unwrap(), size, "size of {path}");
    }

    // And sha256sum -c on a checksum file built from the manifest.
    let check: String = files
        .iter()
        .map(|f| {
            format!(
                "{}  {}\n",
                f["sha256"].as_str().unwrap(),
                f["path"].as_str().unwrap()
            )
        })
        .collect();
    let check_file = work.join("SHA256SUMS");
    fs::write(&check_file, check).unwrap();
    run_ok(
        Command::new(&sha256sum)
            .current_dir(&dest)
            .arg("--strict")
            .arg("-c")
            .arg(&check_file),
    );

    // Totals add up with what tar extracted.
    let bytes: u64 = listed
        .iter()
        .map(|p| fs::metadata(dest.join(p)).unwrap().len())
        .sum();
    assert_eq!(manifest["totals"]["bytes"].as_u64(), Some(bytes));
    assert_eq!(
        manifest["totals"]["files"].as_u64(),
        Some(listed.len() as u64)
    );
    names
}

#[test]
fn gnu_tar_lists_and_extracts_and_sha256sum_matches_manifest() {
    let started = Instant::now();
    let fx = build_fixture();
    let names = check_archive_with_gnu_tools(&fx.archive, fx.dir.path());
    let mut expected = vec!["db.sql".to_string()];
    expected.extend(fx.media.iter().map(|(k, _)| format!("media/{k}")));
    expected.push("manifest.json".into());
    expected.push("export.signature".into());
    assert_eq!(names, expected);

    // Extracted media are byte-identical to what was written, and the manifest is the signed one.
    let dest = fx.path("extracted");
    for (key, data) in &fx.media {
        assert_eq!(
            &fs::read(dest.join("media").join(key)).unwrap(),
            data,
            "media/{key}"
        );
    }
    assert_eq!(
        fs::read(dest.join("manifest.json")).unwrap(),
        fx.manifest_bytes
    );

    // sha256sum of the archive itself is what the sidecar attests.
    let out = run_ok(Command::new(require_tool("sha256sum", "coreutils")).arg(&fx.archive));
    let hash = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        hash.split_whitespace().next(),
        Some(fx.archive_sha256.as_str())
    );
    assert_eq!(
        sha256_hex(&fs::read(&fx.archive).unwrap()),
        fx.archive_sha256
    );
    eprintln!("gnu_tar (fixture): {:?}", started.elapsed());
}

#[test]
fn gnu_tar_reads_the_committed_valid_vectors() {
    let started = Instant::now();
    let dir = repo_root().join("conformance").join("vectors");
    let mut valid = Vec::new();
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(".expect") {
                let text = fs::read_to_string(&p).unwrap();
                if text.starts_with("expect: valid") {
                    valid.push(dir.join(format!("{stem}.tar.zst")));
                }
            }
        }
    }
    valid.sort();
    assert!(
        valid.len() >= 3,
        "expected the committed valid vectors in {}, found {valid:?}",
        dir.display()
    );
    assert!(
        valid.iter().any(|p| p.ends_with("valid_basic.tar.zst")),
        "valid_basic.tar.zst is among the valid vectors: {valid:?}"
    );
    for archive in &valid {
        let work = tempfile::tempdir().unwrap();
        let names = check_archive_with_gnu_tools(archive, work.path());
        eprintln!("{}: {} entries OK", archive.display(), names.len());
    }
    eprintln!("gnu_tar (vectors): {:?}", started.elapsed());
}
