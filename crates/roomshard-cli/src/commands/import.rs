//! `roomshard import`: verify a bundle, then load it under a new room id, all or nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use roomshard::flows::{self, ImportOptions, ImportOutcome, ImportTarget};
use roomshard::home::Home;
use roomshard_core::RoomId;
use roomshard_verify::TrustedKeys;

use super::{
    CliError, Create, block_on, open_home, parse_room, print_json, read_trusted_keys, receipt_json,
    usage, write_file,
};
use crate::progress::Bars;

/// `import` arguments.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// The bundle (room_<id>.tar.zst).
    pub archive: PathBuf,
    /// The home (created if missing), and where its providers live.
    #[command(flatten)]
    pub home: super::HomeArgs,
    /// Trusted key set JSON ({"keys":[...]}): the bundle must be signed by one of them.
    #[arg(long)]
    pub trusted_keys: PathBuf,
    /// The new room id (default: the bundle's id plus a random suffix).
    #[arg(long, value_parser = parse_room)]
    pub room: Option<RoomId>,
    /// Import into the room's own shard, bucket and key instead of the shared tables.
    #[arg(long)]
    pub dedicated: bool,
    /// Also write the import's Sovereignty Receipt to this file.
    #[arg(long)]
    pub receipt_out: Option<PathBuf>,
    /// Import a bundle this home already imported (same manifest digest) once more, as
    /// another room (refused by default).
    #[arg(long)]
    pub allow_duplicate: bool,
    /// Print one JSON object on stdout: `{"room":…, …}`.
    #[arg(long)]
    pub json: bool,
}

/// Verifies and imports `archive` into `home`.
pub async fn import_archive(
    home: &Home,
    archive: &Path,
    trusted: &TrustedKeys,
    room: Option<RoomId>,
    dedicated: bool,
    allow_duplicate: bool,
) -> Result<ImportOutcome, CliError> {
    let options = ImportOptions {
        new_room: room,
        allow_duplicate,
        target: if dedicated {
            ImportTarget::Dedicated
        } else {
            ImportTarget::Pooled
        },
        spool_dir: Some(home.tmp_dir()),
        ..ImportOptions::default()
    };
    let bars = Bars::new("import");
    let outcome = flows::import_file(&home.roomshard, archive, trusted, &options, &bars).await?;
    bars.finish();
    Ok(outcome)
}

/// The JSON object `import` prints.
pub fn imported_json(o: &ImportOutcome) -> serde_json::Value {
    let changed: usize = o.id_maps.iter().map(|m| m.changes.len()).sum();
    serde_json::json!({
        "room": o.new_room.as_str(),
        "source_room": o.source_room,
        "import_id": o.import_id,
        "signer_key_id": o.signer_key_id,
        "manifest_sha256": o.manifest_sha256,
        "tables": o.tables,
        "objects": o.objects,
        "remapped_ids": changed,
        "receipt": receipt_json(&o.receipt),
    })
}

/// Runs `import`.
pub fn run(args: &ImportArgs) -> Result<ExitCode, CliError> {
    let trusted = read_trusted_keys(&args.trusted_keys)?;
    if !args.archive.is_file() {
        return Err(usage(format!(
            "{}: no such archive file",
            args.archive.display()
        )));
    }
    block_on(async {
        let home = open_home(&args.home, Create::Yes, None).await?;
        let o = import_archive(
            &home,
            &args.archive,
            &trusted,
            args.room.clone(),
            args.dedicated,
            args.allow_duplicate,
        )
        .await?;
        if let Some(path) = &args.receipt_out {
            write_file(path, &o.receipt)?;
        }
        if args.json {
            print_json(&imported_json(&o));
        } else {
            let rows: u64 = o.tables.iter().map(|t| t.rows).sum();
            let changed: usize = o.id_maps.iter().map(|m| m.changes.len()).sum();
            outln!(
                "imported room {} (signed by {}) as {}: {rows} rows, {} objects, {changed} ids \
                 renumbered",
                o.source_room,
                o.signer_key_id,
                o.new_room,
                o.objects
            );
            if let Some(path) = &args.receipt_out {
                outln!("receipt written to {}", path.display());
            }
            outln!("{}", o.new_room);
        }
        Ok(ExitCode::SUCCESS)
    })
}
