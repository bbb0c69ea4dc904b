//! Writes roomshard bundles (`room_<id>.tar.zst`, docs/bundle-format.md), their Sigstore
//! sidecars and Sovereignty Receipts.
//!
//! Everything streams: `db.sql` is produced row by row ([`DbSqlWriter`]), entries are hashed as
//! they are copied into the archive ([`BundleWriter`]), and the manifest — which needs every
//! hash — is written last and signed. Nothing is buffered beyond one entry's copy buffer and the
//! list of (path, size, digest), so a room of any size exports in constant memory.
//!
//! Validation rules, JSON types and the `db.sql` skeleton come from `roomshard-verify`, so what
//! this crate writes is what the verifier accepts.
//!
//! ```no_run
//! use roomshard_bundle::{BundleMeta, BundleWriter, DbSqlWriter, HashingWriter, LocalP256Signer, WriterOptions};
//! # fn demo(tables: Vec<roomshard_verify::format::TableDescriptor>) -> Result<(), Box<dyn std::error::Error>> {
//! let signer = LocalP256Signer::generate(None)?;
//! // 1. db.sql, to a buffer (or a temporary file for large rooms).
//! let mut sql = DbSqlWriter::new(Vec::new(), "general", &tables)?;
//! // … sql.begin_table("messages")?; sql.write_row(&[…])?; …
//! let (sql_bytes, row_counts) = sql.finish()?;
//! // 2. The archive, hashed while written so the sidecar needs no second pass.
//! let out = HashingWriter::new(std::fs::File::create("room_general.tar.zst")?);
//! let meta = BundleMeta {
//!     room: roomshard_verify::format::RoomInfo { id: "general".into(), name: None },
//!     source_instance: "mesh.example.org".into(),
//!     schema_version: "mesh-1".into(),
//!     created_at: "2026-11-22T10:00:00Z".into(),
//!     tables,
//!     exporter: None,
//! };
//! let mut writer = BundleWriter::new(out, meta, WriterOptions::default())?;
//! writer.add_db_sql(sql_bytes.len() as u64, sql_bytes.as_slice())?;
//! writer.add_media("att/1.png", 3, &b"png"[..])?;
//! let done = writer.finish(&row_counts, &signer)?;
//! let (_file, archive_sha256) = done.out.into_parts();
//! let sidecar = roomshard_bundle::sidecar(&archive_sha256, &done.manifest, &done.manifest_sha256, &signer)?;
//! std::fs::write("room_general.tar.zst.sigstore.json", sidecar)?;
//! # Ok(()) }
//! ```

mod attest;
mod error;
mod frames;
mod signer;
mod sql;
mod writer;

pub use attest::{
    PendingEnvelope, receipt_to_sign, sidecar, sidecar_to_sign, sign_envelope, sign_receipt,
};
pub use error::BundleError;
pub use frames::FRAME_BYTES;
pub use p256::elliptic_curve::zeroize::Zeroizing;
pub use signer::{
    LocalEd25519Signer, LocalP256Signer, Signer, key_id_for_spki_der, key_id_for_spki_pem,
};
pub use sql::{CopyValue, DbSqlWriter, encode_copy_row};
pub use writer::{
    BundleMeta, BundleWriter, Finished, HashingWriter, PendingSignature, WriterOptions,
    archive_file_name, default_exporter,
};
