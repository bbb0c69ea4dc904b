//! The verification report: what was checked and found, serialisable to JSON for scripts, the
//! CLI's `--json` and the browser.

use crate::error::{Reason, VerifyError};
use crate::format::{Algorithm, RoomInfo};
use serde::Serialize;

/// The outcome of verifying one bundle. `valid` is true only when every check passed; otherwise
/// `error` holds the first rule broken (in the order of docs/bundle-format.md) and the other
/// fields hold whatever was learnt before or despite it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Whether the bundle is valid.
    pub valid: bool,
    /// The first rule broken, when not valid.
    pub error: Option<ReportError>,
    /// The key that signed the manifest, once its signature verified.
    pub signer: Option<SignerInfo>,
    /// The room, from the manifest.
    pub room: Option<RoomInfo>,
    /// `format_version`, from the manifest.
    pub format_version: Option<u32>,
    /// `created_at`, from the manifest.
    pub created_at: Option<String>,
    /// `source_instance`, from the manifest.
    pub source_instance: Option<String>,
    /// SHA-256 (hex) of `manifest.json`'s bytes, the digest receipts and sidecars bind to.
    pub manifest_sha256: Option<String>,
    /// SHA-256 (hex) of the whole compressed archive, when `VerifyOptions::hash_archive` is set.
    pub archive_sha256: Option<String>,
    /// Per-table row counts: expected (manifest) and found (`db.sql`).
    pub tables: Vec<TableResult>,
    /// Per-file results, in archive order, then files the manifest lists that never came.
    pub files: Vec<FileResult>,
    /// Compressed bytes consumed.
    pub compressed_bytes: u64,
    /// Decompressed (tar) bytes processed.
    pub decompressed_bytes: u64,
}

/// A refusal in report form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReportError {
    /// Stable reason code (see [`Reason::as_str`]).
    pub reason: String,
    /// Human detail.
    pub detail: String,
}

/// Which key signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignerInfo {
    /// Key id in the trusted set.
    pub key_id: String,
    /// Algorithm.
    pub algorithm: Algorithm,
}

/// Row counts of one table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableResult {
    /// Table name.
    pub name: String,
    /// `row_count` in the manifest, if listed there.
    pub expected_rows: Option<u64>,
    /// Rows in its COPY block, if one was seen.
    pub found_rows: Option<u64>,
}

/// What was found for one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileResult {
    /// Entry path.
    pub path: String,
    /// Size found (or listed, for a missing file).
    pub size: u64,
    /// SHA-256 found (hex), absent for a missing file.
    pub sha256: Option<String>,
    /// Verdict for this file.
    pub status: FileStatus,
}

/// Per-file verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Size and digest match the manifest.
    Ok,
    /// Size differs.
    SizeMismatch,
    /// Digest differs.
    DigestMismatch,
    /// Listed but absent.
    Missing,
    /// Present but not listed.
    Extra,
    /// Not compared (the manifest never arrived or was refused).
    Unchecked,
}

impl Report {
    /// The reason the bundle was refused, if it was.
    pub fn reason(&self) -> Option<Reason> {
        self.error
            .as_ref()
            .and_then(|e| Reason::from_code(&e.reason))
    }

    /// Records a refusal.
    pub fn fail(&mut self, error: &VerifyError) {
        self.valid = false;
        self.error = Some(ReportError {
            reason: error.reason.as_str().to_string(),
            detail: error.detail.clone(),
        });
    }

    /// The report as JSON (the CLI's `--json` output and the WASM API's return value).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }
}
