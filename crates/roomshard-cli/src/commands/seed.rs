//! `roomshard seed`: a pooled room of generated Mesh data.

use std::process::ExitCode;

use roomshard::home::Home;
use roomshard_core::{
    AuditEntry, Error, IdRemap, ObjectKey, Placement, PlacementChange, PlacementState,
    ProgressEvent, ProgressSink, PutOptions, RemapPolicy, RoomId, Scope, TableCount,
};
use roomshard_example_mesh::{Media, Workload};

use super::{CliError, Create, block_on, failed, human_bytes, open_home, parse_room, print_json};
use crate::progress::Bars;

/// `seed` arguments.
#[derive(clap::Args)]
pub struct SeedArgs {
    /// The home (created if missing), and where its providers live.
    #[command(flatten)]
    pub home: super::HomeArgs,
    /// The new room's id (lower case letters, digits, `-`, `_`).
    #[arg(long, value_parser = parse_room)]
    pub room: RoomId,
    /// Number of messages (members: one per 50 messages, 5–500).
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Number of media objects (attachments).
    #[arg(long, default_value_t = 10)]
    pub media_objects: u64,
    /// Total media bytes, spread over the objects.
    #[arg(long, default_value_t = 1 << 20)]
    pub media_bytes: u64,
    /// Generator seed: the same seed gives the same rows and bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What a seed wrote.
pub struct Seeded {
    /// Rows per table.
    pub tables: Vec<TableCount>,
    /// Ids that were renumbered because another room already used them.
    pub remapped_ids: u64,
    /// Objects stored.
    pub objects: u64,
    /// Bytes stored.
    pub bytes: u64,
}

/// `count` object sizes adding up to exactly `total`, varied deterministically (1×–7× a base).
pub fn media_sizes(count: u64, total: u64) -> Vec<u64> {
    if count == 0 {
        return Vec::new();
    }
    let weights: Vec<u64> = (0..count)
        .map(|i| 1 + (i.wrapping_mul(2_654_435_761) >> 7) % 7)
        .collect();
    let sum: u64 = weights.iter().sum();
    let mut sizes: Vec<u64> = weights
        .iter()
        .map(|w| (u128::from(total) * u128::from(*w) / u128::from(sum)) as u64)
        .collect();
    let used: u64 = sizes.iter().sum();
    if let Some(last) = sizes.last_mut() {
        *last += total - used;
    }
    sizes
}

/// The workload `seed` generates.
pub fn workload(room: &RoomId, messages: u64, objects: u64, bytes: u64, seed: u64) -> Workload {
    Workload {
        seed,
        room_id: room.to_string(),
        messages,
        media: Media::Sizes(media_sizes(objects, bytes)),
    }
}

/// Seeds `room` of `home` with `w`: records a pooled placement, restores the rows into the
/// shared tables (renumbering ids other rooms use), then stores the media objects.
pub async fn seed_room(
    home: &Home,
    room: &RoomId,
    w: &Workload,
    progress: &dyn ProgressSink,
) -> Result<Seeded, CliError> {
    let rs = &home.roomshard;
    match rs.control.placement(room).await? {
        Some(p) if p.state != PlacementState::Pooled => {
            return Err(failed(format!(
                "room {room} is {}: seed only creates pooled rooms",
                p.state
            )));
        }
        Some(_) => {}
        None => {
            let placement = Placement::pooled(room.clone());
            let entry = AuditEntry {
                at: roomshard::now_rfc3339(),
                actor: rs.config.actor.clone(),
                action: "room.registered".to_string(),
                room: Some(room.clone()),
                detail: serde_json::json!({
                    "placement": { "to": placement.state.as_str(), "version": placement.version },
                }),
            };
            match rs
                .control
                .change_placement(PlacementChange::Insert(&placement), &entry)
                .await
            {
                Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let pooled = Scope::Pooled(room.clone());
    let existing: u64 = rs
        .shards
        .parity(&pooled, &rs.schema)
        .await?
        .tables
        .iter()
        .map(|t| t.rows)
        .sum();
    if existing > 0 {
        return Err(failed(format!(
            "room {room} already has {existing} rows; seed a new room id"
        )));
    }
    let objects = w.media_objects();
    let total_bytes: u64 = objects.iter().map(|o| o.size).sum();
    progress.emit(ProgressEvent::Planned {
        tables: roomshard_example_mesh::TABLES.len() as u64,
        rows: 0,
        objects: objects.len() as u64,
        bytes: total_bytes,
    });
    let remap = IdRemap {
        ids: RemapPolicy::OnCollision,
        media_keys: None,
    };
    let restored = rs
        .shards
        .restore(&pooled, &rs.schema, &mut w.dump_source(), &remap)
        .await?;
    let (mut done, mut bytes) = (0u64, 0u64);
    for o in &objects {
        let key = ObjectKey::new(o.key.clone())?;
        let options = PutOptions {
            content_type: Some(o.content_type().to_string()),
        };
        rs.media.put(&pooled, &key, o.body(), &options).await?;
        done += 1;
        bytes += o.size;
        progress.emit(ProgressEvent::Objects {
            done,
            total: Some(objects.len() as u64),
            bytes,
        });
    }
    let remapped_ids = restored
        .id_maps
        .iter()
        .map(|m| m.changes.len() as u64)
        .sum();
    let rows: u64 = restored.tables.iter().map(|t| t.rows).sum();
    rs.control
        .append_audit(&AuditEntry {
            at: roomshard::now_rfc3339(),
            actor: rs.config.actor.clone(),
            action: "room.seeded".to_string(),
            room: Some(room.clone()),
            detail: serde_json::json!({
                "rows": rows, "objects": done, "bytes": bytes, "seed": w.seed,
                "remapped_ids": remapped_ids,
            }),
        })
        .await?;
    Ok(Seeded {
        tables: restored.tables,
        remapped_ids,
        objects: done,
        bytes,
    })
}

/// Runs `seed`.
pub fn run(args: &SeedArgs) -> Result<ExitCode, CliError> {
    block_on(async {
        let home = open_home(&args.home, Create::Yes, None).await?;
        let w = workload(
            &args.room,
            args.messages,
            args.media_objects,
            args.media_bytes,
            args.seed,
        );
        let bars = Bars::new(&format!("seed {}", args.room));
        let seeded = seed_room(&home, &args.room, &w, &bars).await?;
        bars.finish();
        let rows: u64 = seeded.tables.iter().map(|t| t.rows).sum();
        if args.json {
            print_json(&serde_json::json!({
                "room": args.room.as_str(),
                "home": home.dir(),
                "rows": rows,
                "tables": seeded.tables,
                "remapped_ids": seeded.remapped_ids,
                "objects": seeded.objects,
                "media_bytes": seeded.bytes,
            }));
        } else {
            outln!(
                "seeded pooled room {} in {}: {rows} rows, {} objects ({})",
                args.room,
                home.dir().display(),
                seeded.objects,
                human_bytes(seeded.bytes)
            );
            for t in &seeded.tables {
                outln!("  table {}: {} rows", t.table, t.rows);
            }
            if seeded.remapped_ids > 0 {
                outln!(
                    "  {} ids renumbered (other rooms in the shared tables use them)",
                    seeded.remapped_ids
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
