//! Signed statements about bundles: the Sigstore v0.3 sidecar (docs/bundle-format.md §7) and
//! Sovereignty Receipts (§8), both DSSE envelopes around in-toto statements.
//!
//! The JSON types are `roomshard_verify::dsse`'s, so what is signed here is exactly what
//! `verify_sidecar` / `verify_receipt` parse.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use roomshard_verify::Manifest;
use roomshard_verify::dsse::{
    Envelope, EnvelopeSignature, ExportPredicate, PublicKeyIdentifier, ReceiptPredicate,
    SigstoreBundle, Statement, Subject, TimestampVerificationData, VerificationMaterial, pae,
};
use roomshard_verify::format::{
    EXPORT_PREDICATE_TYPE, IN_TOTO_PAYLOAD_TYPE, RECEIPT_PREDICATE_TYPE, SIGSTORE_BUNDLE_V03,
    STATEMENT_TYPE, hex, is_sha256_hex, to_canonical_json, validate_room_id, validate_timestamp,
};

use crate::error::BundleError;
use crate::signer::Signer;
use crate::writer::archive_file_name;

/// Signs `payload` as a DSSE envelope: the signature covers `pae(payload_type, payload)`, and
/// the signature's `keyid` is the signer's key id.
pub fn sign_envelope(
    payload_type: &str,
    payload: &[u8],
    signer: &dyn Signer,
) -> Result<Envelope, BundleError> {
    let sig = signer.sign(&pae(payload_type, payload))?;
    Ok(Envelope {
        payload: STANDARD.encode(payload),
        payload_type: payload_type.to_string(),
        signatures: vec![EnvelopeSignature {
            keyid: signer.key_id().to_string(),
            sig: STANDARD.encode(sig),
        }],
    })
}

fn statement(
    subject_name: String,
    sha256_hex: &str,
    predicate_type: &str,
    predicate: serde_json::Value,
) -> Statement {
    let mut digest = BTreeMap::new();
    digest.insert("sha256".to_string(), sha256_hex.to_string());
    Statement {
        statement_type: STATEMENT_TYPE.to_string(),
        subject: vec![Subject {
            name: subject_name,
            digest,
        }],
        predicate_type: predicate_type.to_string(),
        predicate,
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, BundleError> {
    serde_json::to_value(value)
        .map_err(|e| BundleError::invalid(format!("serialising predicate: {e}")))
}

/// Builds the sidecar `room_<id>.tar.zst.sigstore.json`: a Sigstore bundle v0.3 whose DSSE
/// envelope attests that the archive with SHA-256 `archive_sha256` holds the manifest with
/// SHA-256 `manifest_sha256` (hex). It lets anyone check an archive's digest offline with
/// Sigstore tooling, without decompressing it. The JSON is canonical (sorted keys, compact), so
/// it is as reproducible as the archive.
pub fn sidecar(
    archive_sha256: &[u8; 32],
    manifest: &Manifest,
    manifest_sha256: &str,
    signer: &dyn Signer,
) -> Result<Vec<u8>, BundleError> {
    if !is_sha256_hex(manifest_sha256) {
        return Err(BundleError::invalid(
            "manifest_sha256 is not 64 lowercase hex digits",
        ));
    }
    validate_room_id(&manifest.room.id).map_err(|e| BundleError::invalid(e.detail))?;
    let predicate = ExportPredicate {
        room: manifest.room.id.clone(),
        manifest_sha256: manifest_sha256.to_string(),
        created_at: manifest.created_at.clone(),
        format_version: manifest.format_version,
    };
    let statement = statement(
        archive_file_name(&manifest.room.id),
        &hex(archive_sha256),
        EXPORT_PREDICATE_TYPE,
        to_value(&predicate)?,
    );
    let envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, &to_canonical_json(&statement), signer)?;
    let bundle = SigstoreBundle {
        media_type: SIGSTORE_BUNDLE_V03.to_string(),
        verification_material: VerificationMaterial {
            public_key: PublicKeyIdentifier {
                hint: signer.key_id().to_string(),
            },
            tlog_entries: Vec::new(),
            timestamp_verification_data: Some(TimestampVerificationData::default()),
        },
        dsse_envelope: envelope,
    };
    Ok(to_canonical_json(&bundle))
}

/// Signs a Sovereignty Receipt: a DSSE envelope (JSON) around an in-toto statement with subject
/// `room_<room>` / `subject_digest_hex` (the manifest's or a shard's SHA-256) and `predicate`.
/// The predicate is checked first (room id, timestamps, `issued` ≤ `expires`, digests), so a
/// receipt that `verify_receipt` would refuse is never signed.
pub fn sign_receipt(
    predicate: &ReceiptPredicate,
    subject_digest_hex: &str,
    signer: &dyn Signer,
) -> Result<Vec<u8>, BundleError> {
    validate_room_id(&predicate.room).map_err(|e| BundleError::invalid(e.detail))?;
    for (what, ts) in [
        ("issued", &predicate.issued),
        ("expires", &predicate.expires),
    ] {
        validate_timestamp(ts)
            .map_err(|e| BundleError::invalid(format!("receipt {what}: {}", e.detail)))?;
    }
    if predicate.expires < predicate.issued {
        return Err(BundleError::invalid(format!(
            "receipt expires {} before it is issued {}",
            predicate.expires, predicate.issued
        )));
    }
    for (what, digest) in [
        ("manifest_sha256", predicate.manifest_sha256.as_str()),
        ("subject digest", subject_digest_hex),
    ] {
        if !is_sha256_hex(digest) {
            return Err(BundleError::invalid(format!(
                "receipt {what} is not 64 lowercase hex digits"
            )));
        }
    }
    let statement = statement(
        format!("room_{}", predicate.room),
        subject_digest_hex,
        RECEIPT_PREDICATE_TYPE,
        to_value(predicate)?,
    );
    let envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, &to_canonical_json(&statement), signer)?;
    Ok(to_canonical_json(&envelope))
}
