//! DSSE envelopes, in-toto statements, the Sigstore v0.3 sidecar and receipts
//! (docs/bundle-format.md §7–8).
//!
//! The types here are shared with the writer (`roomshard-bundle`), so what it signs is exactly
//! what this module checks. Parsing of the *external* wrappers (Sigstore bundle, DSSE envelope)
//! tolerates unknown fields, because other Sigstore tooling may add some; the roomshard
//! predicates are ours and reject unknown fields, like the manifest does.

use std::collections::BTreeMap;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{Reason, VerifyError};
use crate::format::{
    is_sha256_hex, validate_room_id, validate_timestamp, Algorithm, EXPORT_PREDICATE_TYPE,
    IN_TOTO_PAYLOAD_TYPE, RECEIPT_PREDICATE_TYPE, SIGSTORE_BUNDLE_V03, STATEMENT_TYPE,
};
use crate::keys::TrustedKeys;
use crate::report::Report;

/// A DSSE envelope (<https://github.com/secure-systems-lab/dsse>): a payload, its type, and
/// signatures over their PAE encoding. Receipts are bare envelopes; the sidecar embeds one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The payload, base64 (standard alphabet when written; either alphabet accepted).
    pub payload: String,
    /// Media type of the payload, bound into the signature by [`pae`].
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Signatures over `pae(payload_type, payload)`.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One DSSE signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Id of the signing key (may be empty in envelopes whose key is named elsewhere, as in a
    /// Sigstore bundle's `publicKey.hint`).
    #[serde(default)]
    pub keyid: String,
    /// The signature, base64: DER for ECDSA P-256, 64 raw bytes for Ed25519.
    pub sig: String,
}

/// An in-toto Statement v1: what is attested (`subject`) and the claim (`predicate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// The artefacts the statement is about, named and identified by digest.
    pub subject: Vec<Subject>,
    /// What kind of claim `predicate` is ([`EXPORT_PREDICATE_TYPE`] or [`RECEIPT_PREDICATE_TYPE`]).
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The claim itself; parsed into [`ExportPredicate`] or [`ReceiptPredicate`] by type.
    pub predicate: serde_json::Value,
}

/// An in-toto subject: a name and its digests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// File or object name.
    pub name: String,
    /// Digests by algorithm name (`sha256` → lowercase hex).
    pub digest: BTreeMap<String, String>,
}

/// A Sigstore bundle v0.3 as roomshard writes it: a public-key hint and a DSSE envelope, no
/// transparency log entries (keys are pinned, not Fulcio certificates).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigstoreBundle {
    /// Always [`SIGSTORE_BUNDLE_V03`].
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// How to find the verification key.
    #[serde(rename = "verificationMaterial")]
    pub verification_material: VerificationMaterial,
    /// The signed statement.
    #[serde(rename = "dsseEnvelope")]
    pub dsse_envelope: Envelope,
}

/// The `verificationMaterial` of a Sigstore bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationMaterial {
    /// Names the key in the verifier's trusted set.
    #[serde(rename = "publicKey")]
    pub public_key: PublicKeyIdentifier,
    /// Transparency log entries (roomshard writes none; kept opaque when read).
    #[serde(rename = "tlogEntries", default)]
    pub tlog_entries: Vec<serde_json::Value>,
    /// Timestamp evidence (roomshard writes an empty list; kept opaque when read).
    #[serde(
        rename = "timestampVerificationData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp_verification_data: Option<TimestampVerificationData>,
}

/// `verificationMaterial.publicKey`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyIdentifier {
    /// The key id (as in the trusted key set).
    pub hint: String,
}

/// `verificationMaterial.timestampVerificationData`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimestampVerificationData {
    /// RFC 3161 timestamps (opaque here).
    #[serde(rename = "rfc3161Timestamps", default)]
    pub rfc3161_timestamps: Vec<serde_json::Value>,
}

