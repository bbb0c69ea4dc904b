//! `roomshard keys generate`: a signing key pair and its trusted key set.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use roomshard_bundle::{LocalEd25519Signer, LocalP256Signer};
use roomshard_verify::format::KeySet;

use super::{CliError, usage};

/// Signature algorithms.
#[derive(Clone, Copy, ValueEnum)]
pub enum KeyAlg {
    /// ECDSA P-256 with SHA-256 (the default; what cosign and cloud KMS use).
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

/// `keys generate` arguments.
#[derive(clap::Args)]
pub struct GenerateArgs {
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
    /// Validity end, YYYY-MM-DDTHH:MM:SSZ (after --not-before).
    #[arg(long)]
    not_after: Option<String>,
    /// Print one JSON object on stdout (key id, algorithm, the three files).
    #[arg(long)]
    json: bool,
}

/// Runs `keys generate`.
pub fn generate(args: &GenerateArgs) -> Result<(), CliError> {
    for ts in args.not_before.iter().chain(args.not_after.iter()) {
        roomshard_verify::format::validate_timestamp(ts).map_err(|e| CliError::Usage(e.detail))?;
    }
    if let (Some(nb), Some(na)) = (&args.not_before, &args.not_after) {
        // Fixed-width UTC timestamps compare as strings.
        if na <= nb {
            return Err(CliError::Usage(format!(
                "--not-after {na} is not after --not-before {nb}: the key would never be valid"
            )));
        }
    }
    fs::create_dir_all(&args.out)
        .map_err(|e| CliError::Usage(format!("creating {}: {e}", args.out.display())))?;
    let private_path = args.out.join("private.pem");
    let public_path = args.out.join("public.pem");
    let keyset_path = args.out.join("trusted-keys.json");
    for p in [&private_path, &public_path, &keyset_path] {
        if p.exists() {
            return Err(CliError::Usage(format!(
                "{} already exists; refusing to overwrite a key",
                p.display()
            )));
        }
    }
    let (private_pem, public_pem, trusted) = match args.alg {
        KeyAlg::EcdsaP256 => {
            let s = LocalP256Signer::generate(args.id.clone()).map_err(usage)?;
            let t = s
                .trusted_key(args.not_before.clone(), args.not_after.clone())
                .map_err(usage)?;
            (
                s.to_pkcs8_pem().map_err(usage)?.to_string(),
                s.public_key_pem().map_err(usage)?,
                t,
            )
        }
        KeyAlg::Ed25519 => {
            let s = LocalEd25519Signer::generate(args.id.clone()).map_err(usage)?;
            let t = s
                .trusted_key(args.not_before.clone(), args.not_after.clone())
                .map_err(usage)?;
            (
                s.to_pkcs8_pem().map_err(usage)?.to_string(),
                s.public_key_pem().map_err(usage)?,
                t,
            )
        }
    };
    write_private(&private_path, private_pem.as_bytes())?;
    fs::write(&public_path, public_pem.as_bytes()).map_err(usage)?;
    let set = KeySet {
        keys: vec![trusted.clone()],
    };
    let mut json = serde_json::to_string_pretty(&set).map_err(usage)?;
    json.push('\n');
    fs::write(&keyset_path, json).map_err(usage)?;
    if args.json {
        super::print_json(&serde_json::json!({
            "key_id": trusted.id,
            "algorithm": trusted.alg.as_str(),
            "not_before": trusted.not_before,
            "not_after": trusted.not_after,
            "private_key": private_path,
            "public_key": public_path,
            "trusted_keys": keyset_path,
        }));
    } else {
        outln!("key id:      {}", trusted.id);
        outln!("private key: {}", private_path.display());
        outln!("public key:  {}", public_path.display());
        outln!("trusted set: {}", keyset_path.display());
    }
    Ok(())
}

/// Writes a secret file readable by its owner only, created that way (never world-readable,
/// even briefly).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| CliError::Usage(format!("creating {}: {e}", path.display())))?;
    f.write_all(bytes).map_err(usage)?;
    f.sync_all().map_err(usage)?;
    Ok(())
}
