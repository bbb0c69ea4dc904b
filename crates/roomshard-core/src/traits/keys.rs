//! [`KeyManager`]: rooms' keys, grants, data keys and signing.

use crate::capabilities::KeyCapabilities;
use crate::error::{Error, Result};
use crate::ids::{RoomId, check_printable, validated_name};
use async_trait::async_trait;
use roomshard_verify::format::Algorithm;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Manages one key per room (KMS, Vault transit, local), the grants that let principals use it,
/// data keys wrapped by it, and the signing keys that sign bundles and receipts.
///
/// Revocation is what makes sovereignty real: once the grant of the principal this manager runs
/// as is revoked, [`generate_data_key`](Self::generate_data_key) and
/// [`decrypt_data_key`](Self::decrypt_data_key) for that room return [`Error::Sealed`], and so
/// does everything built on them.
///
/// # Contract for every method
///
/// See the [module docs](crate::traits). No method returns or logs key material except
/// [`DataKey::plaintext`] and the result of `decrypt_data_key`, both [`SecretBytes`].
#[async_trait]
pub trait KeyManager: Send + Sync {
    /// A short name for the provider (`local`, `aws-kms`, `vault`), used in
    /// [`Error::Unsupported`] and logs.
    fn name(&self) -> &str;

    /// What this manager can do. Must be constant for its lifetime.
    fn capabilities(&self) -> KeyCapabilities;

    /// Makes sure `room` has a key, reachable under the alias [`room_key_alias`] (`room/<id>`;
    /// a KMS provider writes it `alias/room/<id>`), carrying `spec.tags`, in `spec.region`.
    ///
    /// # Behaviour
    /// - **Idempotent**: an existing key under the alias is returned unchanged (tags are added
    ///   where the backend supports tags); never a second key for one room.
    /// - With `spec.adopt`, the customer's own key of that reference is used: it must exist and
    ///   be usable ([`Error::NotFound`] otherwise), it is never created, and it is returned.
    /// - A pinned `spec.region` the manager cannot keep a key in is [`Error::Unsupported`]
    ///   (`ensure_room_key.region`), before anything is created.
    /// - A key scheduled for deletion is [`Error::Conflict`].
    ///
    /// # Requires capability
    /// `regions` for a pinned region.
    async fn ensure_room_key(&self, room: &RoomId, spec: &KeySpec) -> Result<KeyRef>;

    /// A fresh 256-bit data key: its plaintext for immediate use and its copy wrapped by the
    /// room key, bound to `context`.
    ///
    /// # Behaviour
    /// - `context` must contain [`EncryptionContext::ROOM`] equal to `room`, else
    ///   [`Error::Invalid`]: a data key is always bound to its room.
    /// - With `encryption_context`, the wrapped key decrypts only under an equal context.
    /// - A missing room key is [`Error::NotFound`]; a revoked grant is [`Error::Sealed`].
    ///
    /// # Requires capability
    /// None (`encryption_context` says whether the binding is enforced).
    async fn generate_data_key(
        &self,
        room: &RoomId,
        context: &EncryptionContext,
    ) -> Result<DataKey>;