/// The sidecar's predicate ([`EXPORT_PREDICATE_TYPE`]): binds the archive digest (the subject)
/// to the manifest inside it, so the sidecar speaks for the same export as the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportPredicate {
    /// Room id.
    pub room: String,
    /// SHA-256 (hex) of `manifest.json`'s bytes.
    pub manifest_sha256: String,
    /// The manifest's `created_at`; key validity is judged at this time.
    pub created_at: String,
    /// The manifest's `format_version`.
    pub format_version: u32,
}

/// A Sovereignty Receipt's predicate ([`RECEIPT_PREDICATE_TYPE`]): where a room's data lives and
/// under which key, for how long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptPredicate {
    /// Room id.
    pub room: String,
    /// Storage profile name.
    pub profile: String,
    /// Storage region.
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// KMS key alias protecting the data.
    pub key_alias: String,
    /// SHA-256 (hex) of the manifest the receipt speaks for.
    pub manifest_sha256: String,
    /// Issue time; key validity is judged at this time.
    pub issued: String,
    /// The receipt is refused after this time.
    pub expires: String,
    /// Monotonically increasing per room, so a newer receipt supersedes an older one.
    pub version: u64,
    /// The issuer's audit-log head when the receipt was issued (absent in receipts from before
    /// it was added): whoever holds the receipt can later check that the host's log still
    /// contains that entry, which reveals a log whose newest entries were cut off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditAnchor>,
}

/// A point in an audit hash chain: entry `seq` had `hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditAnchor {
    /// The entry's position in the chain, from 1.
    pub seq: u64,
    /// Its hash (lowercase hex SHA-256).
    pub hash: String,
}

/// What a verified sidecar says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarInfo {
    /// Key that signed the sidecar.
    pub key_id: String,
    /// Subject name (the archive's file name).
    pub subject_name: String,
}

/// A receipt whose signature, key and expiry were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedReceipt {
    /// Key that signed the receipt.
    pub key_id: String,
    /// The whole statement (subject included).
    pub statement: Statement,
    /// The parsed predicate.
    pub predicate: ReceiptPredicate,
}

/// DSSE v1 Pre-Authentication Encoding: `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`,
/// lengths in ASCII decimal. Signatures cover this, never the bare payload, so a payload cannot be
/// reinterpreted under another type.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let head = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    );
    let mut out = Vec::with_capacity(head.len() + payload.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(payload);
    out
}

const INDIFFERENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const B64_STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, INDIFFERENT);
const B64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, INDIFFERENT);

/// Decodes base64 in either alphabet, padded or not (DSSE allows both alphabets; protobuf JSON
/// emitters differ on padding).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    B64_STANDARD
        .decode(s)
        .ok()
        .or_else(|| B64_URL_SAFE.decode(s).ok())
}

/// The algorithm a key id is registered with, so an Ed25519 key may sign sidecars and receipts
/// too; an unknown id falls back to the default and `TrustedKeys::verify` reports `unknown_key`.
fn key_algorithm(keys: &TrustedKeys, key_id: &str) -> Algorithm {
    keys.keys()
        .find(|k| k.id == key_id)
        .map(|k| k.alg)
        .unwrap_or(Algorithm::EcdsaP256Sha256)
}

/// The parts of an envelope both sidecars and receipts check the same way.
struct OpenedEnvelope {
    statement: Statement,
    pae: Vec<u8>,
    keyid: String,
    sig: Vec<u8>,
}

