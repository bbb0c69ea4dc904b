//! A [`KeyManager`] over a key directory on the local file system.
//!
//! Layout of the key directory (directories `0700`, files `0600`, every write a temp file
//! renamed into place):
//!
//! ```text
//! <dir>/signing/platform.pem       the platform's export-signing key (PKCS#8 PEM): ECDSA P-256
//!                                  by default, Ed25519 when the directory was made so
//! <dir>/rooms/<room>/meta.json     current key version, scheduled deletion time
//! <dir>/rooms/<room>/v<N>.key      32 random bytes: version N of the room key
//! <dir>/rooms/<room>/grants.json   grants on the room key, one per grantee
//! ```
//!
//! `<room>` is a [`RoomId`], whose rule (`a-z 0-9 _ -`, first a letter or digit) admits no `/`,
//! no `.` and nothing else that could leave the directory; signing keys are looked up by a fixed
//! id ([`LocalKeyManager::PLATFORM_SIGNING_KEY`]), never by a path built from input.
//!
//! The manager acts as one grantee (given to [`LocalKeyManager::open`]). While that grantee holds
//! no grant on a room, everything that uses the room's key material — generating, unwrapping and
//! re-wrapping data keys, rotating — returns [`Error::Sealed`]. Administrative operations (ensure,
//! grant, revoke, list grants, schedule deletion) stay available, so a room owner can re-grant.
//!
//! Wrapped data keys are `RSK1 ‖ version (u32 BE) ‖ nonce (12) ‖ AES-256-GCM ciphertext+tag`,
//! with associated data = the header (magic, version) followed by the canonical JSON of the
//! encryption context. A blob under an older key version still decrypts after
//! [`rotate`](KeyManager::rotate); [`KeyManager::wrapped_key_version`] reads its version from the
//! header and [`KeyManager::rewrap_data_key`] re-wraps it lazily under the current one.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rand_core::{OsRng, RngCore};
use roomshard_core::traits::{
    DataKey, EncryptionContext, Grant, GrantId, Grantee, KeyManager, KeyRef, KeySpec, KeyVersions,
    PublicKey, ScheduledDeletion, SecretBytes, SigningKeyId, room_key_alias,
};
use roomshard_core::{Algorithm, Error, KeyCapabilities, Result, RoomId, async_trait};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// Magic prefix of a wrapped data key (format version 1).
const WRAP_MAGIC: &[u8; 4] = b"RSK1";
/// Magic, key version.
const HEADER_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Length of a wrapped 32-byte data key.
const WRAPPED_LEN: usize = HEADER_LEN + NONCE_LEN + KEY_LEN + TAG_LEN;

/// Most grants one room key holds.
const MAX_GRANTS: u64 = 256;
/// Deletion window bounds, in days (those of AWS KMS).
const MIN_DELETION_DAYS: u32 = 7;
const MAX_DELETION_DAYS: u32 = 30;

/// A [`KeyManager`] keeping keys in a directory, acting as one grantee.
///
/// `Debug` shows the directory and the grantee only; key material is read from disk when an
/// operation needs it and zeroed after use.
pub struct LocalKeyManager {
    dir: PathBuf,
    grantee: Grantee,
    /// The platform signing key's algorithm (read from the key file at open).
    signing_algorithm: Algorithm,
    /// Serialises read-modify-write of room metadata and grants within this process.
    lock: Mutex<()>,
}

impl fmt::Debug for LocalKeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyManager")
            .field("dir", &self.dir)
            .field("grantee", &self.grantee)
            .field("signing_algorithm", &self.signing_algorithm)
            .finish_non_exhaustive()
    }
}

