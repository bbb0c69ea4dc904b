//! Signing keys: the [`Signer`] trait the writer signs through, and local P-256 / Ed25519 keys.
//!
//! The writer only needs "sign these bytes with key X", so remote signers (KMS, HSM) implement
//! [`Signer`] too; the local keys here are for `roomshard keys generate`, tests and vectors.

use std::fmt;

use p256::elliptic_curve::zeroize::Zeroizing;
use roomshard_verify::format::{hex, validate_key_id};
use roomshard_verify::{Algorithm, TrustedKey};
use sha2::{Digest, Sha256};

use crate::error::BundleError;

/// Something that signs with one key. The writer calls it once per manifest, sidecar or
/// receipt, synchronously; for asynchronous signers use [`crate::BundleWriter::finish_manifest`]
/// and [`crate::PendingSignature::write_signature`] instead.
pub trait Signer {
    /// The key's id in the verifier's trusted key set (written into `manifest.signature.key_id`).
    fn key_id(&self) -> &str;
    /// The algorithm the key signs with (written into `manifest.signature.algorithm`).
    fn algorithm(&self) -> Algorithm;
    /// Signs `message` (the exact bytes; hashing is part of the algorithm). ECDSA P-256 returns
    /// an ASN.1 DER signature over SHA-256 of the message, Ed25519 the 64-byte signature.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, BundleError>;
}

impl<S: Signer + ?Sized> Signer for &S {
    fn key_id(&self) -> &str {
        (**self).key_id()
    }
    fn algorithm(&self) -> Algorithm {
        (**self).algorithm()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, BundleError> {
        (**self).sign(message)
    }
}

/// The default key id for a public key: `p256-` (or `ed25519-`) and the first 16 hex digits of
/// the SHA-256 of its SPKI DER (docs/bundle-format.md §6). Deriving ids from the key means two
/// parties naming the same key agree without coordinating.
pub fn key_id_for_spki_der(algorithm: Algorithm, spki_der: &[u8]) -> String {
    let prefix = match algorithm {
        Algorithm::EcdsaP256Sha256 => "p256",
        Algorithm::Ed25519 => "ed25519",
    };
    let digest = hex(&Sha256::digest(spki_der));
    format!("{prefix}-{}", &digest[..16])
}

/// [`key_id_for_spki_der`] of a PEM `PUBLIC KEY` (SPKI), as a key manager publishes it.
///
/// # Errors
/// [`BundleError`] when `pem` is not one PEM `PUBLIC KEY` block.
pub fn key_id_for_spki_pem(algorithm: Algorithm, pem: &str) -> Result<String, BundleError> {
    let (label, der) = p256::pkcs8::der::Document::from_pem(pem)
        .map_err(|e| BundleError::invalid(format!("public key PEM: {e}")))?;
    if label != "PUBLIC KEY" {
        return Err(BundleError::invalid(format!(
            "public key PEM: a {label:?} block, not \"PUBLIC KEY\""
        )));
    }
    Ok(key_id_for_spki_der(algorithm, der.as_bytes()))
}

/// Picks the given key id (validated) or the derived one.
fn choose_key_id(
    algorithm: Algorithm,
    spki_der: &[u8],
    key_id: Option<String>,
) -> Result<String, BundleError> {
    let id = key_id.unwrap_or_else(|| key_id_for_spki_der(algorithm, spki_der));
    validate_key_id(&id).map_err(|e| BundleError::invalid(e.detail))?;
    Ok(id)
}

/// Derives 32 bytes for a test-vector key from a seed, with a domain tag per algorithm and a
/// counter (P-256 retries the rare digest that is not a valid scalar).
fn vector_scalar(tag: &str, seed: &[u8; 32], counter: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"roomshard test-vector key v1\0");
    h.update(tag.as_bytes());
    h.update([0u8]);
    h.update(seed);
    h.update(counter.to_be_bytes());
    h.finalize().into()
}

fn trusted_key(
    id: &str,
    alg: Algorithm,
    public_key_pem: String,
    not_before: Option<String>,
    not_after: Option<String>,
) -> TrustedKey {
    TrustedKey {
        id: id.to_string(),
        alg,
        public_key_pem,
        not_before,
        not_after,
        revoked: false,
    }
}

/// An ECDSA P-256 key held in memory (the format's default algorithm; what cosign and cloud KMS
/// use, so bundles verify with stock tools).
#[derive(Clone)]
pub struct LocalP256Signer {
    key: p256::ecdsa::SigningKey,
    key_id: String,
}