/// Checks an envelope's type, decodes its single signature and its statement, and checks the
/// statement's `_type` and `predicateType`. `bad` is the reason for any structural fault.
fn open_envelope(
    env: &Envelope,
    predicate_type: &str,
    bad: Reason,
    what: &str,
) -> Result<OpenedEnvelope, VerifyError> {
    let err = |d: String| VerifyError::new(bad, format!("{what}: {d}"));
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(err(format!(
            "payloadType is {:?}, not {IN_TOTO_PAYLOAD_TYPE:?}",
            env.payload_type
        )));
    }
    if env.signatures.len() != 1 {
        return Err(err(format!(
            "expected exactly one signature, found {}",
            env.signatures.len()
        )));
    }
    let signature = &env.signatures[0];
    let sig = match decode_base64(&signature.sig) {
        Some(s) if !s.is_empty() => s,
        _ => return Err(err("signature is not base64".to_string())),
    };
    let payload = match decode_base64(&env.payload) {
        Some(p) => p,
        None => return Err(err("payload is not base64".to_string())),
    };
    let statement: Statement = serde_json::from_slice(&payload)
        .map_err(|e| err(format!("payload is not an in-toto statement: {e}")))?;
    if statement.statement_type != STATEMENT_TYPE {
        return Err(err(format!(
            "statement _type is {:?}, not {STATEMENT_TYPE:?}",
            statement.statement_type
        )));
    }
    if statement.predicate_type != predicate_type {
        return Err(err(format!(
            "predicateType is {:?}, not {predicate_type:?}",
            statement.predicate_type
        )));
    }
    if statement.subject.len() != 1 {
        return Err(err(format!(
            "expected exactly one subject, found {}",
            statement.subject.len()
        )));
    }
    Ok(OpenedEnvelope {
        pae: pae(&env.payload_type, &payload),
        statement,
        keyid: signature.keyid.clone(),
        sig,
    })
}

/// Verifies a sidecar (`room_<id>.tar.zst.sigstore.json`, docs/bundle-format.md §7) against the
/// report of verifying its archive. The report must carry `archive_sha256` (verify with
/// `VerifyOptions::hash_archive`), because the sidecar attests exactly that digest.
///
/// Checks, in order: the Sigstore bundle and DSSE structure (`sidecar_invalid`), the subject's
/// digest and the predicate's manifest digest against the report (`sidecar_digest_mismatch`),
/// then the signature with the key named by `publicKey.hint` at the predicate's `created_at`
/// (`sidecar_signature_invalid` or a key-set reason).
pub fn verify_sidecar(
    sidecar_json: &[u8],
    report: &Report,
    keys: &TrustedKeys,
) -> Result<SidecarInfo, VerifyError> {
    let invalid = |d: String| VerifyError::new(Reason::SidecarInvalid, format!("sidecar: {d}"));
    let archive_sha256 = match &report.archive_sha256 {
        Some(d) => d,
        None => {
            return Err(invalid(
                "the archive's SHA-256 is unknown; verify the archive with hash_archive set \
                 (VerifyOptions::hash_archive) before checking its sidecar"
                    .to_string(),
            ))
        }
    };
    let room_id = match &report.room {
        Some(r) => &r.id,
        None => {
            return Err(invalid(
                "the archive's room is unknown (its manifest was not read), so the sidecar's \
                 subject cannot be checked"
                    .to_string(),
            ))
        }
    };
    let bundle: SigstoreBundle = serde_json::from_slice(sidecar_json)
        .map_err(|e| invalid(format!("not a Sigstore bundle: {e}")))?;
    if bundle.media_type != SIGSTORE_BUNDLE_V03 {
        return Err(invalid(format!(
            "mediaType is {:?}, not {SIGSTORE_BUNDLE_V03:?}",
            bundle.media_type
        )));
    }
    let key_id = bundle.verification_material.public_key.hint.clone();
    if key_id.is_empty() {
        return Err(invalid(
            "verificationMaterial.publicKey.hint is empty".to_string(),
        ));
    }
    let opened = open_envelope(
        &bundle.dsse_envelope,
        EXPORT_PREDICATE_TYPE,
        Reason::SidecarInvalid,
        "sidecar",
    )?;
    if !opened.keyid.is_empty() && opened.keyid != key_id {
        return Err(invalid(format!(
            "signature keyid {:?} differs from publicKey.hint {key_id:?}",
            opened.keyid
        )));
    }
    let predicate: ExportPredicate = serde_json::from_value(opened.statement.predicate.clone())
        .map_err(|e| invalid(format!("predicate: {e}")))?;
    validate_timestamp(&predicate.created_at)
        .map_err(|e| invalid(format!("predicate.created_at: {}", e.detail)))?;

    let subject = &opened.statement.subject[0];
    let expected_name = format!("room_{room_id}.tar.zst");
    if subject.name != expected_name {
        return Err(invalid(format!(
            "subject name is {:?}, expected {expected_name:?}",
            subject.name
        )));
    }
    if predicate.room != *room_id {
        return Err(invalid(format!(
            "predicate names room {:?}, the archive holds room {room_id:?}",
            predicate.room
        )));
    }
    let subject_digest = match subject.digest.get("sha256") {
        Some(d) => d,
        None => return Err(invalid("subject has no sha256 digest".to_string())),
    };
    if !subject_digest.eq_ignore_ascii_case(archive_sha256) {
        return Err(VerifyError::new(
            Reason::SidecarDigestMismatch,
            format!(
                "sidecar: subject sha256 {subject_digest} is not the archive's SHA-256 {archive_sha256}"
            ),
        ));
    }
    let manifest_matches = match &report.manifest_sha256 {
        Some(m) => predicate.manifest_sha256.eq_ignore_ascii_case(m),
        None => false,
    };
    if !manifest_matches {
        return Err(VerifyError::new(
            Reason::SidecarDigestMismatch,
            format!(
                "sidecar: predicate manifest_sha256 {} is not the archive's manifest.json SHA-256 {}",
                predicate.manifest_sha256,
                report.manifest_sha256.as_deref().unwrap_or("(unknown)")
            ),
        ));
    }
    if let Some(created_at) = &report.created_at {
        if predicate.created_at != *created_at {
            return Err(invalid(format!(
                "predicate created_at {} differs from the manifest's {created_at}",
                predicate.created_at
            )));
        }
    }
    if let Some(version) = report.format_version {
        if predicate.format_version != version {
            return Err(invalid(format!(
                "predicate format_version {} differs from the manifest's {version}",
                predicate.format_version
            )));
        }
    }
    let alg = key_algorithm(keys, &key_id);
    keys.verify(
        &key_id,
        alg,
        &predicate.created_at,
        &opened.pae,
        &opened.sig,
        Reason::SidecarSignatureInvalid,
    )?;
    Ok(SidecarInfo {
        key_id,
        subject_name: subject.name.clone(),
    })
}