/// The platform signing key, of either algorithm the format knows.
enum PlatformKey {
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl PlatformKey {
    fn generate(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::EcdsaP256Sha256 => {
                PlatformKey::P256(p256::ecdsa::SigningKey::random(&mut OsRng))
            }
            Algorithm::Ed25519 => {
                let mut seed = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(&mut seed[..]);
                PlatformKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
            }
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            PlatformKey::P256(_) => Algorithm::EcdsaP256Sha256,
            PlatformKey::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    fn from_pkcs8_pem(pem: &str) -> Result<Self> {
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(PlatformKey::P256(k));
        }
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(PlatformKey::Ed25519(k));
        }
        Err(Error::Corrupt {
            what: "platform signing key".into(),
            detail: "not a PKCS#8 PEM ECDSA P-256 or Ed25519 private key".into(),
        })
    }

    fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>> {
        let failed = |e: &dyn fmt::Display| Error::Corrupt {
            what: "new platform signing key".into(),
            detail: format!("PKCS#8 encoding failed: {e}"),
        };
        // The two key crates build on different pkcs8 releases, hence two sets of traits.
        match self {
            PlatformKey::P256(k) => k.to_pkcs8_pem(LineEnding::LF).map_err(|e| failed(&e)),
            PlatformKey::Ed25519(k) => {
                use ed25519_dalek::pkcs8::EncodePrivateKey as _;
                let pem = k
                    .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                    .map_err(|e| failed(&e))?;
                Ok(Zeroizing::new(pem.as_str().to_string()))
            }
        }
    }

    /// ECDSA P-256: DER over SHA-256 of `message`; Ed25519: the 64-byte signature.
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            PlatformKey::P256(k) => {
                let signature: p256::ecdsa::Signature = k.sign(message);
                signature.to_der().as_bytes().to_vec()
            }
            PlatformKey::Ed25519(k) => {
                use ed25519_dalek::Signer as _;
                let signature: ed25519_dalek::Signature = k.sign(message);
                signature.to_bytes().to_vec()
            }
        }
    }

    fn public_key(&self) -> Result<PublicKey> {
        let failed = |e: &dyn fmt::Display| Error::Corrupt {
            what: "platform signing key".into(),
            detail: format!("public key encoding: {e}"),
        };
        let spki_pem = match self {
            PlatformKey::P256(k) => k
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| failed(&e))?,
            PlatformKey::Ed25519(k) => {
                use ed25519_dalek::pkcs8::EncodePublicKey as _;
                k.verifying_key()
                    .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                    .map_err(|e| failed(&e))?
            }
        };
        Ok(PublicKey {
            algorithm: self.algorithm(),
            spki_pem,
        })
    }
}

/// Per-room metadata (`meta.json`).
#[derive(Debug, Serialize, Deserialize)]
struct RoomMeta {
    /// The current key version (1-based).
    current_version: u32,
    /// Tags given to `ensure_room_key`.
    #[serde(default)]
    tags: BTreeMap<String, String>,
    /// When the key is destroyed, if deletion is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deletion_at_unix_ms: Option<u64>,
}

impl LocalKeyManager {
    /// The id of the platform's export-signing key, created by [`open`](Self::open).
    pub const PLATFORM_SIGNING_KEY: &'static str = "platform";

    /// Opens (creating if needed) the key directory `dir`, acting as `grantee`. Creates an ECDSA
    /// P-256 platform signing key on first use (the format's default algorithm: what cosign,
    /// cloud KMSes and `openssl dgst` handle); an existing key is used whatever its algorithm.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the directory or the signing key cannot be created or read;
    /// [`Error::Corrupt`] if an existing signing key does not parse.
    pub fn open(dir: impl AsRef<Path>, grantee: Grantee) -> Result<Self> {
        Self::open_inner(dir.as_ref(), grantee, None)
    }

    /// [`open`](Self::open), creating the platform signing key with `algorithm` on first use;
    /// Ed25519 makes every manifest, sidecar and receipt say `ed25519` (the algorithm is read
    /// from the key, never configured twice).
    ///
    /// # Errors
    /// As [`open`](Self::open), and [`Error::Conflict`] when the directory already holds a
    /// platform key of the other algorithm: switching would orphan every published key set, so
    /// it is refused rather than done silently.
    pub fn open_with_signing(
        dir: impl AsRef<Path>,
        grantee: Grantee,
        algorithm: Algorithm,
    ) -> Result<Self> {
        Self::open_inner(dir.as_ref(), grantee, Some(algorithm))
    }