impl LocalP256Signer {
    fn with_key(key: p256::ecdsa::SigningKey, key_id: Option<String>) -> Result<Self, BundleError> {
        let der = spki_der_p256(&key)?;
        let key_id = choose_key_id(Algorithm::EcdsaP256Sha256, &der, key_id)?;
        Ok(LocalP256Signer { key, key_id })
    }

    /// A fresh random key from the operating system's RNG. `key_id` defaults to
    /// [`key_id_for_spki_der`].
    pub fn generate(key_id: Option<String>) -> Result<Self, BundleError> {
        Self::with_key(
            p256::ecdsa::SigningKey::random(&mut rand_core::OsRng),
            key_id,
        )
    }

    /// Loads an unencrypted PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`; convert an
    /// OpenSSL `EC PRIVATE KEY` with `openssl pkcs8 -topk8 -nocrypt`).
    pub fn from_pkcs8_pem(pem: &str, key_id: Option<String>) -> Result<Self, BundleError> {
        use p256::pkcs8::DecodePrivateKey;
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(pem).map_err(|e| {
            BundleError::key(format!(
                "not an unencrypted PKCS#8 P-256 private key PEM ({e}); convert with \
                 `openssl pkcs8 -topk8 -nocrypt`"
            ))
        })?;
        Self::with_key(key, key_id)
    }

    /// A key derived deterministically from `seed` — **for test vectors and tests only**: anyone
    /// who knows the seed has the key. The scalar is SHA-256 over a domain tag, the seed and a
    /// counter, retried until it is a valid P-256 scalar, so the same seed always gives the same
    /// key (and, with RFC 6979 nonces, the same signatures).
    pub fn from_seed(seed: [u8; 32], key_id: Option<String>) -> Result<Self, BundleError> {
        for counter in 0..1024u32 {
            let scalar = Zeroizing::new(vector_scalar("p256", &seed, counter));
            if let Ok(key) = p256::ecdsa::SigningKey::from_bytes(scalar.as_slice()) {
                return Self::with_key(key, key_id);
            }
        }
        Err(BundleError::key("no valid P-256 scalar derived from seed"))
    }