    /// Unwraps a data key made by [`generate_data_key`](Self::generate_data_key).
    ///
    /// # Behaviour
    /// - Works for keys wrapped before a [`rotate`](Self::rotate).
    /// - A wrapped key that fails authentication — tampered, another room's, or (with
    ///   `encryption_context`) a different context — is [`Error::Corrupt`].
    /// - A revoked grant is [`Error::Sealed`].
    ///
    /// # Requires capability
    /// None.
    async fn decrypt_data_key(
        &self,
        room: &RoomId,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<SecretBytes>;

    /// Lets `grantee` use `room`'s key (encrypt, decrypt, generate data keys).
    ///
    /// # Behaviour
    /// - **Idempotent**: granting an existing grantee returns the existing grant's id.
    /// - More grants than `max_grants_per_key` is [`Error::QuotaExceeded`].
    ///
    /// # Requires capability
    /// `grants`.
    async fn grant(&self, room: &RoomId, grantee: &Grantee) -> Result<GrantId> {
        let _ = (room, grantee);
        Err(Error::unsupported("grant", self.name()))
    }

    /// Withdraws `grantee`'s grants on `room`'s key ("Revoke Mesh").
    ///
    /// # Behaviour
    /// - **Idempotent**: revoking a grantee without a grant is `Ok`.
    /// - Takes effect for new operations at once (or within the backend's documented
    ///   eventual-consistency window, which the provider states in its docs).
    ///
    /// # Requires capability
    /// `revoke`.
    async fn revoke(&self, room: &RoomId, grantee: &Grantee) -> Result<()> {
        let _ = (room, grantee);
        Err(Error::unsupported("revoke", self.name()))
    }

    /// The grants on `room`'s key, for the audit log and the sovereignty page.
    ///
    /// # Requires capability
    /// `grants`.
    async fn list_grants(&self, room: &RoomId) -> Result<Vec<Grant>> {
        let _ = room;
        Err(Error::unsupported("list_grants", self.name()))
    }

    /// Gives `room`'s key new material. New data keys use it; data keys wrapped before still
    /// decrypt. Returns the key reference (whose `id` may or may not change, per backend).
    ///
    /// # Requires capability
    /// `rotate`.
    async fn rotate(&self, room: &RoomId) -> Result<KeyRef> {
        let _ = room;
        Err(Error::unsupported("rotate", self.name()))
    }

    /// Which version of `room`'s key wrapped `wrapped`, and which version is current, so a
    /// caller re-wraps ([`rewrap_data_key`](Self::rewrap_data_key)) only the data keys made
    /// before a [`rotate`](Self::rotate). Vault transit writes the version into its ciphertext
    /// (`vault:v3:…`); AWS KMS does not expose it, so it declares no `key_versions` and callers
    /// re-wrap unconditionally there (ReEncrypt is idempotent).
    ///
    /// # Behaviour
    /// - `wrapped.wrapped <= wrapped.current`; after `rotate`, a key wrapped before it reports
    ///   the older version and one wrapped after it the current one.
    /// - A blob that is not a wrapped data key of this manager is [`Error::Corrupt`]; a missing
    ///   room key is [`Error::NotFound`].
    ///
    /// # Requires capability
    /// `key_versions`.
    async fn wrapped_key_version(&self, room: &RoomId, wrapped: &[u8]) -> Result<KeyVersions> {
        let _ = (room, wrapped);
        Err(Error::unsupported("wrapped_key_version", self.name()))
    }

    /// The data key inside `wrapped` wrapped again under `room`'s current key version, bound to
    /// the same `context` (AWS KMS `ReEncrypt`, Vault transit `rewrap`): what lazy re-wrapping
    /// after a rotation needs, without the caller ever holding the data key's plaintext.
    ///
    /// # Behaviour
    /// - The result decrypts with [`decrypt_data_key`](Self::decrypt_data_key) under `context`
    ///   to the same bytes as `wrapped`; with `key_versions` it reports the current version.
    /// - As `decrypt_data_key` for a tampered or foreign blob ([`Error::Corrupt`]) and a
    ///   revoked grant ([`Error::Sealed`]).
    ///
    /// # Requires capability
    /// `rewrap`.
    async fn rewrap_data_key(
        &self,
        room: &RoomId,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        let _ = (room, wrapped, context);
        Err(Error::unsupported("rewrap_data_key", self.name()))
    }

    /// Signs `message` with the signing key `key`, in the bundle format's encodings
    /// (`docs/bundle-format.md` §5): an ASN.1 DER ECDSA P-256 signature over SHA-256 of the
    /// message, or a 64-byte Ed25519 signature of it.
    ///
    /// # Behaviour
    /// - Signs the exact bytes given, whatever their size (a provider whose backend limits raw
    ///   messages signs the SHA-256 digest in digest mode for P-256; for Ed25519 over the limit
    ///   it returns [`Error::QuotaExceeded`]).
    /// - An unknown key is [`Error::NotFound`].
    ///
    /// # Requires capability
    /// `sign_p256` or `sign_ed25519`, matching the key's algorithm.
    async fn sign(&self, key: &SigningKeyId, message: &[u8]) -> Result<Vec<u8>> {
        let _ = (key, message);
        Err(Error::unsupported("sign", self.name()))
    }

    /// The public half of a signing key, as published in a trusted key set.
    ///
    /// # Requires capability
    /// `sign_p256` or `sign_ed25519`.
    async fn public_key(&self, key: &SigningKeyId) -> Result<PublicKey> {
        let _ = key;
        Err(Error::unsupported("public_key", self.name()))
    }

    /// Schedules `room`'s key for destruction after `pending_days` (crypto-shredding the
    /// room's data once the window passes).
    ///
    /// # Behaviour
    /// - `pending_days` outside `min_deletion_days..=max_deletion_days` is [`Error::Invalid`].
    /// - **Idempotent**: scheduling an already scheduled key returns the existing date.
    /// - A missing key is [`Error::NotFound`].
    ///
    /// # Requires capability
    /// `schedule_deletion`.
    async fn schedule_deletion(
        &self,
        room: &RoomId,
        pending_days: u32,
    ) -> Result<ScheduledDeletion> {
        let _ = (room, pending_days);
        Err(Error::unsupported("schedule_deletion", self.name()))
    }

    /// Cancels a scheduled deletion of `room`'s key so that it serves again — what lets a room
    /// that was recentralised (which schedules its key's deletion) be decentralised again within
    /// the window, under the same key and alias (AWS KMS `CancelKeyDeletion`, which leaves the key
    /// disabled: the provider enables it again).
    ///
    /// # Behaviour
    /// - Returns `true` when a deletion was pending and is now cancelled; `false` when none was
    ///   (**idempotent**). Afterwards `ensure_room_key` returns the key and data keys work.
    /// - A missing key is [`Error::NotFound`].
    ///
    /// # Requires capability
    /// `cancel_deletion`.
    async fn cancel_deletion(&self, room: &RoomId) -> Result<bool> {
        let _ = room;
        Err(Error::unsupported("cancel_deletion", self.name()))
    }

    /// Removes `room`'s key, its grants and its alias because nothing depends on it any more —
    /// the rollback of a dedicated import, which made the key moments before and removes
    /// everything else it wrote. Not for a room whose data the key protects: use
    /// `schedule_deletion`, which leaves a window to change one's mind.
    ///
    /// # Behaviour
    /// - Where the backend can delete at once (the local key directory), the key is gone:
    ///   `ensure_room_key` afterwards makes a new one. A backend that keeps keys for a waiting
    ///   period (AWS KMS: 7–30 days) revokes the grants and schedules the deletion with its
    ///   shortest window instead, and says so in its docs.
    /// - **Idempotent**: a missing key is `Ok`.
    ///
    /// # Requires capability
    /// `discard_room_key`.
    async fn discard_room_key(&self, room: &RoomId) -> Result<()> {
        let _ = room;
        Err(Error::unsupported("discard_room_key", self.name()))
    }
}

/// What [`KeyManager::ensure_room_key`] makes (or adopts) for a room.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySpec {
    /// Tags on the key (cost allocation, the room id).
    pub tags: BTreeMap<String, String>,
    /// The region the key must live in, if pinned.
    pub region: Option<String>,
    /// A customer's own key to use instead of making one (its provider reference, e.g. a KMS key
    /// ARN): never created, never scheduled for deletion by roomshard.
    pub adopt: Option<String>,
}