    fn open_inner(dir: &Path, grantee: Grantee, algorithm: Option<Algorithm>) -> Result<Self> {
        let dir = dir.to_path_buf();
        make_dir(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error(&dir, e))?;
        make_dir(&dir.join("rooms"))?;
        make_dir(&dir.join("signing"))?;
        let mut manager = LocalKeyManager {
            dir,
            grantee,
            signing_algorithm: algorithm.unwrap_or(Algorithm::EcdsaP256Sha256),
            lock: Mutex::new(()),
        };
        let pem_path = manager.signing_key_path();
        if !pem_path.exists() {
            let pem = PlatformKey::generate(manager.signing_algorithm).to_pkcs8_pem()?;
            match write_new_secret(&pem_path, pem.as_bytes()) {
                // Another process created it first: use theirs.
                Ok(()) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let found = manager.load_signing_key()?.algorithm();
        if let Some(wanted) = algorithm
            && wanted != found
        {
            return Err(Error::conflict(format!(
                "the platform signing key in {} is {}, not {}; use another key directory \
                 for {} (a signing algorithm never changes in place: verifiers hold the \
                 published key)",
                manager.dir.display(),
                found.as_str(),
                wanted.as_str(),
                wanted.as_str()
            )));
        }
        manager.signing_algorithm = found;
        Ok(manager)
    }

    /// The platform signing key's algorithm.
    pub fn signing_algorithm(&self) -> Algorithm {
        self.signing_algorithm
    }

    /// The key directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The grantee this manager acts as.
    pub fn grantee(&self) -> &Grantee {
        &self.grantee
    }

    /// The key version a wrapped data key was made under.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if `wrapped` is not a wrapped data key of this provider.
    pub fn key_version(wrapped: &[u8]) -> Result<u32> {
        parse_header(wrapped)
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn signing_key_path(&self) -> PathBuf {
        self.dir
            .join("signing")
            .join(format!("{}.pem", Self::PLATFORM_SIGNING_KEY))
    }

    fn load_signing_key(&self) -> Result<PlatformKey> {
        let path = self.signing_key_path();
        let pem = Zeroizing::new(fs::read_to_string(&path).map_err(|e| io_error(&path, e))?);
        PlatformKey::from_pkcs8_pem(&pem)
    }

    fn signing_key(&self, key: &SigningKeyId) -> Result<PlatformKey> {
        if key.as_str() != Self::PLATFORM_SIGNING_KEY {
            return Err(Error::not_found(format!("signing key {key}")));
        }
        self.load_signing_key()
    }

    fn room_dir(&self, room: &RoomId) -> PathBuf {
        // `RoomId` admits only `a-z 0-9 _ -`: one plain path component, never `..`.
        self.dir.join("rooms").join(room.as_str())
    }

    fn key_ref(room: &RoomId) -> KeyRef {
        KeyRef {
            id: format!("local:{}", room_key_alias(room)),
            alias: room_key_alias(room),
        }
    }

    fn read_meta(&self, room: &RoomId) -> Result<RoomMeta> {
        let path = self.room_dir(room).join("meta.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                what: format!("key metadata of room {room}"),
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(Error::not_found(format!("key {}", room_key_alias(room))))
            }
            Err(e) => Err(io_error(&path, e)),
        }
    }

    fn write_meta(&self, room: &RoomId, meta: &RoomMeta) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(meta).map_err(|e| Error::Corrupt {
            what: format!("key metadata of room {room}"),
            detail: e.to_string(),
        })?;
        write_atomic(&self.room_dir(room).join("meta.json"), &bytes)
    }

    fn read_grants(&self, room: &RoomId) -> Result<Vec<Grant>> {
        let path = self.room_dir(room).join("grants.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                what: format!("grants of room {room}"),
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_error(&path, e)),
        }
    }

