//! `roomshard audit`: the hash-chained audit log.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use roomshard_core::{AuditAnchor, RoomId};

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
            let held = held_anchors(&home, &args.receipt)?;
            let control = &home.roomshard.control;
            let mut v = control.verify_audit().await?;
            let log = control.audit_log(None).await?;
            let mut expected_at = None;
            if let (Some(expected), None) = (&args.expect_head, &v.broken) {
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
            // Anchors: the receipts the home recorded, then the ones held elsewhere.
            let mut anchors = Vec::new();
            for placement in control.placements().await? {
                for r in control.receipts(&placement.room).await? {
                    if let Some(anchor) = receipt_anchor(r.envelope.as_bytes())? {
                        let source = format!(
                            "recorded {} receipt of room {} (version {})",
                            r.reason, r.room, r.version
                        );
                        anchors.push((source, anchor));
                    }
                }
            }
            anchors.extend(held);
            let mut checked = Vec::new();
            for (source, anchor) in &anchors {
                let problem = roomshard_core::check_audit_anchor(&log, anchor);
                if let (Some(p), None) = (&problem, &v.broken) {
                    v.broken = Some((anchor.seq, format!("{source}: {p}")));
                }
                checked.push(serde_json::json!({
                    "source": source,
                    "seq": anchor.seq,
                    "hash": anchor.hash,
                    "problem": problem,
                }));
            }
            if args.json {
                print_json(&serde_json::json!({
                    "intact": v.broken.is_none(),
                    "rows": v.rows,
                    "head": v.head,
                    "expected_head_seq": expected_at,
                    "anchors": checked,
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
                            checked.len()
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

/// The audit anchor a receipt envelope carries, read without checking its signature (for the
/// receipts the home recorded itself); `None` for a receipt from before anchors were added.
fn receipt_anchor(envelope: &[u8]) -> Result<Option<AuditAnchor>, CliError> {
    let predicate = roomshard_verify::dsse::receipt_predicate_unverified(envelope)
        .map_err(|e| CliError::Failed(format!("a recorded receipt does not parse: {e}")))?;
    Ok(predicate.audit)
}

/// The anchors of the receipts given with `--receipt`, each verified against the home's key set
/// at its issue time (an expired receipt still anchors the log as it was when issued).
fn held_anchors(
    home: &roomshard::home::Home,
    files: &[PathBuf],
) -> Result<Vec<(String, AuditAnchor)>, CliError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let keys = read_trusted_keys(&home.trusted_keys_path())?;
    let mut out = Vec::new();
    for file in files {
        let bytes =
            std::fs::read(file).map_err(|e| usage(format!("reading {}: {e}", file.display())))?;
        let issued = roomshard_verify::dsse::receipt_predicate_unverified(&bytes)
            .map_err(|e| CliError::Failed(format!("{}: not a receipt: {e}", file.display())))?
            .issued;
        let verified =
            roomshard_verify::dsse::verify_receipt(&bytes, &keys, &issued).map_err(|e| {
                CliError::Failed(format!(
                    "{}: not a receipt of this home: {e}",
                    file.display()
                ))
            })?;
        let anchor = verified.predicate.audit.ok_or_else(|| {
            CliError::Failed(format!(
                "{}: the receipt carries no audit anchor (issued before receipts had one)",
                file.display()
            ))
        })?;
        out.push((format!("receipt {}", file.display()), anchor));
    }
    Ok(out)
}
