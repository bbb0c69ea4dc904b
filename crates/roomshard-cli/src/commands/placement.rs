//! The commands that move a room: `decentralise` (and its plan), `recentralise`, `revoke`,
//! `regrant`, `rotate`.

use std::path::PathBuf;
use std::process::ExitCode;

use roomshard::flows;
use roomshard::home::Home;
use roomshard_core::RoomId;

use super::{
    CliError, Create, block_on, human_bytes, open_home, parse_room, placement_json, placement_line,
    print_json, read_trusted_keys, receipt_json, verified_receipt_lines, write_file,
};
use crate::progress::Bars;

/// Arguments of the commands that take just a room and a home.
#[derive(clap::Args)]
pub struct RoomArgs {
    /// The room.
    #[arg(value_parser = parse_room)]
    pub room: RoomId,
    /// The home, and where its providers live.
    #[command(flatten)]
    pub home: super::HomeArgs,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write the receipt issued (regrant, rotate) to this file; revoke, recentralise and
    /// abort issue none and refuse it.
    #[arg(long)]
    pub receipt_out: Option<PathBuf>,
}

/// `decentralise` arguments.
#[derive(clap::Args)]
pub struct DecentraliseArgs {
    /// The room.
    #[arg(value_parser = parse_room)]
    pub room: RoomId,
    /// The home, and where its providers live.
    #[command(flatten)]
    pub home: super::HomeArgs,
    /// Only print the plan (assets, rows, objects, bytes, monthly cost); change nothing.
    #[arg(long)]
    pub plan: bool,
    /// Rows per copy batch (each batch is committed and checkpointed).
    #[arg(long)]
    pub batch_rows: Option<usize>,
    /// The longest the read-only cutover may take, in milliseconds; past it the cutover aborts,
    /// writes reopen on the pooled copy and the copy goes on (up to three attempts).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub cutover_limit_ms: u64,
    /// Use this existing database as the room's shard instead of creating one (bring your own;
    /// never created or deleted), in the shard store's URL form, e.g.
    /// sqlite:///srv/acme/acme.sqlite3.
    #[arg(long, value_name = "URL")]
    pub adopt_shard: Option<String>,
    /// Use this existing bucket (for a directory store: DIR/NAME under the media root) instead
    /// of creating one; never created or deleted.
    #[arg(long, value_name = "NAME")]
    pub adopt_bucket: Option<String>,
    /// Use this existing key (the key manager's reference, e.g. a KMS key ARN) instead of
    /// creating one; never created or scheduled for deletion.
    #[arg(long, value_name = "REF")]
    pub adopt_key: Option<String>,
    /// Also write the Sovereignty Receipt to this file.
    #[arg(long)]
    pub receipt_out: Option<PathBuf>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

impl DecentraliseArgs {
    /// The resources to adopt, checked (a shard URL must be a provider URL; it is never echoed
    /// with its secrets).
    fn adoption(&self) -> Result<flows::Adoption, CliError> {
        let shard = match &self.adopt_shard {
            None => None,
            Some(text) => {
                let url = roomshard_core::ProviderUrl::parse(text, "--adopt-shard")?;
                Some(roomshard_core::ServerUrl::new(url.expose()))
            }
        };
        Ok(flows::Adoption {
            shard,
            bucket: self.adopt_bucket.clone(),
            key: self.adopt_key.clone(),
        })
    }
}

/// Prints a receipt: what it says (verified against the home's published key set), then the
/// envelope itself.
fn print_receipt(home: &Home, envelope: &[u8]) -> Result<(), CliError> {
    let keys = read_trusted_keys(&home.trusted_keys_path())?;
    outln!("Sovereignty Receipt:");
    for line in verified_receipt_lines(envelope, &keys)? {
        outln!("  {line}");
    }
    outln!("{}", String::from_utf8_lossy(envelope).trim_end());
    Ok(())
}

/// Runs `decentralise`.
pub fn decentralise(args: &DecentraliseArgs) -> Result<ExitCode, CliError> {
    if args.batch_rows == Some(0) {
        return Err(super::usage("--batch-rows must be at least 1"));
    }
    if args.cutover_limit_ms == 0 {
        return Err(super::usage("--cutover-limit-ms must be at least 1"));
    }
    let adopt = args.adoption()?;
    block_on(async {
        let mut home = open_home(&args.home, Create::No, args.batch_rows).await?;
        home.roomshard.config.cutover_limit =
            std::time::Duration::from_millis(args.cutover_limit_ms);
        let rs = &home.roomshard;
        if args.plan {
            let plan = flows::plan(rs, &args.room).await?;
            if args.json {
                print_json(&serde_json::json!({ "plan": plan }));
            } else {
                outln!("plan to decentralise room {}:", plan.room);
                for a in &plan.assets {
                    let adopted = match a.split(' ').next() {
                        Some("shard") => adopt.shard.as_ref().map(|u| format!("shard {u}")),
                        Some("bucket") => adopt.bucket.as_ref().map(|b| format!("bucket {b}")),
                        Some("key") => adopt.key.as_ref().map(|k| format!("key {k}")),
                        _ => None,
                    };
                    match adopted {
                        Some(what) => outln!("  adopt {what} (yours: never created or deleted)"),
                        None => outln!("  create {a}"),
                    }
                }
                outln!(
                    "  copy {} rows, {} objects ({})",
                    plan.rows,
                    plan.objects,
                    human_bytes(plan.media_bytes)
                );
                for t in &plan.parity.tables {
                    outln!("    table {}: {} rows", t.table, t.rows);
                }
                outln!(
                    "  estimated storage cost: ${:.4}/month",
                    plan.monthly_cost_usd
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        let bars = Bars::new(&format!("decentralise {}", args.room));
        let options = flows::DecentraliseOptions {
            adopt,
            ..flows::DecentraliseOptions::default()
        };
        let outcome = flows::decentralise_with(rs, &args.room, &options, &bars).await?;
        bars.finish();
        if let Some(path) = &args.receipt_out {
            write_file(path, outcome.receipt.as_bytes())?;
        }
        if args.json {
            print_json(&serde_json::json!({
                "room": args.room.as_str(),
                "placement": placement_json(&outcome.placement),
                "parity": outcome.parity,
                "parity_digest": roomshard::parity_digest(&outcome.parity),
                "resumed": outcome.resumed,
                "receipt": receipt_json(outcome.receipt.as_bytes()),
            }));
        } else {
            outln!(
                "decentralised {}{}",
                placement_line(&outcome.placement),
                if outcome.resumed {
                    " — resumed an interrupted run"
                } else {
                    ""
                }
            );
            for t in &outcome.parity.tables {
                outln!(
                    "  table {}: {} rows, sha256 {}",
                    t.table,
                    t.rows,
                    t.checksum.as_deref().unwrap_or("-")
                );
            }
            if let Some(path) = &args.receipt_out {
                outln!("receipt written to {}", path.display());
            }
            print_receipt(&home, outcome.receipt.as_bytes())?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Refuses `--receipt-out` up front for a command whose flow issues no receipt, so the flag is
/// never silently ignored.
fn no_receipt(args: &RoomArgs, command: &str) -> Result<(), CliError> {
    match &args.receipt_out {
        Some(path) => Err(super::usage(format!(
            "{command} issues no receipt, so --receipt-out {} has nothing to write \
             (regrant, rotate, decentralise and import do)",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// Runs `recentralise`.
pub fn recentralise(args: &RoomArgs) -> Result<ExitCode, CliError> {
    no_receipt(args, "recentralise")?;
    block_on(async {
        let home = open_home(&args.home, Create::No, None).await?;
        let bars = Bars::new(&format!("recentralise {}", args.room));
        let placement = flows::recentralise(&home.roomshard, &args.room, &bars).await?;
        bars.finish();
        if args.json {
            print_json(&serde_json::json!({ "placement": placement_json(&placement) }));
        } else {
            outln!("recentralised {}", placement_line(&placement));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `abort`.
pub fn abort(args: &RoomArgs) -> Result<ExitCode, CliError> {
    no_receipt(args, "abort")?;
    block_on(async {
        let home = open_home(&args.home, Create::No, None).await?;
        let outcome = flows::abort(&home.roomshard, &args.room).await?;
        if args.json {
            print_json(&serde_json::json!({
                "aborted": outcome.from.as_str(),
                "placement": placement_json(&outcome.placement),
            }));
        } else {
            outln!(
                "aborted the {} job ({}): {}",
                if outcome.placement.state == roomshard_core::PlacementState::Sovereign {
                    "recentralise"
                } else {
                    "decentralise"
                },
                outcome.from,
                placement_line(&outcome.placement)
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `revoke`.
pub fn revoke(args: &RoomArgs) -> Result<ExitCode, CliError> {
    no_receipt(args, "revoke")?;
    block_on(async {
        let home = open_home(&args.home, Create::No, None).await?;
        let placement = flows::revoke(&home.roomshard, &args.room).await?;
        if args.json {
            print_json(&serde_json::json!({ "placement": placement_json(&placement) }));
        } else {
            outln!("revoked: {}", placement_line(&placement));
            outln!(
                "  the room is sealed: nothing is served or exported until `roomshard regrant {}`",
                args.room
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Prints a placement-and-receipt result of `regrant` or `rotate`.
fn print_with_receipt(
    home: &Home,
    args: &RoomArgs,
    what: &str,
    line: String,
    json: serde_json::Value,
    receipt: &str,
) -> Result<(), CliError> {
    if let Some(path) = &args.receipt_out {
        write_file(path, receipt.as_bytes())?;
    }
    if args.json {
        let mut json = json;
        if let Some(obj) = json.as_object_mut() {
            obj.insert("receipt".into(), receipt_json(receipt.as_bytes()));
        }
        print_json(&json);
    } else {
        outln!("{what}: {line}");
        print_receipt(home, receipt.as_bytes())?;
    }
    Ok(())
}

/// Runs `regrant`.
pub fn regrant(args: &RoomArgs) -> Result<ExitCode, CliError> {
    block_on(async {
        let home = open_home(&args.home, Create::No, None).await?;
        let (placement, receipt) = flows::regrant(&home.roomshard, &args.room).await?;
        print_with_receipt(
            &home,
            args,
            "regranted",
            placement_line(&placement),
            serde_json::json!({ "placement": placement_json(&placement) }),
            &receipt,
        )?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `rotate`.
pub fn rotate(args: &RoomArgs) -> Result<ExitCode, CliError> {
    block_on(async {
        let home = open_home(&args.home, Create::No, None).await?;
        let (key, receipt) = flows::rotate(&home.roomshard, &args.room).await?;
        print_with_receipt(
            &home,
            args,
            "rotated",
            format!("room {} key {} ({})", args.room, key.id, key.alias),
            serde_json::json!({
                "room": args.room.as_str(),
                "key": { "id": key.id, "alias": key.alias },
            }),
            &receipt,
        )?;
        Ok(ExitCode::SUCCESS)
    })
}