    fn write_grants(&self, room: &RoomId, grants: &[Grant]) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(grants).map_err(|e| Error::Corrupt {
            what: format!("grants of room {room}"),
            detail: e.to_string(),
        })?;
        write_atomic(&self.room_dir(room).join("grants.json"), &bytes)
    }

    /// The room's metadata, if its key may be used by this manager now: it exists, is not
    /// scheduled for deletion, and the acting grantee holds a grant (else [`Error::Sealed`]).
    fn usable_meta(&self, room: &RoomId) -> Result<RoomMeta> {
        let meta = self.read_meta(room)?;
        if meta.deletion_at_unix_ms.is_some() {
            return Err(Error::conflict(format!(
                "key {} is scheduled for deletion",
                room_key_alias(room)
            )));
        }
        if !self
            .read_grants(room)?
            .iter()
            .any(|g| g.grantee == self.grantee)
        {
            return Err(Error::Sealed { room: room.clone() });
        }
        Ok(meta)
    }

    fn read_room_key(&self, room: &RoomId, version: u32) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        let path = self.room_dir(room).join(format!("v{version}.key"));
        let bytes = Zeroizing::new(fs::read(&path).map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                Error::Corrupt {
                    what: "wrapped data key".into(),
                    detail: format!("room {room} has no key version {version}"),
                }
            } else {
                io_error(&path, e)
            }
        })?);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(Error::Corrupt {
                what: format!("key file v{version} of room {room}"),
                detail: format!("{} bytes, expected {KEY_LEN}", bytes.len()),
            });
        }
        key.copy_from_slice(&bytes);
        Ok(key)
    }

    fn new_key_version(&self, room: &RoomId, version: u32) -> Result<()> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(key.as_mut());
        write_new_secret(
            &self.room_dir(room).join(format!("v{version}.key")),
            key.as_ref(),
        )
    }

    fn wrap_key(
        &self,
        room: &RoomId,
        version: u32,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        let room_key = self.read_room_key(room, version)?;
        let cipher = Aes256Gcm::new_from_slice(room_key.as_ref()).map_err(|_| Error::Corrupt {
            what: format!("key v{version} of room {room}"),
            detail: "not an AES-256 key".into(),
        })?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(WRAP_MAGIC);
        out.extend_from_slice(&version.to_be_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(&out[..HEADER_LEN], context);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Corrupt {
                what: "data key".into(),
                detail: "AES-GCM encryption failed".into(),
            })?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap_key(
        &self,
        room: &RoomId,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<SecretBytes> {
        let version = parse_header(wrapped)?;
        if wrapped.len() != WRAPPED_LEN {
            return Err(corrupt_blob(format!(
                "{} bytes, expected {WRAPPED_LEN}",
                wrapped.len()
            )));
        }
        let room_key = self.read_room_key(room, version)?;
        let cipher = Aes256Gcm::new_from_slice(room_key.as_ref()).map_err(|_| Error::Corrupt {
            what: format!("key v{version} of room {room}"),
            detail: "not an AES-256 key".into(),
        })?;
        let aad = associated_data(&wrapped[..HEADER_LEN], context);
        let nonce = &wrapped[HEADER_LEN..HEADER_LEN + NONCE_LEN];
        let plaintext = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: &wrapped[HEADER_LEN + NONCE_LEN..],
                    aad: &aad,
                },
            )
            .map_err(|_| {
                corrupt_blob(format!(
                    "does not authenticate under key v{version} of room {room} with this \
                     encryption context (tampered, another room's, or another context)"
                ))
            })?;
        Ok(SecretBytes::new(plaintext))
    }
}

#[async_trait]
impl KeyManager for LocalKeyManager {
    fn name(&self) -> &str {
        "local"
    }

