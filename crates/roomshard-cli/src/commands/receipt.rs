//! `roomshard receipt`: verify a Sovereignty Receipt, or list a room's.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use roomshard_core::RoomId;

use super::{
    CliError, Create, block_on, open_home, parse_room, print_json, read_trusted_keys, receipt_json,
    usage,
};

/// `receipt` subcommands.
#[derive(Subcommand)]
pub enum ReceiptCommand {
    /// Verify a receipt (a DSSE envelope JSON file) against a trusted key set: signature, key
    /// validity and expiry. Exit 1 if it is invalid or expired.
    #[command(after_help = crate::EXIT_CODES)]
    Verify(VerifyReceiptArgs),
    /// List a room's receipts, oldest first.
    #[command(after_help = crate::EXIT_CODES)]
    List(ListReceiptsArgs),
}

/// `receipt verify` arguments.
#[derive(clap::Args)]
pub struct VerifyReceiptArgs {
    /// The receipt file.
    pub receipt: PathBuf,
    /// Trusted key set JSON ({"keys":[...]}).
    #[arg(long)]
    pub trusted_keys: PathBuf,
    /// Judge expiry at this time (YYYY-MM-DDTHH:MM:SSZ) instead of now.
    #[arg(long)]
    pub now: Option<String>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `receipt list` arguments.
#[derive(clap::Args)]
pub struct ListReceiptsArgs {
    /// The room.
    #[arg(value_parser = parse_room)]
    pub room: RoomId,
    /// The home, and where its providers live.
    #[command(flatten)]
    pub home: super::HomeArgs,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `receipt` subcommand.
pub fn run(command: ReceiptCommand) -> Result<ExitCode, CliError> {
    match command {
        ReceiptCommand::Verify(args) => verify(&args),
        ReceiptCommand::List(args) => list(&args),
    }
}

fn verify(args: &VerifyReceiptArgs) -> Result<ExitCode, CliError> {
    let keys = read_trusted_keys(&args.trusted_keys)?;
    let bytes = std::fs::read(&args.receipt)
        .map_err(|e| usage(format!("reading {}: {e}", args.receipt.display())))?;
    let now = match &args.now {
        Some(t) => {
            roomshard_verify::format::validate_timestamp(t)
                .map_err(|e| usage(format!("--now: {}", e.detail)))?;
            t.clone()
        }
        None => roomshard::now_rfc3339(),
    };
    match roomshard_verify::dsse::verify_receipt(&bytes, &keys, &now) {
        Ok(r) => {
            let p = &r.predicate;
            if args.json {
                print_json(&serde_json::json!({
                    "valid": true,
                    "key_id": r.key_id,
                    "predicate": p,
                    "subject": r.statement.subject,
                }));
            } else {
                outln!("VALID receipt {}", args.receipt.display());
                outln!("  room:     {} (version {})", p.room, p.version);
                outln!("  profile:  {}, region {}", p.profile, p.region);
                outln!(
                    "  bucket:   {}",
                    if p.bucket.is_empty() { "-" } else { &p.bucket }
                );
                outln!(
                    "  key:      {}",
                    if p.key_alias.is_empty() {
                        "-"
                    } else {
                        &p.key_alias
                    }
                );
                outln!("  digest:   sha256 {}", p.manifest_sha256);
                outln!("  issued:   {}, expires {}", p.issued, p.expires);
                if let Some(a) = &p.audit {
                    outln!("  audit:    entry {} ({})", a.seq, a.hash);
                }
                outln!("  signed by {}", r.key_id);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if args.json {
                print_json(&serde_json::json!({
                    "valid": false,
                    "reason": e.reason.as_str(),
                    "detail": e.detail,
                }));
            }
            Err(CliError::Failed(format!(
                "INVALID receipt {}: {}: {}",
                args.receipt.display(),
                e.reason.as_str(),
                e.detail
            )))
        }
    }
}

fn list(args: &ListReceiptsArgs) -> Result<ExitCode, CliError> {
    block_on(async {
        let home = open_home(&args.home, Create::No, None).await?;
        let receipts = home.roomshard.control.receipts(&args.room).await?;
        if args.json {
            let list: Vec<_> = receipts
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "room": r.room.as_str(),
                        "version": r.version,
                        "reason": r.reason,
                        "issued": r.issued,
                        "envelope": receipt_json(r.envelope.as_bytes()),
                    })
                })
                .collect();
            print_json(&serde_json::json!({ "room": args.room.as_str(), "receipts": list }));
        } else if receipts.is_empty() {
            outln!("no receipts for room {}", args.room);
        } else {
            for r in &receipts {
                outln!(
                    "version {:>4}  {:<14} issued {}",
                    r.version,
                    r.reason,
                    r.issued
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
