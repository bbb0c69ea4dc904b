//! DSSE envelopes, in-toto statements, the Sigstore v0.3 sidecar and receipts
//! (docs/bundle-format.md §7–8).

use crate::error::{Reason, VerifyError};
use crate::keys::TrustedKeys;
use crate::report::Report;

/// What a verified sidecar says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarInfo {
    /// Key that signed the sidecar.
    pub key_id: String,
    /// Subject name (the archive's file name).
    pub subject_name: String,
}

/// Verifies a sidecar against a finished report (which must carry `archive_sha256`).
pub fn verify_sidecar(
    sidecar_json: &[u8],
    report: &Report,
    keys: &TrustedKeys,
) -> Result<SidecarInfo, VerifyError> {
    let _ = (sidecar_json, report, keys);
    Err(VerifyError::new(Reason::SidecarInvalid, "not implemented yet"))
}

/// Verifies a receipt envelope; `now` is a format timestamp.
pub fn verify_receipt(
    envelope_json: &[u8],
    keys: &TrustedKeys,
    now: &str,
) -> Result<serde_json::Value, VerifyError> {
    let _ = (envelope_json, keys, now);
    Err(VerifyError::new(Reason::ReceiptInvalid, "not implemented yet"))
}
