//! `roomshard verify`: check a room bundle against a trusted key set.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use roomshard_verify::{Report, TrustedKeys, VerifyOptions};

use super::CliError;

/// Archives at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_THRESHOLD: u64 = 16 << 20;

/// `verify` arguments.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The archive to verify (`-` reads standard input).
    archive: PathBuf,
    /// Trusted key set JSON ({"keys":[...]}).
    #[arg(long)]
    trusted_keys: PathBuf,
    /// Sigstore bundle sidecar (room_<id>.tar.zst.sigstore.json) to check as well.
    #[arg(long)]
    sidecar: Option<PathBuf>,
    /// Print the full report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Override a safety limit, e.g. `--limit max_total_bytes=200000000000` (repeatable). Names:
    /// max_total_bytes, max_ratio, ratio_grace_bytes, max_entries, max_manifest_bytes,
    /// max_sql_skeleton_bytes, max_window_log.
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    limits: Vec<String>,
    /// When to judge the signing key's not_before/not_after: `signed` (default: at the bundle's
    /// own created_at, so exports outlive their key's retirement), `now` (the current time, so
    /// a retired key cannot vouch for a backdated bundle), or a YYYY-MM-DDTHH:MM:SSZ time.
    #[arg(long, value_name = "signed|now|TIME", default_value = "signed")]
    key_validity: String,
}