/// The alias of `room`'s key: `room/<id>`.
pub fn room_key_alias(room: &RoomId) -> String {
    format!("room/{room}")
}

/// The key version that wrapped a data key and the room key's current version
/// ([`KeyManager::wrapped_key_version`]). Versions count from 1 and grow with every rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersions {
    /// The version that wrapped the data key.
    pub wrapped: u32,
    /// The room key's current version.
    pub current: u32,
}

impl KeyVersions {
    /// Whether the data key is wrapped under the current version (nothing to re-wrap).
    pub fn is_current(&self) -> bool {
        self.wrapped >= self.current
    }
}

/// A room key as the backend knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    /// The backend's id (a KMS key ARN, a Vault key name): the placement's `kms_key_ref`.
    pub id: String,
    /// The alias, [`room_key_alias`].
    pub alias: String,
}

/// A principal that may be granted use of a room key (an IAM role ARN, a Vault policy, a local
/// service name): 1–512 printable ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Grantee(String);

validated_name!(Grantee);

impl Grantee {
    /// Validates a grantee.
    pub fn new(principal: impl Into<String>) -> Result<Self> {
        let principal = principal.into();
        check_printable("grantee", &principal, 512)?;
        Ok(Grantee(principal))
    }
}

/// The backend's id of one grant.
pub type GrantId = String;

