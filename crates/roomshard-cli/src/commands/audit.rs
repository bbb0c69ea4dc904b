//! `roomshard audit`: the hash-chained audit log.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use roomshard_core::RoomId;

use super::{CliError, Create, block_on, open_home, parse_room, print_json};

/// `audit` subcommands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the whole chain (sequence, links, hashes). Exit 1 if it is broken.
    #[command(after_help = crate::EXIT_CODES)]
    Verify(AuditVerifyArgs),
    /// List the log, oldest first.
    #[command(after_help = crate::EXIT_CODES)]
    List(AuditListArgs),
}

/// `audit verify` arguments.
#[derive(clap::Args)]
pub struct AuditVerifyArgs {
    /// The home directory.
    #[arg(long)]
    pub home: PathBuf,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// A head this log had earlier (from a previous `audit verify`, or noted down elsewhere):
    /// the entry with that hash must still be in the chain. An intact chain whose tail was cut
    /// off verifies as intact; this is what detects it (exit 1).
    #[arg(long, value_name = "HASH")]
    pub expect_head: Option<String>,
}

/// `audit list` arguments.
#[derive(clap::Args)]
pub struct AuditListArgs {
    /// The home directory.
    #[arg(long)]
    pub home: PathBuf,
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
            let mut v = home.roomshard.control.verify_audit().await?;
            let mut expected_at = None;
            if let (Some(expected), None) = (&args.expect_head, &v.broken) {
                let log = home.roomshard.control.audit_log(None).await?;
                match log.iter().find(|r| &r.hash == expected) {
                    Some(record) => expected_at = Some(record.seq),
                    None => {
                        v.broken = Some((
                            v.rows + 1,
                            format!(
                                "the expected head {expected} is not in the chain: entries were \
                                 removed from its end (or this is another log)"
                            ),
                        ))
                    }
                }
            }
            if args.json {
                print_json(&serde_json::json!({
                    "intact": v.broken.is_none(),
                    "rows": v.rows,
                    "head": v.head,
                    "expected_head_seq": expected_at,
                    "broken": v.broken.as_ref().map(|(seq, why)| {
                        serde_json::json!({ "seq": seq, "problem": why })
                    }),
                }));
            }
            match &v.broken {
                None => {
                    if !args.json {
                        outln!("audit log intact: {} entries, head {}", v.rows, v.head);
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