    fn capabilities(&self) -> KeyCapabilities {
        KeyCapabilities {
            grants: true,
            revoke: true,
            rotate: true,
            sign_p256: self.signing_algorithm == Algorithm::EcdsaP256Sha256,
            sign_ed25519: self.signing_algorithm == Algorithm::Ed25519,
            encryption_context: true,
            schedule_deletion: true,
            cancel_deletion: true,
            discard_room_key: true,
            rewrap: true,
            key_versions: true,
            regions: false,
            max_grants_per_key: Some(MAX_GRANTS),
            min_deletion_days: Some(u64::from(MIN_DELETION_DAYS)),
            max_deletion_days: Some(u64::from(MAX_DELETION_DAYS)),
        }
    }

    /// A pinned region is refused (a directory has none). An adopted key (`spec.adopt`) must be
    /// the room's key already in this directory (`local:room/<id>`): it is checked, never made.
    async fn ensure_room_key(&self, room: &RoomId, spec: &KeySpec) -> Result<KeyRef> {
        if spec.region.is_some() {
            return Err(Error::unsupported("ensure_room_key.region", self.name()));
        }
        let tags = &spec.tags;
        let _guard = self.guard();
        if let Some(adopt) = &spec.adopt {
            let ours = Self::key_ref(room);
            if adopt != &ours.id {
                return Err(Error::invalid(
                    "adopted key",
                    format!(
                        "{adopt:?} is not a key of this directory for room {room} (it would be {:?})",
                        ours.id
                    ),
                ));
            }
            let meta = self.read_meta(room).map_err(|e| match e {
                Error::NotFound { .. } => Error::not_found(format!(
                    "adopted key {adopt} (an adopted key is never created)"
                )),
                other => other,
            })?;
            if meta.deletion_at_unix_ms.is_some() {
                return Err(Error::conflict(format!(
                    "adopted key {adopt} is scheduled for deletion"
                )));
            }
            return Ok(ours);
        }
        match self.read_meta(room) {
            Ok(mut meta) => {
                if meta.deletion_at_unix_ms.is_some() {
                    return Err(Error::conflict(format!(
                        "key {} is scheduled for deletion",
                        room_key_alias(room)
                    )));
                }
                let before = meta.tags.len();
                let mut changed = false;
                for (k, v) in tags {
                    if meta.tags.get(k) != Some(v) {
                        meta.tags.insert(k.clone(), v.clone());
                        changed = true;
                    }
                }
                if changed || meta.tags.len() != before {
                    self.write_meta(room, &meta)?;
                }
            }
            Err(Error::NotFound { .. }) => {
                make_dir(&self.room_dir(room))?;
                // Key material and grant first, metadata last: a crash before `meta.json`
                // leaves a room that reads as absent and is completed by the next call.
                let key_path = self.room_dir(room).join("v1.key");
                if !key_path.exists() {
                    self.new_key_version(room, 1)?;
                }
                let mut grants = self.read_grants(room)?;
                if !grants.iter().any(|g| g.grantee == self.grantee) {
                    grants.push(Grant {
                        id: new_grant_id(),
                        grantee: self.grantee.clone(),
                    });
                    self.write_grants(room, &grants)?;
                }
                self.write_meta(
                    room,
                    &RoomMeta {
                        current_version: 1,
                        tags: tags.clone(),
                        deletion_at_unix_ms: None,
                    },
                )?;
            }
            Err(e) => return Err(e),
        }
        Ok(Self::key_ref(room))
    }