/// A receipt's predicate, **without** checking its signature: for a caller that verifies it next
/// with [`verify_receipt`] at a time the receipt names (its own `issued`, to check a receipt that
/// has since expired), or that reads a field of a receipt it recorded itself.
pub fn receipt_predicate_unverified(envelope_json: &[u8]) -> Result<ReceiptPredicate, VerifyError> {
    open_receipt(envelope_json).map(|(_, predicate)| predicate)
}

/// The opened envelope of a receipt and its parsed predicate; nothing checked but structure.
fn open_receipt(envelope_json: &[u8]) -> Result<(OpenedEnvelope, ReceiptPredicate), VerifyError> {
    let invalid = |d: String| VerifyError::new(Reason::ReceiptInvalid, format!("receipt: {d}"));
    let env: Envelope = serde_json::from_slice(envelope_json)
        .map_err(|e| invalid(format!("not a DSSE envelope: {e}")))?;
    let opened = open_envelope(
        &env,
        RECEIPT_PREDICATE_TYPE,
        Reason::ReceiptInvalid,
        "receipt",
    )?;
    let predicate = serde_json::from_value(opened.statement.predicate.clone())
        .map_err(|e| invalid(format!("predicate: {e}")))?;
    Ok((opened, predicate))
}

/// Verifies a Sovereignty Receipt (docs/bundle-format.md §8): a DSSE envelope around an in-toto
/// statement with a [`ReceiptPredicate`]. `now` is a format timestamp (`YYYY-MM-DDTHH:MM:SSZ`)
/// supplied by the caller, so the check is reproducible and needs no clock.
///
/// Structure faults are `receipt_invalid`; the signature is checked with the envelope
/// signature's `keyid` at the predicate's `issued` time (`receipt_signature_invalid` or a key-set
/// reason); a genuine receipt past `expires` is `receipt_expired`.
pub fn verify_receipt(
    envelope_json: &[u8],
    keys: &TrustedKeys,
    now: &str,
) -> Result<VerifiedReceipt, VerifyError> {
    let invalid = |d: String| VerifyError::new(Reason::ReceiptInvalid, format!("receipt: {d}"));
    validate_timestamp(now).map_err(|e| invalid(format!("`now`: {}", e.detail)))?;
    let (opened, predicate) = open_receipt(envelope_json)?;
    if opened.keyid.is_empty() {
        return Err(invalid("signature has no keyid".to_string()));
    }
    validate_room_id(&predicate.room).map_err(|e| invalid(e.detail))?;
    validate_timestamp(&predicate.issued).map_err(|e| invalid(format!("issued: {}", e.detail)))?;
    validate_timestamp(&predicate.expires)
        .map_err(|e| invalid(format!("expires: {}", e.detail)))?;
    if predicate.expires < predicate.issued {
        return Err(invalid(format!(
            "expires {} is before issued {}",
            predicate.expires, predicate.issued
        )));
    }
    if !is_sha256_hex(&predicate.manifest_sha256) {
        return Err(invalid(
            "manifest_sha256 is not 64 lowercase hex digits".to_string(),
        ));
    }
    if let Some(anchor) = &predicate.audit {
        if anchor.seq == 0 || !is_sha256_hex(&anchor.hash) {
            return Err(invalid(
                "audit anchor needs a seq from 1 and a hash of 64 lowercase hex digits".to_string(),
            ));
        }
    }
    let subject = &opened.statement.subject[0];
    let expected_name = format!("room_{}", predicate.room);
    if subject.name != expected_name {
        return Err(invalid(format!(
            "subject name is {:?}, expected {expected_name:?}",
            subject.name
        )));
    }
    match subject.digest.get("sha256") {
        Some(d) if is_sha256_hex(d) => {}
        _ => {
            return Err(invalid(
                "subject has no sha256 digest of 64 lowercase hex digits".to_string(),
            ))
        }
    }
    let alg = key_algorithm(keys, &opened.keyid);
    keys.verify(
        &opened.keyid,
        alg,
        &predicate.issued,
        &opened.pae,
        &opened.sig,
        Reason::ReceiptSignatureInvalid,
    )?;
    if now > predicate.expires.as_str() {
        return Err(VerifyError::new(
            Reason::ReceiptExpired,
            format!("receipt expired {}, now is {now}", predicate.expires),
        ));
    }
    Ok(VerifiedReceipt {
        key_id: opened.keyid,
        statement: opened.statement,
        predicate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{hex, KeySet, RoomInfo, TrustedKey};
    use base64::engine::general_purpose::STANDARD;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    const KEY_ID: &str = "p256-test";

    fn signing_key() -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_bytes(&[7u8; 32]).expect("valid scalar")
    }

    fn keys_with(not_after: Option<&str>, revoked: bool) -> TrustedKeys {
        let pem = signing_key()
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem");
        TrustedKeys::new(KeySet {
            keys: vec![TrustedKey {
                id: KEY_ID.to_string(),
                alg: Algorithm::EcdsaP256Sha256,
                public_key_pem: pem,
                not_before: Some("2026-01-01T00:00:00Z".to_string()),
                not_after: not_after.map(str::to_string),
                revoked,
            }],
        })
        .expect("key set")
    }

    fn keys() -> TrustedKeys {
        keys_with(Some("2027-01-01T00:00:00Z"), false)
    }

    fn sign_envelope(statement: &Statement, keyid: &str) -> Envelope {
        let payload = serde_json::to_vec(statement).expect("json");
        let sig: p256::ecdsa::Signature = signing_key().sign(&pae(IN_TOTO_PAYLOAD_TYPE, &payload));
        Envelope {
            payload: STANDARD.encode(&payload),
            payload_type: IN_TOTO_PAYLOAD_TYPE.to_string(),
            signatures: vec![EnvelopeSignature {
                keyid: keyid.to_string(),
                sig: STANDARD.encode(sig.to_der().as_bytes()),
            }],
        }
    }

    const ARCHIVE: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const MANIFEST: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn report() -> Report {
        Report {
            valid: true,
            room: Some(RoomInfo {
                id: "general".to_string(),
                name: None,
            }),
            format_version: Some(1),
            created_at: Some("2026-11-22T10:00:00Z".to_string()),
            manifest_sha256: Some(MANIFEST.to_string()),
            archive_sha256: Some(ARCHIVE.to_string()),
            ..Report::default()
        }
    }

    fn export_statement(archive: &str, manifest: &str) -> Statement {
        let mut digest = BTreeMap::new();
        digest.insert("sha256".to_string(), archive.to_string());
        Statement {
            statement_type: STATEMENT_TYPE.to_string(),
            subject: vec![Subject {
                name: "room_general.tar.zst".to_string(),
                digest,
            }],
            predicate_type: EXPORT_PREDICATE_TYPE.to_string(),
            predicate: serde_json::to_value(ExportPredicate {
                room: "general".to_string(),
                manifest_sha256: manifest.to_string(),
                created_at: "2026-11-22T10:00:00Z".to_string(),
                format_version: 1,
            })
            .expect("json"),
        }
    }

    fn sidecar(statement: &Statement) -> Vec<u8> {
        let bundle = SigstoreBundle {
            media_type: SIGSTORE_BUNDLE_V03.to_string(),
            verification_material: VerificationMaterial {
                public_key: PublicKeyIdentifier {
                    hint: KEY_ID.to_string(),
                },
                tlog_entries: Vec::new(),
                timestamp_verification_data: Some(TimestampVerificationData::default()),
            },
            dsse_envelope: sign_envelope(statement, KEY_ID),
        };
        serde_json::to_vec(&bundle).expect("json")
    }

    #[test]
    fn pae_known_answer() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn sigstore_bundle_json_field_names() {
        let json: serde_json::Value =
            serde_json::from_slice(&sidecar(&export_statement(ARCHIVE, MANIFEST))).expect("json");
        assert_eq!(json["mediaType"], SIGSTORE_BUNDLE_V03);
        assert_eq!(json["verificationMaterial"]["publicKey"]["hint"], KEY_ID);
        assert_eq!(
            json["verificationMaterial"]["tlogEntries"],
            serde_json::json!([])
        );
        assert_eq!(
            json["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"],
            serde_json::json!([])
        );
        assert_eq!(json["dsseEnvelope"]["payloadType"], IN_TOTO_PAYLOAD_TYPE);
        let payload =
            decode_base64(json["dsseEnvelope"]["payload"].as_str().expect("str")).expect("b64");
        let stmt: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(stmt["_type"], STATEMENT_TYPE);
        assert_eq!(stmt["predicateType"], EXPORT_PREDICATE_TYPE);
    }

    #[test]
    fn sidecar_passes() {
        let info = verify_sidecar(
            &sidecar(&export_statement(ARCHIVE, MANIFEST)),
            &report(),
            &keys(),
        )
        .expect("valid sidecar");
        assert_eq!(info.key_id, KEY_ID);
        assert_eq!(info.subject_name, "room_general.tar.zst");
    }

    #[test]
    fn sidecar_needs_archive_digest() {
        let mut r = report();
        r.archive_sha256 = None;
        let err = verify_sidecar(&sidecar(&export_statement(ARCHIVE, MANIFEST)), &r, &keys())
            .expect_err("no digest");
        assert_eq!(err.reason, Reason::SidecarInvalid);
        assert!(err.detail.contains("hash_archive"), "{}", err.detail);
    }

    #[test]
    fn sidecar_digest_mismatches() {
        let other = hex(&[1u8; 32]);
        let err = verify_sidecar(
            &sidecar(&export_statement(&other, MANIFEST)),
            &report(),
            &keys(),
        )
        .expect_err("archive digest");
        assert_eq!(err.reason, Reason::SidecarDigestMismatch);
        let err = verify_sidecar(
            &sidecar(&export_statement(ARCHIVE, &other)),
            &report(),
            &keys(),
        )
        .expect_err("manifest digest");
        assert_eq!(err.reason, Reason::SidecarDigestMismatch);
    }

    #[test]
    fn sidecar_bad_signature_and_structure() {
        // Signature over a different statement, spliced into this one.
        let good = sidecar(&export_statement(ARCHIVE, MANIFEST));
        let mut bundle: SigstoreBundle = serde_json::from_slice(&good).expect("json");
        let other = sign_envelope(&export_statement(ARCHIVE, &hex(&[2u8; 32])), KEY_ID);
        bundle.dsse_envelope.signatures = other.signatures;
        let err = verify_sidecar(
            &serde_json::to_vec(&bundle).expect("json"),
            &report(),
            &keys(),
        )
        .expect_err("bad sig");
        assert_eq!(err.reason, Reason::SidecarSignatureInvalid);

        let mut wrong_type = bundle.clone();
        wrong_type.dsse_envelope.payload_type = "text/plain".to_string();
        let err = verify_sidecar(
            &serde_json::to_vec(&wrong_type).expect("json"),
            &report(),
            &keys(),
        )
        .expect_err("payload type");
        assert_eq!(err.reason, Reason::SidecarInvalid);

        let mut wrong_media = bundle;
        wrong_media.media_type = "application/json".to_string();
        let err = verify_sidecar(
            &serde_json::to_vec(&wrong_media).expect("json"),
            &report(),
            &keys(),
        )
        .expect_err("media type");
        assert_eq!(err.reason, Reason::SidecarInvalid);

        let err = verify_sidecar(b"{}", &report(), &keys()).expect_err("garbage");
        assert_eq!(err.reason, Reason::SidecarInvalid);
    }

    #[test]
    fn sidecar_key_reasons() {
        let json = sidecar(&export_statement(ARCHIVE, MANIFEST));
        let err = verify_sidecar(&json, &report(), &keys_with(None, true)).expect_err("revoked");
        assert_eq!(err.reason, Reason::KeyRevoked);
        let err = verify_sidecar(
            &json,
            &report(),
            &keys_with(Some("2026-06-01T00:00:00Z"), false),
        )
        .expect_err("expired");
        assert_eq!(err.reason, Reason::KeyExpired);
    }

    #[test]
    fn validity_judged_at_the_current_time_refuses_a_retired_key_that_backdates() {
        let json = sidecar(&export_statement(ARCHIVE, MANIFEST));
        // Valid at its own signing time, so accepted by default...
        verify_sidecar(&json, &report(), &keys()).expect("valid at signing time");
        // ...but the key retired on 2027-01-01: judged today, it no longer vouches.
        let today = keys().judged_at("2027-03-01T00:00:00Z").expect("timestamp");
        assert_eq!(today.validity_time(), Some("2027-03-01T00:00:00Z"));
        let err = verify_sidecar(&json, &report(), &today).expect_err("retired key");
        assert_eq!(err.reason, Reason::KeyExpired);
        assert!(
            err.detail.contains("judged at 2027-03-01T00:00:00Z"),
            "{}",
            err.detail
        );
        let within = keys().judged_at("2026-12-01T00:00:00Z").expect("timestamp");
        verify_sidecar(&json, &report(), &within).expect("valid today");
        assert_eq!(
            keys()
                .judged_at("2026-02-31T00:00:00Z")
                .expect_err("no such day")
                .reason,
            Reason::KeySetInvalid
        );
    }

    fn receipt_statement(issued: &str, expires: &str) -> Statement {
        let mut digest = BTreeMap::new();
        digest.insert("sha256".to_string(), MANIFEST.to_string());
        Statement {
            statement_type: STATEMENT_TYPE.to_string(),
            subject: vec![Subject {
                name: "room_general".to_string(),
                digest,
            }],
            predicate_type: RECEIPT_PREDICATE_TYPE.to_string(),
            predicate: serde_json::to_value(ReceiptPredicate {
                room: "general".to_string(),
                profile: "eu-sovereign".to_string(),
                region: "eu-central-1".to_string(),
                bucket: "rooms-eu".to_string(),
                key_alias: "alias/roomshard-general".to_string(),
                manifest_sha256: MANIFEST.to_string(),
                issued: issued.to_string(),
                expires: expires.to_string(),
                version: 3,
                audit: None,
            })
            .expect("json"),
        }
    }

    fn receipt(issued: &str, expires: &str) -> Vec<u8> {
        serde_json::to_vec(&sign_envelope(&receipt_statement(issued, expires), KEY_ID))
            .expect("json")
    }

    #[test]
    fn receipt_passes() {
        let r = verify_receipt(
            &receipt("2026-11-22T10:00:00Z", "2026-12-22T10:00:00Z"),
            &keys(),
            "2026-12-01T00:00:00Z",
        )
        .expect("valid receipt");
        assert_eq!(r.key_id, KEY_ID);
        assert_eq!(r.predicate.version, 3);
        assert_eq!(r.predicate.room, "general");
        assert_eq!(r.statement.subject[0].name, "room_general");
    }

    #[test]
    fn receipt_expired() {
        let err = verify_receipt(
            &receipt("2026-11-22T10:00:00Z", "2026-12-22T10:00:00Z"),
            &keys(),
            "2026-12-22T10:00:01Z",
        )
        .expect_err("expired");
        assert_eq!(err.reason, Reason::ReceiptExpired);
        // At exactly `expires` it is still valid.
        verify_receipt(
            &receipt("2026-11-22T10:00:00Z", "2026-12-22T10:00:00Z"),
            &keys(),
            "2026-12-22T10:00:00Z",
        )
        .expect("valid at expiry instant");
    }

    #[test]
    fn receipt_tampered() {
        let json = receipt("2026-11-22T10:00:00Z", "2026-12-22T10:00:00Z");
        let mut env: Envelope = serde_json::from_slice(&json).expect("json");
        // Extend the expiry without re-signing.
        let forged = receipt_statement("2026-11-22T10:00:00Z", "2030-01-01T00:00:00Z");
        env.payload = STANDARD.encode(serde_json::to_vec(&forged).expect("json"));
        let err = verify_receipt(
            &serde_json::to_vec(&env).expect("json"),
            &keys(),
            "2029-01-01T00:00:00Z",
        )
        .expect_err("tampered");
        assert_eq!(err.reason, Reason::ReceiptSignatureInvalid);

        let mut env2: Envelope = serde_json::from_slice(&json).expect("json");
        env2.signatures[0].keyid = "p256-other".to_string();
        let err = verify_receipt(
            &serde_json::to_vec(&env2).expect("json"),
            &keys(),
            "2026-12-01T00:00:00Z",
        )
        .expect_err("unknown key");
        assert_eq!(err.reason, Reason::UnknownKey);

        let err =
            verify_receipt(b"not json", &keys(), "2026-12-01T00:00:00Z").expect_err("garbage");
        assert_eq!(err.reason, Reason::ReceiptInvalid);
        let err = verify_receipt(&json, &keys(), "yesterday").expect_err("bad now");
        assert_eq!(err.reason, Reason::ReceiptInvalid);
    }

    #[test]
    fn base64_either_alphabet() {
        assert_eq!(decode_base64("+/8=").expect("std"), vec![0xfb, 0xff]);
        assert_eq!(decode_base64("-_8").expect("url"), vec![0xfb, 0xff]);
        assert!(decode_base64("!!").is_none());
    }
}
