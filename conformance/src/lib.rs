//! roomshard's conformance material: the bundle format's golden vectors (shared by the native
//! verifier, the WASM build and any third-party implementation) and, as providers land, the
//! behaviour suite every `ShardStore`, `MediaStore`, `KeyManager` and `Indexer` must pass.
#![forbid(unsafe_code)]

pub mod memory;
pub mod suite;
pub mod vectors;

/// Path of the committed vectors directory.
pub fn vectors_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}