    async fn generate_data_key(
        &self,
        room: &RoomId,
        context: &EncryptionContext,
    ) -> Result<DataKey> {
        if !context.is_for(room) {
            return Err(Error::Invalid {
                what: "encryption context".into(),
                detail: format!("must contain {}={room}", EncryptionContext::ROOM),
            });
        }
        let _guard = self.guard();
        let meta = self.usable_meta(room)?;
        let mut plaintext = vec![0u8; KEY_LEN];
        OsRng.fill_bytes(&mut plaintext);
        let plaintext = SecretBytes::new(plaintext);
        let wrapped = self.wrap_key(room, meta.current_version, plaintext.expose(), context)?;
        Ok(DataKey {
            key_id: Self::key_ref(room).id,
            plaintext,
            wrapped,
        })
    }

    async fn decrypt_data_key(
        &self,
        room: &RoomId,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<SecretBytes> {
        let _guard = self.guard();
        self.usable_meta(room)?;
        self.unwrap_key(room, wrapped, context)
    }

    async fn grant(&self, room: &RoomId, grantee: &Grantee) -> Result<GrantId> {
        let _guard = self.guard();
        self.read_meta(room)?;
        let mut grants = self.read_grants(room)?;
        if let Some(existing) = grants.iter().find(|g| &g.grantee == grantee) {
            return Ok(existing.id.clone());
        }
        let used = grants.len() as u64 + 1;
        if used > MAX_GRANTS {
            return Err(Error::QuotaExceeded {
                what: format!("grants on key {}", room_key_alias(room)),
                limit: MAX_GRANTS,
                used,
            });
        }
        let id = new_grant_id();
        grants.push(Grant {
            id: id.clone(),
            grantee: grantee.clone(),
        });
        self.write_grants(room, &grants)?;
        Ok(id)
    }

    async fn revoke(&self, room: &RoomId, grantee: &Grantee) -> Result<()> {
        let _guard = self.guard();
        self.read_meta(room)?;
        let mut grants = self.read_grants(room)?;
        let before = grants.len();
        grants.retain(|g| &g.grantee != grantee);
        if grants.len() != before {
            self.write_grants(room, &grants)?;
        }
        Ok(())
    }

    async fn list_grants(&self, room: &RoomId) -> Result<Vec<Grant>> {
        let _guard = self.guard();
        self.read_meta(room)?;
        self.read_grants(room)
    }

    async fn rotate(&self, room: &RoomId) -> Result<KeyRef> {
        let _guard = self.guard();
        let mut meta = self.usable_meta(room)?;
        let next = meta.current_version.checked_add(1).ok_or_else(|| {
            Error::conflict(format!("key {} has no versions left", room_key_alias(room)))
        })?;
        let key_path = self.room_dir(room).join(format!("v{next}.key"));
        // A crash after writing the key file but before `meta.json` leaves an unused version
        // file; the retry reuses it.
        if !key_path.exists() {
            self.new_key_version(room, next)?;
        }
        meta.current_version = next;
        self.write_meta(room, &meta)?;
        Ok(Self::key_ref(room))
    }

    async fn sign(&self, key: &SigningKeyId, message: &[u8]) -> Result<Vec<u8>> {
        Ok(self.signing_key(key)?.sign(message))
    }

    async fn public_key(&self, key: &SigningKeyId) -> Result<PublicKey> {
        self.signing_key(key)?.public_key()
    }

    async fn schedule_deletion(
        &self,
        room: &RoomId,
        pending_days: u32,
    ) -> Result<ScheduledDeletion> {
        if !(MIN_DELETION_DAYS..=MAX_DELETION_DAYS).contains(&pending_days) {
            return Err(Error::Invalid {
                what: "pending_days".into(),
                detail: format!(
                    "{pending_days} is outside {MIN_DELETION_DAYS}..={MAX_DELETION_DAYS}"
                ),
            });
        }
        let _guard = self.guard();
        let mut meta = self.read_meta(room)?;
        let deletion_at_unix_ms = match meta.deletion_at_unix_ms {
            Some(at) => at,
            None => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let at = now + u64::from(pending_days) * 86_400_000;
                meta.deletion_at_unix_ms = Some(at);
                self.write_meta(room, &meta)?;
                at
            }
        };
        Ok(ScheduledDeletion {
            key: Self::key_ref(room),
            deletion_at_unix_ms,
        })
    }

