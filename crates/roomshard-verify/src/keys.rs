//! The trusted key set (docs/bundle-format.md §6): parsing, key selection with validity and
//! revocation, and signature checks for both algorithms.

use crate::error::{Reason, VerifyError};
use crate::format::{validate_key_id, validate_timestamp, Algorithm, KeySet, TrustedKey};

/// A parsed public key.
#[derive(Clone, Debug)]
enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// A key set whose keys are parsed and checked once, ready to verify signatures.
#[derive(Clone, Debug)]
pub struct TrustedKeys {
    entries: Vec<(TrustedKey, PublicKey)>,
    /// When set, key validity windows are judged at this time instead of the signing time.
    judged_at: Option<String>,
}

impl TrustedKeys {
    /// Parses a key set from its JSON text (`{"keys":[…]}`).
    pub fn from_json(json: &[u8]) -> Result<Self, VerifyError> {
        let set: KeySet = serde_json::from_slice(json).map_err(|e| {
            VerifyError::new(Reason::KeySetInvalid, format!("trusted key set: {e}"))
        })?;
        Self::new(set)
    }

    /// Checks every key (id, timestamps, PEM matching its algorithm, unique ids).
    pub fn new(set: KeySet) -> Result<Self, VerifyError> {
        let bad = |d: String| VerifyError::new(Reason::KeySetInvalid, d);
        let mut entries: Vec<(TrustedKey, PublicKey)> = Vec::with_capacity(set.keys.len());
        for key in set.keys {
            validate_key_id(&key.id).map_err(|e| bad(e.detail))?;
            if entries.iter().any(|(k, _)| k.id == key.id) {
                return Err(bad(format!("key id {:?} appears twice", key.id)));
            }
            for ts in key.not_before.iter().chain(key.not_after.iter()) {
                validate_timestamp(ts).map_err(|e| bad(format!("key {}: {}", key.id, e.detail)))?;
            }
            let public = parse_public_key(key.alg, &key.public_key_pem)
                .map_err(|d| bad(format!("key {}: {d}", key.id)))?;
            entries.push((key, public));
        }
        Ok(TrustedKeys {
            entries,
            judged_at: None,
        })
    }

    /// Judges every key's `not_before`/`not_after` at `now` (a format timestamp, normally the
    /// current time) instead of at the signing time the signer wrote into the bundle.
    ///
    /// Why: by default an export made while its key was valid stays verifiable after the key
    /// retires — but the signing time is the signer's own claim, so whoever still holds a
    /// retired key can sign a backdated bundle that passes. A verifier that wants "valid under a
    /// key that is valid today" sets this; revocation remains the way to withdraw a leaked key
    /// for both modes.
    pub fn judged_at(mut self, now: &str) -> Result<Self, VerifyError> {
        validate_timestamp(now).map_err(|e| {
            VerifyError::new(
                Reason::KeySetInvalid,
                format!("validity time: {}", e.detail),
            )
        })?;
        self.judged_at = Some(now.to_string());
        Ok(self)
    }

    /// The time validity windows are judged at, when [`TrustedKeys::judged_at`] set one.
    pub fn validity_time(&self) -> Option<&str> {
        self.judged_at.as_deref()
    }

    /// The keys, as given.
    pub fn keys(&self) -> impl Iterator<Item = &TrustedKey> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// Checks that `signature` over `message` was made by key `key_id` with `alg`, and that the
    /// key was usable at `signed_at` (a format timestamp) — or at the time set by
    /// [`TrustedKeys::judged_at`]. Returns the key on success.
    ///
    /// `bad_signature` is the reason reported when the key is fine but the signature is not, so
    /// manifests, sidecars and receipts each report their own code.
    pub fn verify(
        &self,
        key_id: &str,
        alg: Algorithm,
        signed_at: &str,
        message: &[u8],
        signature: &[u8],
        bad_signature: Reason,
    ) -> Result<&TrustedKey, VerifyError> {
        let (key, public) = self
            .entries
            .iter()
            .find(|(k, _)| k.id == key_id)
            .ok_or_else(|| {
                VerifyError::new(
                    Reason::UnknownKey,
                    format!("key {key_id:?} is not in the trusted key set"),
                )
            })?;
        if key.revoked {
            return Err(VerifyError::new(
                Reason::KeyRevoked,
                format!("key {key_id:?} is revoked"),
            ));
        }
        if key.alg != alg {
            return Err(VerifyError::new(
                Reason::KeyAlgorithmMismatch,
                format!(
                    "signature claims {} but key {key_id:?} is {}",
                    alg.as_str(),
                    key.alg.as_str()
                ),
            ));
        }
        let (at, what) = match &self.judged_at {
            Some(now) => (now.as_str(), "judged at"),
            None => (signed_at, "signature made"),
        };
        if let Some(nb) = &key.not_before {
            if at < nb.as_str() {
                return Err(VerifyError::new(
                    Reason::KeyNotYetValid,
                    format!("key {key_id:?} is valid from {nb}, {what} {at}"),
                ));
            }
        }
        if let Some(na) = &key.not_after {
            if at > na.as_str() {
                return Err(VerifyError::new(
                    Reason::KeyExpired,
                    format!("key {key_id:?} expired {na}, {what} {at}"),
                ));
            }
        }
        let ok = match public {
            PublicKey::P256(vk) => {
                use p256::ecdsa::signature::Verifier as _;
                p256::ecdsa::Signature::from_der(signature)
                    .map(|sig| vk.verify(message, &sig).is_ok())
                    .unwrap_or(false)
            }
            PublicKey::Ed25519(vk) => ed25519_dalek::Signature::from_slice(signature)
                .map(|sig| vk.verify_strict(message, &sig).is_ok())
                .unwrap_or(false),
        };
        if ok {
            Ok(key)
        } else {
            Err(VerifyError::new(
                bad_signature,
                format!("signature does not verify with key {key_id:?}"),
            ))
        }
    }
}

fn parse_public_key(alg: Algorithm, pem: &str) -> Result<PublicKey, String> {
    match alg {
        Algorithm::EcdsaP256Sha256 => {
            use p256::pkcs8::DecodePublicKey;
            p256::PublicKey::from_public_key_pem(pem)
                .map(|pk| PublicKey::P256(pk.into()))
                .map_err(|e| format!("not a P-256 SPKI PEM public key: {e}"))
        }
        Algorithm::Ed25519 => {
            // Parsed with the SPKI reader p256 already brings: ed25519-dalek's own `pkcs8`
            // feature pulls `der` 0.7, which needs rustc 1.65 and so breaks the WASM build.
            use p256::pkcs8::der::pem;
            use p256::pkcs8::{ObjectIdentifier, SubjectPublicKeyInfo};
            const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
            let (label, der) =
                pem::decode_vec(pem.as_bytes()).map_err(|e| format!("not a PEM document: {e}"))?;
            if label != "PUBLIC KEY" {
                return Err(format!("PEM label is {label:?}, not \"PUBLIC KEY\""));
            }
            let spki = SubjectPublicKeyInfo::try_from(der.as_slice())
                .map_err(|e| format!("not an SPKI public key: {e}"))?;
            if spki.algorithm.oid != ED25519_OID || spki.algorithm.parameters.is_some() {
                return Err("not an Ed25519 SPKI public key (OID 1.3.101.112)".to_string());
            }
            let bytes: [u8; 32] = spki
                .subject_public_key
                .try_into()
                .map_err(|_| "an Ed25519 public key is 32 bytes".to_string())?;
            ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map(PublicKey::Ed25519)
                .map_err(|e| format!("not a valid Ed25519 public key: {e}"))
        }
    }
}