    /// The private key as unencrypted PKCS#8 PEM, in a buffer wiped on drop.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, BundleError> {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| BundleError::key(format!("encoding PKCS#8 PEM: {e}")))
    }

    /// The public key as SPKI DER (what [`key_id_for_spki_der`] hashes).
    pub fn public_key_der(&self) -> Result<Vec<u8>, BundleError> {
        spki_der_p256(&self.key)
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`), the trusted key set's form.
    pub fn public_key_pem(&self) -> Result<String, BundleError> {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| BundleError::key(format!("encoding SPKI PEM: {e}")))
    }

    /// This key as an entry of a trusted key set, valid between the given format timestamps.
    pub fn trusted_key(
        &self,
        not_before: Option<String>,
        not_after: Option<String>,
    ) -> Result<TrustedKey, BundleError> {
        Ok(trusted_key(
            &self.key_id,
            Algorithm::EcdsaP256Sha256,
            self.public_key_pem()?,
            not_before,
            not_after,
        ))
    }
}

fn spki_der_p256(key: &p256::ecdsa::SigningKey) -> Result<Vec<u8>, BundleError> {
    use p256::pkcs8::EncodePublicKey;
    key.verifying_key()
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(|e| BundleError::key(format!("encoding SPKI DER: {e}")))
}

impl Signer for LocalP256Signer {
    fn key_id(&self) -> &str {
        &self.key_id
    }
    fn algorithm(&self) -> Algorithm {
        Algorithm::EcdsaP256Sha256
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, BundleError> {
        use p256::ecdsa::signature::Signer as _;
        let sig: p256::ecdsa::Signature = self
            .key
            .try_sign(message)
            .map_err(|e| BundleError::signing(format!("ECDSA P-256: {e}"), None))?;
        Ok(sig.to_der().as_bytes().to_vec())
    }
}

impl fmt::Debug for LocalP256Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalP256Signer")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// An Ed25519 key held in memory (the format's alternative algorithm).
#[derive(Clone)]
pub struct LocalEd25519Signer {
    key: ed25519_dalek::SigningKey,
    key_id: String,
}

impl LocalEd25519Signer {
    fn with_key(
        key: ed25519_dalek::SigningKey,
        key_id: Option<String>,
    ) -> Result<Self, BundleError> {
        let der = spki_der_ed25519(&key)?;
        let key_id = choose_key_id(Algorithm::Ed25519, &der, key_id)?;
        Ok(LocalEd25519Signer { key, key_id })
    }

    /// A fresh random key from the operating system's RNG. `key_id` defaults to
    /// [`key_id_for_spki_der`] (`ed25519-…`).
    pub fn generate(key_id: Option<String>) -> Result<Self, BundleError> {
        use rand_core::RngCore as _;
        let mut secret = Zeroizing::new([0u8; 32]);
        rand_core::OsRng
            .try_fill_bytes(secret.as_mut_slice())
            .map_err(|e| BundleError::key(format!("operating system RNG: {e}")))?;
        Self::with_key(ed25519_dalek::SigningKey::from_bytes(&secret), key_id)
    }

    /// Loads an unencrypted PKCS#8 PEM Ed25519 private key (`openssl genpkey -algorithm ed25519`).
    pub fn from_pkcs8_pem(pem: &str, key_id: Option<String>) -> Result<Self, BundleError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|e| {
            BundleError::key(format!(
                "not an unencrypted PKCS#8 Ed25519 private key PEM: {e}"
            ))
        })?;
        Self::with_key(key, key_id)
    }

    /// A key derived deterministically from `seed` — **for test vectors and tests only**. The
    /// secret is SHA-256 over a domain tag and the seed.
    pub fn from_seed(seed: [u8; 32], key_id: Option<String>) -> Result<Self, BundleError> {
        let secret = Zeroizing::new(vector_scalar("ed25519", &seed, 0));
        Self::with_key(ed25519_dalek::SigningKey::from_bytes(&secret), key_id)
    }

    /// The private key as unencrypted PKCS#8 PEM, in a buffer wiped on drop.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, BundleError> {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| BundleError::key(format!("encoding PKCS#8 PEM: {e}")))?;
        Ok(Zeroizing::new(pem.as_str().to_string()))
    }

    /// The public key as SPKI DER (what [`key_id_for_spki_der`] hashes).
    pub fn public_key_der(&self) -> Result<Vec<u8>, BundleError> {
        spki_der_ed25519(&self.key)
    }

    /// The public key as SPKI PEM, the trusted key set's form.
    pub fn public_key_pem(&self) -> Result<String, BundleError> {
        use ed25519_dalek::pkcs8::{EncodePublicKey, spki::der::pem::LineEnding};
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| BundleError::key(format!("encoding SPKI PEM: {e}")))
    }

    /// This key as an entry of a trusted key set, valid between the given format timestamps.
    pub fn trusted_key(
        &self,
        not_before: Option<String>,
        not_after: Option<String>,
    ) -> Result<TrustedKey, BundleError> {
        Ok(trusted_key(
            &self.key_id,
            Algorithm::Ed25519,
            self.public_key_pem()?,
            not_before,
            not_after,
        ))
    }
}

fn spki_der_ed25519(key: &ed25519_dalek::SigningKey) -> Result<Vec<u8>, BundleError> {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    key.verifying_key()
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(|e| BundleError::key(format!("encoding SPKI DER: {e}")))
}

impl Signer for LocalEd25519Signer {
    fn key_id(&self) -> &str {
        &self.key_id
    }
    fn algorithm(&self) -> Algorithm {
        Algorithm::Ed25519
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, BundleError> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.sign(message).to_bytes().to_vec())
    }
}

impl fmt::Debug for LocalEd25519Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalEd25519Signer")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_print_the_secret() {
        let p = LocalP256Signer::from_seed([1; 32], None).expect("key");
        let pem = p.to_pkcs8_pem().expect("pem");
        let secret_hex = hex(&p.key.to_bytes());
        let dbg = format!("{p:?} {p:#?}");
        assert!(!dbg.contains(&secret_hex), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        let body: String = pem.lines().nth(1).expect("pem body").to_string();
        assert!(!dbg.contains(&body));

        let e = LocalEd25519Signer::from_seed([1; 32], None).expect("key");
        let secret_hex = hex(&e.key.to_bytes());
        let dbg = format!("{e:?} {e:#?}");
        assert!(!dbg.contains(&secret_hex), "{dbg}");
    }

    #[test]
    fn key_id_derivation() {
        let p = LocalP256Signer::from_seed([2; 32], None).expect("key");
        let der = p.public_key_der().expect("der");
        let id = key_id_for_spki_der(Algorithm::EcdsaP256Sha256, &der);
        assert_eq!(p.key_id(), id);
        assert!(id.starts_with("p256-") && id.len() == 5 + 16, "{id}");
        let e = LocalEd25519Signer::from_seed([2; 32], None).expect("key");
        assert!(e.key_id().starts_with("ed25519-") && e.key_id().len() == 8 + 16);
    }
}