/// Runs `verify`.
pub fn run(args: &VerifyArgs) -> Result<ExitCode, CliError> {
    let keyset = fs::read(&args.trusted_keys)
        .map_err(|e| CliError::Usage(format!("reading {}: {e}", args.trusted_keys.display())))?;
    let keys = TrustedKeys::from_json(&keyset)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.trusted_keys.display())))?;
    let keys = match args.key_validity.as_str() {
        "signed" => Ok(keys),
        "now" => keys.judged_at(&roomshard::now_rfc3339()),
        time => keys.judged_at(time),
    }
    .map_err(|e| {
        CliError::Usage(format!(
            "--key-validity {:?}: expected signed, now or YYYY-MM-DDTHH:MM:SSZ ({e})",
            args.key_validity
        ))
    })?;
    let sidecar = match &args.sidecar {
        Some(p) => Some(
            fs::read(p).map_err(|e| CliError::Usage(format!("reading {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let mut options = VerifyOptions {
        hash_archive: sidecar.is_some(),
        ..VerifyOptions::default()
    };
    for spec in &args.limits {
        let (name, value) = spec
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--limit {spec:?}: expected NAME=VALUE")))?;
        let value: u64 = value.parse().map_err(|_| {
            CliError::Usage(format!("--limit {spec:?}: VALUE must be a whole number"))
        })?;
        options
            .limits
            .set(name, value)
            .map_err(|e| CliError::Usage(format!("--limit: {e}")))?;
    }
    let (input, len): (Box<dyn Read>, Option<u64>) = if args.archive.as_os_str() == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let f = open_archive(&args.archive)?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let progress = progress_bar(len);
    let input: Box<dyn Read> = match &progress {
        Some(pb) => Box::new(pb.wrap_read(input)),
        None => input,
    };
    let report = roomshard_verify::verify_reader(
        io::BufReader::with_capacity(64 << 10, input),
        keys.clone(),
        options,
    );
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let mut report = report;
    let mut sidecar_line = None;
    // The sidecar's own verdict for --json: checked only when the archive is valid (it binds
    // to the verified manifest); a bad sidecar also fails the whole verification.
    let mut sidecar_json = None;
    if let (Some(bytes), true) = (&sidecar, report.valid) {
        match roomshard_verify::verify_sidecar(bytes, &report, &keys) {
            Ok(info) => {
                sidecar_line = Some(format!(
                    "sidecar: ok, signed by {} for {}",
                    info.key_id, info.subject_name
                ));
                sidecar_json = Some(serde_json::json!({
                    "valid": true,
                    "key_id": info.key_id,
                    "subject_name": info.subject_name,
                }));
            }
            Err(e) => {
                sidecar_json = Some(serde_json::json!({
                    "valid": false,
                    "error": { "reason": e.reason.as_str(), "detail": e.detail },
                }));
                report.fail(&e);
            }
        }
    }
    if args.json {
        let mut value =
            serde_json::to_value(&report).map_err(|e| CliError::Usage(e.to_string()))?;
        if let (serde_json::Value::Object(m), Some(s)) = (&mut value, sidecar_json) {
            m.insert("sidecar".to_string(), s);
        }
        outln!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else if report.valid {
        print_summary(&args.archive, &report, sidecar_line.as_deref());
    }
    if report.valid {
        Ok(ExitCode::SUCCESS)
    } else {
        if let Some(e) = &report.error {
            eprintln!(
                "INVALID {}: {}: {}",
                args.archive.display(),
                e.reason,
                e.detail
            );
        }
        Ok(ExitCode::from(1))
    }
}

/// `inspect` arguments.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The archive to inspect.
    archive: PathBuf,
    /// Print the report as JSON on stdout (with `"verified": false`).
    #[arg(long)]
    json: bool,
}

/// Runs `inspect`: the verifier's own parser over the archive with an empty key set. The
/// structure (zstd, tar, paths, entry order, the manifest) is checked as it streams; the
/// signature is not (no key is trusted), and so the files are not compared with the manifest
/// either (the verifier stops at the first broken rule, and the signer comes first). The output
/// says so plainly. Exit 0 when only the signer is unknown, 1 when the archive breaks a rule
/// before that (printed too).
pub fn inspect(args: &InspectArgs) -> Result<ExitCode, CliError> {
    let f = open_archive(&args.archive)?;
    let nobody =
        TrustedKeys::from_json(br#"{"keys":[]}"#).map_err(|e| CliError::Usage(e.to_string()))?;
    let report = roomshard_verify::verify_reader(
        io::BufReader::with_capacity(64 << 10, f),
        nobody,
        VerifyOptions::default(),
    );
    // With no trusted key the verdict is at best `unknown_key`; anything else is a real fault.
    let fault = report
        .error
        .as_ref()
        .filter(|e| e.reason != roomshard_verify::Reason::UnknownKey.as_str());
    if args.json {
        let mut value =
            serde_json::to_value(&report).map_err(|e| CliError::Usage(e.to_string()))?;
        if let serde_json::Value::Object(m) = &mut value {
            m.insert("verified".to_string(), serde_json::Value::Bool(false));
        }
        outln!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        outln!(
            "UNVERIFIED {}: structure read, but neither the signer nor the files' digests were checked (use `roomshard verify --trusted-keys`)",
            args.archive.display()
        );
        print_room_line(&report);
        if let Some(e) = &report.error
            && e.reason == roomshard_verify::Reason::UnknownKey.as_str()
        {
            outln!("  signed with: {}", e.detail);
        }
        if let Some(m) = &report.manifest_sha256 {
            outln!("  manifest: sha256 {m}");
        }
        for t in &report.tables {
            outln!(
                "  table {}: {} rows",
                t.name,
                t.expected_rows.or(t.found_rows).unwrap_or(0)
            );
        }
        for file in &report.files {
            outln!("  {} {} bytes", file.path, file.size);
        }
    }
    match fault {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => {
            eprintln!(
                "INVALID {}: {}: {}",
                args.archive.display(),
                e.reason,
                e.detail
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn progress_bar(len: Option<u64>) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    let len = len?;
    if len < PROGRESS_THRESHOLD || !io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "verifying [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .ok()?
        .progress_chars("=> "),
    );
    Some(pb)
}

fn print_summary(archive: &Path, report: &Report, sidecar: Option<&str>) {
    outln!("VALID {}", archive.display());
    print_room_line(report);
    if let Some(s) = &report.signer {
        outln!("  signed by: {} ({})", s.key_id, s.algorithm.as_str());
    }
    for t in &report.tables {
        outln!("  table {}: {} rows", t.name, t.found_rows.unwrap_or(0));
    }
    let bytes: u64 = report.files.iter().map(|f| f.size).sum();
    outln!(
        "  files: {} ({bytes} bytes), every size and SHA-256 matches the manifest",
        report.files.len()
    );
    if let Some(line) = sidecar {
        outln!("  {line}");
    }
}

/// Opens the archive to check; a directory is a usage error, not an invalid archive.
fn open_archive(path: &Path) -> Result<fs::File, CliError> {
    let f = fs::File::open(path)
        .map_err(|e| CliError::Usage(format!("opening {}: {e}", path.display())))?;
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(CliError::Usage(format!(
            "{} is a directory; give the archive file (room_<id>.tar.zst)",
            path.display()
        )));
    }
    Ok(f)
}

/// `  room: <id> (<name>) from <instance>, format v<n>, created <time>`, when the manifest was read.
fn print_room_line(report: &Report) {
    if let Some(room) = &report.room {
        let name = room
            .name
            .as_deref()
            .map(|n| format!(" ({n:?})"))
            .unwrap_or_default();
        outln!(
            "  room: {}{name} from {}, format v{}, created {}",
            room.id,
            report.source_instance.as_deref().unwrap_or("?"),
            report.format_version.unwrap_or(0),
            report.created_at.as_deref().unwrap_or("?"),
        );
    }
}
