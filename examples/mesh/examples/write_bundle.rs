//! Writes `room_<id>.tar.zst` and `trusted-keys.json` for a small Mesh room into a directory:
//! `cargo run -p roomshard-example-mesh --example write_bundle -- OUT_DIR [MESSAGES]`.

use std::error::Error;
use std::fs;
use std::io::BufWriter;
use std::path::PathBuf;

use roomshard_bundle::{LocalP256Signer, archive_file_name};
use roomshard_example_mesh::{Media, Workload};
use roomshard_verify::KeySet;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: write_bundle OUT_DIR [MESSAGES]")?,
    );
    let messages = args.next().map(|m| m.parse()).transpose()?.unwrap_or(1000);
    let w = Workload {
        messages,
        media: Media::Count {
            count: 8,
            min: 64 * 1024,
            max: 1024 * 1024,
            compressible_percent: 25,
        },
        ..Workload::quick()
    };
    fs::create_dir_all(&dir)?;
    let signer = LocalP256Signer::generate(None)?;
    let archive = dir.join(archive_file_name(&w.room_id));
    let spool = tempfile_in(&dir)?;
    let out = BufWriter::new(fs::File::create(&archive)?);
    let done = w.write_bundle(out, &spool.0, &signer, "2026-06-01T12:00:00Z")?;
    done.out
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    let keys = KeySet {
        keys: vec![signer.trusted_key(None, None)?],
    };
    fs::write(
        dir.join("trusted-keys.json"),
        serde_json::to_vec_pretty(&keys)?,
    )?;
    println!("{}", archive.display());
    println!("manifest sha256 {}", done.manifest_sha256);
    Ok(())
}

/// A spool file for `db.sql`, removed when dropped.
struct Spool(fs::File, PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.1);
    }
}

fn tempfile_in(dir: &std::path::Path) -> std::io::Result<Spool> {
    let path = dir.join(".db.sql.spool");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    Ok(Spool(file, path))
}
