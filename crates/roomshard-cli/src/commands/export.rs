//! `roomshard export`: a room as a signed `room_<id>.tar.zst` and its Sigstore sidecar.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use roomshard::flows::{self, ExportOptions, ExportOutcome};
use roomshard::home::Home;
use roomshard_core::RoomId;

use super::{CliError, Create, block_on, human_bytes, open_home, parse_room, print_json};
use crate::progress::Bars;

/// `export` arguments.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// The room.
    #[arg(value_parser = parse_room)]
    pub room: RoomId,
    /// The home, and where its providers live.
    #[command(flatten)]
    pub home: super::HomeArgs,
    /// Directory to write room_<id>.tar.zst and room_<id>.tar.zst.sigstore.json into
    /// (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing room_<id>.tar.zst (and sidecar) in --out.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// An exported archive.
pub struct Exported {
    /// The archive.
    pub archive: PathBuf,
    /// Its sidecar.
    pub sidecar: PathBuf,
    /// What the flow reported.
    pub outcome: ExportOutcome,
}

/// Exports `room` of `home` into `dir`. An existing archive or sidecar there is refused unless
/// `force`; a directory this call created is removed again when the export fails.
pub async fn export_room(
    home: &Home,
    room: &RoomId,
    dir: &Path,
    force: bool,
) -> Result<Exported, CliError> {
    let archive_name = roomshard_bundle::archive_file_name(room.as_str());
    for name in [
        archive_name.clone(),
        format!("{archive_name}.sigstore.json"),
    ] {
        let path = dir.join(&name);
        if !force && path.exists() {
            return Err(super::usage(format!(
                "{} already exists; pass --force to replace it",
                path.display()
            )));
        }
    }
    let created = !dir.exists();
    std::fs::create_dir_all(dir)
        .map_err(|e| super::usage(format!("creating {}: {e}", dir.display())))?;
    let options = ExportOptions {
        spool_dir: Some(home.tmp_dir()),
        ..ExportOptions::default()
    };
    let bars = Bars::new(&format!("export {room}"));
    let result = flows::export_to_dir(&home.roomshard, room, dir, &options, &bars).await;
    let (archive, sidecar, outcome) = match result {
        Ok(done) => done,
        Err(e) => {
            if created {
                // Only removes it if the failed export left it empty.
                let _ = std::fs::remove_dir(dir);
            }
            return Err(e.into());
        }
    };
    bars.finish();
    Ok(Exported {
        archive,
        sidecar,
        outcome,
    })
}

/// The JSON object `export` prints.
pub fn exported_json(e: &Exported) -> serde_json::Value {
    let o = &e.outcome;
    serde_json::json!({
        "room": o.room.as_str(),
        "archive": e.archive,
        "sidecar": e.sidecar,
        "archive_sha256": o.archive_sha256,
        "manifest_sha256": o.manifest_sha256,
        "archive_bytes": o.archive_bytes,
        "rows": o.rows,
        "objects": o.objects,
        "media_bytes": o.media_bytes,
    })
}

/// Prints an export in human form.
pub fn print_exported(e: &Exported) {
    let o = &e.outcome;
    outln!("exported room {} to {}", o.room, e.archive.display());
    outln!("  sidecar:  {}", e.sidecar.display());
    outln!("  sha256:   {}", o.archive_sha256);
    outln!("  manifest: sha256 {}", o.manifest_sha256);
    outln!(
        "  size:     {} ({} bytes): {} rows, {} objects ({})",
        human_bytes(o.archive_bytes),
        o.archive_bytes,
        o.rows,
        o.objects,
        human_bytes(o.media_bytes)
    );
}

/// Runs `export`.
pub fn run(args: &ExportArgs) -> Result<ExitCode, CliError> {
    block_on(async {
        let home = open_home(&args.home, Create::No, None).await?;
        let exported = export_room(&home, &args.room, &args.out, args.force).await?;
        if args.json {
            print_json(&exported_json(&exported));
        } else {
            print_exported(&exported);
        }
        Ok(ExitCode::SUCCESS)
    })
}