    async fn discard_room_key(&self, room: &RoomId) -> Result<()> {
        let _guard = self.guard();
        match std::fs::remove_dir_all(self.room_dir(room)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::unavailable(
                format!("removing the key of room {room}"),
                true,
                e,
            )),
        }
    }

    async fn cancel_deletion(&self, room: &RoomId) -> Result<bool> {
        let _guard = self.guard();
        let mut meta = self.read_meta(room)?;
        if meta.deletion_at_unix_ms.take().is_none() {
            return Ok(false);
        }
        self.write_meta(room, &meta)?;
        Ok(true)
    }

    async fn wrapped_key_version(&self, room: &RoomId, wrapped: &[u8]) -> Result<KeyVersions> {
        let version = parse_header(wrapped)?;
        let meta = self.read_meta(room)?;
        Ok(KeyVersions {
            wrapped: version,
            current: meta.current_version,
        })
    }

    /// Unwraps `wrapped` (any key version) and wraps the same data key again under the current
    /// version; a key scheduled for deletion is [`Error::Conflict`], as for data keys.
    async fn rewrap_data_key(
        &self,
        room: &RoomId,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        let _guard = self.guard();
        let meta = self.usable_meta(room)?;
        let plaintext = self.unwrap_key(room, wrapped, context)?;
        self.wrap_key(room, meta.current_version, plaintext.expose(), context)
    }
}

/// AEAD associated data: the blob header, then the canonical JSON of the context (sorted keys).
fn associated_data(header: &[u8], context: &EncryptionContext) -> Vec<u8> {
    let mut aad = header.to_vec();
    // A BTreeMap<String, String> always serialises; its keys come out sorted.
    aad.extend_from_slice(&serde_json::to_vec(context.entries()).unwrap_or_default());
    aad
}

fn parse_header(wrapped: &[u8]) -> Result<u32> {
    if wrapped.len() < HEADER_LEN || &wrapped[..4] != WRAP_MAGIC {
        return Err(corrupt_blob(
            "not a local wrapped data key (bad magic)".into(),
        ));
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&wrapped[4..HEADER_LEN]);
    let version = u32::from_be_bytes(version);
    if version == 0 {
        return Err(corrupt_blob("key version 0".into()));
    }
    Ok(version)
}

fn corrupt_blob(detail: String) -> Error {
    Error::Corrupt {
        what: "wrapped data key".into(),
        detail,
    }
}

fn new_grant_id() -> GrantId {
    let mut id = [0u8; 8];
    OsRng.fill_bytes(&mut id);
    format!("grant-{}", hex::encode(id))
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Unavailable {
        what: format!("key directory file {}", path.display()),
        retryable: false,
        source: Some(Box::new(e)),
    }
}

fn make_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| io_error(path, e))
}

/// Writes `bytes` to `path` atomically: a fresh `0600` temp file in the same directory, synced,
/// then renamed over `path` (or, with `replace == false`, hard-linked to `path`, which fails if
/// `path` exists), then the directory synced.
fn write_file(path: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    let mut suffix = [0u8; 8];
    OsRng.fill_bytes(&mut suffix);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{file_name}.{}.tmp", hex::encode(suffix)));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        if replace {
            fs::rename(&tmp, path)?;
        } else {
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
        }
        fs::File::open(parent)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        if e.kind() == ErrorKind::AlreadyExists {
            return Err(Error::AlreadyExists {
                what: format!("key file {}", path.display()),
            });
        }
        return Err(io_error(path, e));
    }
    Ok(())
}

/// Replaces `path` atomically (metadata, grants).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, bytes, true)
}

/// Writes a secret that must never replace an existing one (a key version, the signing key):
/// another process racing to create the same file makes this fail with
/// [`Error::AlreadyExists`] instead of overwriting key material already in use.
fn write_new_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, bytes, false)
}
