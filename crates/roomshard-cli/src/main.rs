//! `roomshard`: the command line for verified exit.
//!
//! Exit codes (stable, for scripts):
//! - `0` the command succeeded (for `verify`: the archive is valid);
//! - `1` `verify` ran and the archive is invalid (reason on stderr, or in the `--json` report);
//! - `2` usage error: bad arguments, unreadable input files, a malformed trusted key set.

use clap::{Parser, Subcommand, ValueEnum};
use roomshard_bundle::{LocalEd25519Signer, LocalP256Signer};
use roomshard_verify::format::KeySet;
use roomshard_verify::{Report, TrustedKeys, VerifyOptions};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Archives at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_THRESHOLD: u64 = 16 << 20;

#[derive(Parser)]
#[command(
    name = "roomshard",
    version,
    about = "Per-room data sovereignty: verified exit for chat rooms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Verify a room bundle (room_<id>.tar.zst) against a trusted key set.
    Verify(VerifyArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a signing key pair: private.pem (PKCS#8, mode 0600), public.pem (SPKI) and
    /// trusted-keys.json holding the public key.
    Generate(GenerateArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyAlg {
    /// ECDSA P-256 with SHA-256 (the default; what cosign and cloud KMS use).
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Directory to write the keys into (created if missing; existing key files are not
    /// overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Signature algorithm.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    alg: KeyAlg,
    /// Key id (default: derived from the public key).
    #[arg(long)]
    id: Option<String>,
    /// Validity start, YYYY-MM-DDTHH:MM:SSZ.
    #[arg(long)]
    not_before: Option<String>,
    /// Validity end, YYYY-MM-DDTHH:MM:SSZ.
    #[arg(long)]
    not_after: Option<String>,
}

#[derive(clap::Args)]
struct VerifyArgs {
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
}

/// A failure that is the user's to fix (exit 2).
struct UsageError(String);

impl<E: std::fmt::Display> From<E> for UsageError {
    fn from(e: E) -> Self {
        UsageError(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys {
            command: KeysCommand::Generate(args),
        } => keys_generate(&args).map(|()| ExitCode::SUCCESS),
        Command::Verify(args) => verify(&args),
    };
    match result {
        Ok(code) => code,
        Err(UsageError(msg)) => {
            eprintln!("roomshard: {msg}");
            ExitCode::from(2)
        }
    }
}

fn keys_generate(args: &GenerateArgs) -> Result<(), UsageError> {
    for ts in args.not_before.iter().chain(args.not_after.iter()) {
        roomshard_verify::format::validate_timestamp(ts).map_err(|e| UsageError(e.detail))?;
    }
    fs::create_dir_all(&args.out)
        .map_err(|e| UsageError(format!("creating {}: {e}", args.out.display())))?;
    let private_path = args.out.join("private.pem");
    let public_path = args.out.join("public.pem");
    let keyset_path = args.out.join("trusted-keys.json");
    for p in [&private_path, &public_path, &keyset_path] {
        if p.exists() {
            return Err(UsageError(format!(
                "{} already exists; refusing to overwrite a key",
                p.display()
            )));
        }
    }
    let (private_pem, public_pem, trusted) = match args.alg {
        KeyAlg::EcdsaP256 => {
            let s = LocalP256Signer::generate(args.id.clone())?;
            let t = s.trusted_key(args.not_before.clone(), args.not_after.clone())?;
            (s.to_pkcs8_pem()?.to_string(), s.public_key_pem()?, t)
        }
        KeyAlg::Ed25519 => {
            let s = LocalEd25519Signer::generate(args.id.clone())?;
            let t = s.trusted_key(args.not_before.clone(), args.not_after.clone())?;
            (s.to_pkcs8_pem()?.to_string(), s.public_key_pem()?, t)
        }
    };
    write_private(&private_path, private_pem.as_bytes())?;
    fs::write(&public_path, public_pem.as_bytes())?;
    let set = KeySet {
        keys: vec![trusted.clone()],
    };
    let mut json = serde_json::to_string_pretty(&set)?;
    json.push('\n');
    fs::write(&keyset_path, json)?;
    println!("key id:      {}", trusted.id);
    println!("private key: {}", private_path.display());
    println!("public key:  {}", public_path.display());
    println!("trusted set: {}", keyset_path.display());
    Ok(())
}

/// Writes a secret file readable by its owner only, created that way (never world-readable,
/// even briefly).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), UsageError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| UsageError(format!("creating {}: {e}", path.display())))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn verify(args: &VerifyArgs) -> Result<ExitCode, UsageError> {
    let keyset = fs::read(&args.trusted_keys)
        .map_err(|e| UsageError(format!("reading {}: {e}", args.trusted_keys.display())))?;
    let keys = TrustedKeys::from_json(&keyset)
        .map_err(|e| UsageError(format!("{}: {e}", args.trusted_keys.display())))?;
    let sidecar = match &args.sidecar {
        Some(p) => {
            Some(fs::read(p).map_err(|e| UsageError(format!("reading {}: {e}", p.display())))?)
        }
        None => None,
    };
    let mut options = VerifyOptions {
        hash_archive: sidecar.is_some(),
        ..VerifyOptions::default()
    };
    for spec in &args.limits {
        let (name, value) = spec
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--limit {spec:?}: expected NAME=VALUE")))?;
        let value: u64 = value
            .parse()
            .map_err(|_| UsageError(format!("--limit {spec:?}: VALUE must be a whole number")))?;
        options
            .limits
            .set(name, value)
            .map_err(|e| UsageError(format!("--limit: {e}")))?;
    }
    let (input, len): (Box<dyn Read>, Option<u64>) = if args.archive.as_os_str() == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let f = fs::File::open(&args.archive)
            .map_err(|e| UsageError(format!("opening {}: {e}", args.archive.display())))?;
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
    if let (Some(bytes), true) = (&sidecar, report.valid) {
        match roomshard_verify::verify_sidecar(bytes, &report, &keys) {
            Ok(info) => {
                sidecar_line = Some(format!(
                    "sidecar: ok, signed by {} for {}",
                    info.key_id, info.subject_name
                ))
            }
            Err(e) => report.fail(&e),
        }
    }
    if args.json {
        println!("{}", report.to_json());
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
    println!("VALID {}", archive.display());
    if let Some(room) = &report.room {
        let name = room
            .name
            .as_deref()
            .map(|n| format!(" ({n:?})"))
            .unwrap_or_default();
        println!(
            "  room: {}{name} from {}, format v{}, created {}",
            room.id,
            report.source_instance.as_deref().unwrap_or("?"),
            report.format_version.unwrap_or(0),
            report.created_at.as_deref().unwrap_or("?"),
        );
    }
    if let Some(s) = &report.signer {
        println!("  signed by: {} ({})", s.key_id, s.algorithm.as_str());
    }
    for t in &report.tables {
        println!("  table {}: {} rows", t.name, t.found_rows.unwrap_or(0));
    }
    let bytes: u64 = report.files.iter().map(|f| f.size).sum();
    println!(
        "  files: {} ({bytes} bytes), every size and SHA-256 matches the manifest",
        report.files.len()
    );
    if let Some(line) = sidecar {
        println!("  {line}");
    }
}
