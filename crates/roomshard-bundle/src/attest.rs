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
    let pending = sidecar_to_sign(archive_sha256, manifest, manifest_sha256)?;
    let signature = signer.sign(pending.message())?;
    Ok(pending.into_sidecar(signer.key_id(), &signature))
}

/// A DSSE payload waiting for its signature: for signers that are asynchronous (a KMS, the
/// [`KeyManager`](https://docs.rs/roomshard-core) of a running server). Sign
/// [`message`](Self::message) with the key, then assemble with [`into_envelope`](Self::into_envelope)
/// (receipts) or [`into_sidecar`](Self::into_sidecar) (export sidecars).
#[derive(Clone, Debug)]
pub struct PendingEnvelope {
    payload_type: &'static str,
    payload: Vec<u8>,
    message: Vec<u8>,
}

impl PendingEnvelope {
    fn new(payload_type: &'static str, payload: Vec<u8>) -> Self {
        let message = pae(payload_type, &payload);
        PendingEnvelope {
            payload_type,
            payload,
            message,
        }
    }

    /// The exact bytes to sign (the DSSE pre-authentication encoding of the payload).
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    fn envelope(&self, key_id: &str, signature: &[u8]) -> Envelope {
        Envelope {
            payload: STANDARD.encode(&self.payload),
            payload_type: self.payload_type.to_string(),
            signatures: vec![EnvelopeSignature {
                keyid: key_id.to_string(),
                sig: STANDARD.encode(signature),
            }],
        }
    }

    /// The DSSE envelope as canonical JSON (a receipt).
    pub fn into_envelope(self, key_id: &str, signature: &[u8]) -> Vec<u8> {
        to_canonical_json(&self.envelope(key_id, signature))
    }

    /// The Sigstore v0.3 bundle around the envelope, as canonical JSON (an export sidecar).
    pub fn into_sidecar(self, key_id: &str, signature: &[u8]) -> Vec<u8> {
        let bundle = SigstoreBundle {
            media_type: SIGSTORE_BUNDLE_V03.to_string(),
            verification_material: VerificationMaterial {
                public_key: PublicKeyIdentifier {
                    hint: key_id.to_string(),
                },
                tlog_entries: Vec::new(),
                timestamp_verification_data: Some(TimestampVerificationData::default()),
            },
            dsse_envelope: self.envelope(key_id, signature),
        };
        to_canonical_json(&bundle)
    }
}

/// The first step of [`sidecar`]: checks the inputs and builds the statement to sign.
pub fn sidecar_to_sign(
    archive_sha256: &[u8; 32],
    manifest: &Manifest,
    manifest_sha256: &str,
) -> Result<PendingEnvelope, BundleError> {
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
    Ok(PendingEnvelope::new(
        IN_TOTO_PAYLOAD_TYPE,
        to_canonical_json(&statement),
    ))
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
    let pending = receipt_to_sign(predicate, subject_digest_hex)?;
    let signature = signer.sign(pending.message())?;
    Ok(pending.into_envelope(signer.key_id(), &signature))
}

/// The first step of [`sign_receipt`]: checks the predicate and builds the statement to sign.
pub fn receipt_to_sign(
    predicate: &ReceiptPredicate,
    subject_digest_hex: &str,
) -> Result<PendingEnvelope, BundleError> {
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
    Ok(PendingEnvelope::new(
        IN_TOTO_PAYLOAD_TYPE,
        to_canonical_json(&statement),
    ))
}
