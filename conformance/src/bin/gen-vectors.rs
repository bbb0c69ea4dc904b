//! Regenerates `conformance/vectors/` (deterministic: the output is byte-identical every run).
//!
//! `cargo run -p roomshard-conformance --bin gen-vectors [DIR]`

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(roomshard_conformance::vectors_dir);
    let n = roomshard_conformance::vectors::write_all(&dir)?;
    println!("wrote {n} vectors to {}", dir.display());
    Ok(())
}
