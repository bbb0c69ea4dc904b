//! `roomshard usage ROOM`: a room's rows per table, the bytes of its rows, and its media.

use std::process::ExitCode;

use roomshard_core::RoomId;

use super::{CliError, Create, block_on, human_bytes, open_home, parse_room, print_json};

/// `usage` arguments.
#[derive(clap::Args)]
pub struct UsageArgs {
    /// The room.
    #[arg(value_parser = parse_room)]
    pub room: RoomId,
    /// The home, and where its providers live.
    #[command(flatten)]
    pub home: super::HomeArgs,
    /// Print one JSON object on stdout (`rows`, `tables`, `shard_bytes`, `objects`,
    /// `media_bytes`).
    #[arg(long)]
    pub json: bool,
}

/// Runs `usage`.
pub fn run(args: &UsageArgs) -> Result<ExitCode, CliError> {
    block_on(async {
        let home = open_home(&args.home, Create::No, None).await?;
        let usage = roomshard::flows::usage(&home.roomshard, &args.room).await?;
        if args.json {
            let tables: serde_json::Map<String, serde_json::Value> = usage
                .tables
                .iter()
                .map(|t| (t.table.clone(), t.rows.into()))
                .collect();
            print_json(&serde_json::json!({
                "room": usage.room.as_str(),
                "state": usage.state.as_str(),
                "rows": usage.rows,
                "tables": tables,
                "shard_bytes": usage.shard_bytes,
                "objects": usage.objects,
                "media_bytes": usage.media_bytes,
            }));
            return Ok(ExitCode::SUCCESS);
        }
        outln!("room {} ({})", usage.room, usage.state.as_str());
        let per_table: Vec<String> = usage
            .tables
            .iter()
            .map(|t| format!("{} {}", t.table, t.rows))
            .collect();
        outln!("  rows   {} ({})", usage.rows, per_table.join(", "));
        match usage.shard_bytes {
            Some(b) => outln!("  stored {} of rows, indexes included", human_bytes(b)),
            None => outln!("  stored (the shard store cannot tell)"),
        }
        outln!(
            "  media  {} objects, {}",
            usage.objects,
            human_bytes(usage.media_bytes)
        );
        Ok(ExitCode::SUCCESS)
    })
}
