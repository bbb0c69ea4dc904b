//! `roomshard audit`: the hash-chained audit log.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use roomshard::flows;
use roomshard_core::{Error, RoomId};

use super::{
    CliError, Create, block_on, open_home, parse_room, print_json, read_trusted_keys, usage,
};

/// `audit` subcommands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the whole chain (sequence, links, hashes) and that it still holds the audit anchor
    /// of every receipt this home issued, and of every `--receipt` given. Exit 1 if it is
    /// broken.
    #[command(after_help = crate::EXIT_CODES)]
    Verify(AuditVerifyArgs),
    /// List the log, oldest first.
    #[command(after_help = crate::EXIT_CODES)]
    List(AuditListArgs),
}

/// `audit verify` arguments.
#[derive(clap::Args)]
pub struct AuditVerifyArgs {
    /// The home, and where its providers live.
    #[command(flatten)]
    pub home: super::HomeArgs,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// A head this log had earlier (from a previous `audit verify`, or noted down elsewhere):
    /// the entry with that hash must still be in the chain. An intact chain whose tail was cut
    /// off verifies as intact; this is what detects it (exit 1).
    #[arg(long, value_name = "HASH")]
    pub expect_head: Option<String>,
    /// A receipt this home issued, as its holder kept it (repeatable): its signature is checked
    /// against this home's key set, and the audit entry it anchors must still be in the chain.
    /// The receipts the home recorded itself are always checked; a copy kept elsewhere is what
    /// catches a log cut back together with the home's own receipt records.
    #[arg(long, value_name = "FILE")]
    pub receipt: Vec<PathBuf>,
}

/// `audit list` arguments.
#[derive(clap::Args)]
pub struct AuditListArgs {
    /// The home, and where its providers live.
    #[command(flatten)]
    pub home: super::HomeArgs,
    /// Only this room's entries.
    #[arg(long, value_parser = parse_room)]
    pub room: Option<RoomId>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs an `audit` subcommand.
pub fn run(command: AuditCommand) -> Result<ExitCode, CliError> {
    match command {
        AuditCommand::Verify(args) => block_on(async {
            let home = open_home(&args.home, Create::No, None).await?;
            let mut receipts = Vec::new();
            for file in &args.receipt {
                let bytes = std::fs::read(file)
                    .map_err(|e| usage(format!("reading {}: {e}", file.display())))?;
                receipts.push((file.display().to_string(), bytes));
            }
            let trusted = read_trusted_keys(&home.trusted_keys_path())?;
            let options = flows::AuditCheckOptions {
                expect_head: args.expect_head.clone(),
                receipts,
            };
            let v = flows::verify_audit(&home.roomshard, &trusted, &options)
                .await
                .map_err(|e| match e {
                    // A handed-in receipt that is not this home's is a refusal, not a usage
                    // error: the operation ran and says no.
                    Error::Invalid { what, detail } => {
                        CliError::Failed(format!("{what}: {detail}"))
                    }
                    other => other.into(),
                })?;
            if args.json {
                print_json(&serde_json::json!({
                    "intact": v.intact(),
                    "rows": v.rows,
                    "head": v.head,
                    "expected_head_seq": v.expected_head_seq,
                    "anchors": v.anchors,
                    "broken": v.broken.as_ref().map(|(seq, why)| {
                        serde_json::json!({ "seq": seq, "problem": why })
                    }),
                }));
            }
            match &v.broken {
                None => {
                    if !args.json {
                        outln!(
                            "audit log intact: {} entries, head {}; {} receipt anchors hold",
                            v.rows,
                            v.head,
                            v.anchors.len()
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Some((seq, why)) => Err(CliError::Failed(format!(
                    "audit log broken at entry {seq} of {}: {why}",
                    v.rows
                ))),
            }
        }),
        AuditCommand::List(args) => block_on(async {
            let home = open_home(&args.home, Create::No, None).await?;
            let log = home.roomshard.control.audit_log(args.room.as_ref()).await?;
            if args.json {
                print_json(&serde_json::json!({ "entries": log }));
            } else if log.is_empty() {
                outln!("no audit entries");
            } else {
                for r in &log {
                    let e = &r.entry;
                    outln!(
                        "{:>6}  {}  {:<28} {:<18} {}  {}",
                        r.seq,
                        e.at,
                        e.action,
                        e.room.as_ref().map(|r| r.as_str()).unwrap_or("-"),
                        e.actor,
                        e.detail
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }),
    }
}