/// One grant on a room key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The backend's grant id.
    pub id: GrantId,
    /// Who holds it.
    pub grantee: Grantee,
}

/// Names a signing key in the key manager (a KMS key ARN, a Vault key, a local key id):
/// 1–512 printable ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SigningKeyId(String);

validated_name!(SigningKeyId);

impl SigningKeyId {
    /// Validates a signing key id.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        check_printable("signing key id", &id, 512)?;
        Ok(SigningKeyId(id))
    }
}

/// A signing key's public half.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub spki_pem: String,
}

/// When a room key will be destroyed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledDeletion {
    /// The key.
    pub key: KeyRef,
    /// Destruction time, in milliseconds since the Unix epoch.
    pub deletion_at_unix_ms: u64,
}

/// Non-secret key–value pairs a data key is bound to (KMS encryption context, AEAD associated
/// data). Always holds the room ([`EncryptionContext::ROOM`]), so a wrapped key copied to
/// another room does not decrypt there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    /// The entry naming the room.
    pub const ROOM: &'static str = "roomshard:room";

    /// The context of `room`'s data keys: `{"roomshard:room": "<id>"}`.
    pub fn for_room(room: &RoomId) -> Self {
        let mut entries = BTreeMap::new();
        entries.insert(Self::ROOM.to_owned(), room.to_string());
        EncryptionContext(entries)
    }

    /// Adds an entry (e.g. `"roomshard:purpose": "media"`). The room entry cannot be replaced.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        if key != Self::ROOM {
            self.0.insert(key, value.into());
        }
        self
    }

    /// The entries, sorted by key (a stable order for AEAD associated data).
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Whether the context names `room`; providers check this before generating a data key.
    pub fn is_for(&self, room: &RoomId) -> bool {
        self.0.get(Self::ROOM).map(String::as_str) == Some(room.as_str())
    }
}

/// Secret bytes (a data key's plaintext). `Debug` prints only the length; the bytes are
/// overwritten when dropped (best effort: without `unsafe`, copies the allocator or the compiler
/// made earlier are out of reach). Not `Clone`, so copies are explicit.
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    /// The secret, for immediate use. Do not store or log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// A data key from [`KeyManager::generate_data_key`].
#[derive(Debug)]
pub struct DataKey {
    /// The room key that wrapped it (its backend id).
    pub key_id: String,
    /// The key itself, for encrypting now. Never store it.
    pub plaintext: SecretBytes,
    /// The key wrapped by the room key: store this next to the data.
    pub wrapped: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomId {
        RoomId::new("general").expect("valid")
    }

    #[test]
    fn data_key_debug_never_shows_the_plaintext() {
        let key = DataKey {
            key_id: "k".into(),
            plaintext: SecretBytes::new(vec![0xAB; 32]),
            wrapped: vec![1, 2, 3],
        };
        let shown = format!("{key:?}");
        assert!(shown.contains("<32 bytes redacted>"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
        assert_eq!(key.plaintext.expose(), [0xAB; 32]);
    }

    #[test]
    fn encryption_context_is_bound_to_its_room() {
        let ctx = EncryptionContext::for_room(&room())
            .with("roomshard:purpose", "media")
            .with(EncryptionContext::ROOM, "other");
        assert!(ctx.is_for(&room()));
        assert!(!ctx.is_for(&RoomId::new("other").expect("valid")));
        assert_eq!(ctx.entries().len(), 2);
    }

    #[test]
    fn alias_and_names() {
        assert_eq!(room_key_alias(&room()), "room/general");
        assert!(Grantee::new("arn:aws:iam::1:role/mesh").is_ok());
        assert!(Grantee::new("two words").is_err());
        assert!(SigningKeyId::new("").is_err());
    }
}
