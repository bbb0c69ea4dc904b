//! `roomshard rooms`: every placement of a home.

use std::process::ExitCode;

use super::{CliError, Create, block_on, open_home, placement_json, print_json};

/// `rooms` arguments.
#[derive(clap::Args)]
pub struct RoomsArgs {
    /// The home, and where its providers live.
    #[command(flatten)]
    pub home: super::HomeArgs,
    /// Print one JSON object on stdout: `{"rooms":[…]}`.
    #[arg(long)]
    pub json: bool,
}

/// Runs `rooms`.
pub fn run(args: &RoomsArgs) -> Result<ExitCode, CliError> {
    block_on(async {
        let home = open_home(&args.home, Create::No, None).await?;
        let placements = home.roomshard.control.placements().await?;
        if args.json {
            let rooms: Vec<_> = placements.iter().map(placement_json).collect();
            print_json(&serde_json::json!({ "rooms": rooms }));
            return Ok(ExitCode::SUCCESS);
        }
        if placements.is_empty() {
            outln!("no rooms in {}", home.dir().display());
            return Ok(ExitCode::SUCCESS);
        }
        outln!(
            "{:<24} {:<15} {:<10} {:<8} {:<28} {:<28} {:>7}",
            "ROOM",
            "STATE",
            "PROFILE",
            "SHARDED",
            "BUCKET",
            "KEY",
            "VERSION"
        );
        for p in &placements {
            outln!(
                "{:<24} {:<15} {:<10} {:<8} {:<28} {:<28} {:>7}",
                p.room.as_str(),
                p.state.as_str(),
                p.profile.as_str(),
                if p.is_sharded { "yes" } else { "no" },
                p.media_bucket.as_deref().unwrap_or("-"),
                p.kms_key_ref.as_deref().unwrap_or("-"),
                p.version
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
