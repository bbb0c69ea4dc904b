//! [`LocalMediaStore`]: rooms' media in a directory, on `object_store`'s [`LocalFileSystem`].
//!
//! # Layout
//!
//! ```text
//! <root>/.url-secret            0600  32 random bytes: the HMAC key of signed URLs
//! <root>/shared/<room>/<key>          pooled rooms: the host's shared "bucket", one prefix per
//!                                     room, stored as plaintext (the host's business)
//! <root>/rooms/<room>/<key>           dedicated rooms: the room's own "bucket" (0700), created by
//!                                     `ensure_bucket`, every object client-side encrypted; the
//!                                     bucket is the directory the placement's location names
//!                                     (`rooms/<room>` from `locate_bucket`, or an adopted
//!                                     `<dir>/<dir>` under the root)
//! ```
//!
//! Paths are built only from a validated [`RoomId`] (one path component of `a-z 0-9 _ -`) and a
//! validated [`ObjectKey`] (no empty, `.` or `..` segment, no backslash or control character),
//! and each key segment is further percent-encoded by `object_store`'s path rules (so `#`, `%`,
//! `?` and friends become `%23`, `%25`, …), so no key can leave its room's directory. The key
//! is recovered from the file name by decoding, so listing returns exactly the keys given to put.
//!
//! # Atomicity
//!
//! `put` writes through [`WriteMultipart`]: `object_store`'s `LocalFileSystem` stages a multipart
//! upload in a sibling file `<key>#<n>` (hidden from listings) and renames it over `<key>` on
//! completion (with `fsync` of the file and its directory, enabled here), so an object appears
//! whole or not at all. A body error aborts the upload, which deletes the staging file before
//! `put` returns; a put future dropped mid-way drops the upload, whose `Drop` removes the staging
//! file on the blocking pool.
//!
//! # Encryption (dedicated scopes)
//!
//! Each object gets a fresh data key from
//! [`KeyManager::generate_data_key`] bound to
//! `{"roomshard:room": <room>, "roomshard:object": <key>}`, and its body is AES-256-GCM in
//! 64 KiB chunks with the STREAM construction; the format is described in the `envelope` module
//! (private; see its source). Consequences: a revoked grant makes `put`, `get`, `copy` and
//! `presign_get` return [`Error::Sealed`] (the KeyManager's error, propagated); tampering,
//! truncation and a file moved to another key are [`Error::Corrupt`]. `head`, `list` and `usage`
//! read only the cleartext header and the file size, so they work on a sealed room. Pooled
//! objects are not encrypted here.
//!
//! # Limitations
//!
//! - Content types are kept for dedicated objects (in the header) but not for pooled ones, which
//!   are plain files: `content_type` is `None` there.
//! - No versioning, lifecycle, tags, regions or public-access settings: [`BucketSpec`] fields
//!   asking for them are [`Error::Unsupported`]. `BucketSpec::default()` asks for lifecycle,
//!   versioning and public-access blocking, so callers pass a spec with those off (a local
//!   directory is never public anyway).
//! - A key cannot be both an object and a "directory" of other objects (`a` and `a/b`): the
//!   second put fails with [`Error::Unavailable`].
//! - Deleting objects leaves empty directories behind (listings skip them).
//! - File names are the key's segments percent-encoded for ASCII punctuation `object_store`
//!   avoids (`#`, `%`, `?`, `*`, …): a segment made of many such characters can exceed the file
//!   system's 255-byte name limit, and that put fails with [`Error::Unavailable`].

use crate::envelope::{
    CHUNK_SIZE, ChunkDecryptor, ChunkEncryptor, Header, Layout, NONCE_PREFIX_LEN, PREAMBLE_LEN,
};
use crate::signed_url::{SECRET_LEN, SignedObject, UrlSigner, decode_segment};
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::{Path as StorePath, PathPart};
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use rand_core::{OsRng, RngCore};
use roomshard_core::traits::{
    BucketRef, BucketSpec, EncryptionContext, GetObject, KeyManager, ListPage, ListRequest,
    MediaStore, ObjectMeta, PutOptions, SignedUrl, Usage,
};
use roomshard_core::{
    Error, Location, MediaCapabilities, ObjectBody, ObjectKey, Result, RoomId, Scope, async_trait,
};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// Longest expiry of a signed URL: 7 days (what S3 allows for SigV4 presigned URLs).
pub const MAX_PRESIGN_EXPIRY_SECS: u64 = 7 * 24 * 3600;
/// Size of the parts `put` hands to the multipart upload.
const PART_SIZE: usize = 1024 * 1024;
/// Parts written concurrently at most; with [`PART_SIZE`] this bounds a put's buffers to ~4 MiB.
const MAX_PARTS_IN_FLIGHT: usize = 4;
/// Largest page `list` returns, and its default.
const MAX_LIST_LIMIT: u32 = 1000;
/// Encryption-context entry naming the object a data key belongs to.
pub const OBJECT_CONTEXT_KEY: &str = "roomshard:object";
/// Name of the URL-signing secret file under the root.
const URL_SECRET_FILE: &str = ".url-secret";

/// A [`MediaStore`] in a local directory, with client-side envelope encryption of dedicated
/// rooms' objects and HMAC-signed URLs. See the [module docs](self) for layout and guarantees.
///
/// `Debug` shows the root and the URL base only, never the URL-signing secret.
pub struct LocalMediaStore {
    root: PathBuf,
    store: Arc<LocalFileSystem>,
    keys: Arc<dyn KeyManager>,
    signer: UrlSigner,
    base_url: String,
}

impl fmt::Debug for LocalMediaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalMediaStore")
            .field("root", &self.root)
            .field("base_url", &self.base_url)
            .field("key_manager", &self.keys.name())
            .finish_non_exhaustive()
    }
}

fn io_error(what: impl Into<String>, e: std::io::Error) -> Error {
    Error::unavailable(what, false, e)
}

/// Maps an `object_store` error: missing things are `NotFound`, the rest `Unavailable`.
fn store_error(what: impl Into<String>, e: object_store::Error) -> Error {
    let what = what.into();
    match e {
        object_store::Error::NotFound { .. } => Error::not_found(what),
        object_store::Error::AlreadyExists { .. } => Error::AlreadyExists { what },
        other => Error::unavailable(what, false, other),
    }
}

/// Bytes read per blocking read of an object file. `object_store`'s own stream reads a local file
/// 8 KiB per `spawn_blocking`, which made thread hand-offs the largest cost of reading media
/// (measured in the flows benchmark's export); 64 KiB per read makes them 8× rarer and keeps the
/// store's bound on the chunks a `get` hands out (the encrypted path's segment size).
const READ_CHUNK_BYTES: u64 = 64 * 1024;

/// `range` of an opened object file, as a stream of [`READ_CHUNK_BYTES`] chunks read by
/// position on the blocking pool. A file that ends early is an error, never a short object.
fn file_stream(
    file: std::fs::File,
    range: std::ops::Range<u64>,
    what: String,
) -> BoxStream<'static, Result<Bytes>> {
    let file = Arc::new(file);
    futures::stream::try_unfold(range.start, move |at| {
        let (file, what, end) = (Arc::clone(&file), what.clone(), range.end);
        async move {
            if at >= end {
                return Ok(None);
            }
            let len = (end - at).min(READ_CHUNK_BYTES) as usize;
            let read = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, at).map(|()| buf)
            })
            .await
            .map_err(|e| Error::unavailable(what.clone(), false, e))?;
            match read {
                Ok(buf) => Ok(Some((Bytes::from(buf), at + len as u64))),
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(Error::corrupt(
                    what,
                    format!("the file ends before byte {end} (changed while read)"),
                )),
                Err(e) => Err(Error::unavailable(what, false, e)),
            }
        }
    })
    .boxed()
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn describe(scope: &Scope, key: &ObjectKey) -> String {
    format!("object {key} in {scope}")
}

/// The encryption context of an object's data key.
fn object_context(room: &RoomId, key: &ObjectKey) -> EncryptionContext {
    EncryptionContext::for_room(room).with(OBJECT_CONTEXT_KEY, key.as_str())
}

/// Reads (or creates, mode 0600, atomically) the URL-signing secret.
fn load_or_create_secret(root: &Path) -> Result<Zeroizing<[u8; SECRET_LEN]>> {
    let path = root.join(URL_SECRET_FILE);
    if !path.exists() {
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        OsRng.fill_bytes(secret.as_mut());
        let mut suffix = [0u8; 8];
        OsRng.fill_bytes(&mut suffix);
        let tmp = root.join(format!("{URL_SECRET_FILE}.{}.tmp", hex::encode(suffix)));
        let created = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(secret.as_ref())?;
            file.sync_all()?;
            drop(file);
            // A hard link fails if another process created the secret first: use theirs.
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        created.map_err(|e| io_error(format!("URL secret {}", path.display()), e))?;
    }
    let bytes = Zeroizing::new(
        std::fs::read(&path).map_err(|e| io_error(format!("URL secret {}", path.display()), e))?,
    );
    if bytes.len() != SECRET_LEN {
        return Err(Error::corrupt(
            format!("URL secret {}", path.display()),
            format!("{} bytes, expected {SECRET_LEN}", bytes.len()),
        ));
    }
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    secret.copy_from_slice(&bytes);
    Ok(secret)
}

/// An object opened for reading: `object_store` metadata and its byte stream.
struct Opened {
    meta: object_store::ObjectMeta,
    stream: BoxStream<'static, Result<Bytes>>,
}

/// An encrypted object's header, with what was read past it.
struct ParsedHeader {
    header: Header,
    layout: Layout,
    leftover: BytesMut,
}

impl LocalMediaStore {
    /// Opens (creating if needed) a store rooted at `root`, encrypting dedicated rooms' objects
    /// with data keys from `keys`. Creates `root/shared`, `root/rooms` and the URL-signing secret
    /// `root/.url-secret` (mode 0600) if missing.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the directories or the secret cannot be created or read;
    /// [`Error::Corrupt`] if the secret file has the wrong size.
    pub fn open(root: &Path, keys: Arc<dyn KeyManager>) -> Result<Self> {
        for dir in [root.to_path_buf(), root.join("shared"), root.join("rooms")] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| io_error(format!("media directory {}", dir.display()), e))?;
        }
        let root = std::fs::canonicalize(root)
            .map_err(|e| io_error(format!("media directory {}", root.display()), e))?;
        let secret = load_or_create_secret(&root)?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| store_error(format!("media directory {}", root.display()), e))?
            .with_fsync(true);
        Ok(LocalMediaStore {
            root,
            store: Arc::new(store),
            keys,
            signer: UrlSigner::new(secret),
            base_url: String::new(),
        })
    }

    /// Sets the prefix of signed URLs (e.g. `https://media.example.org`), so `presign_get`
    /// returns absolute URLs; by default they are relative paths (`/media/…`).
    #[must_use]
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into().trim_end_matches('/').to_owned();
        self
    }

    /// The store's root directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checks a signed URL's path and query (as `lite serve` receives it; a leading base URL
    /// given to [`with_base_url`](Self::with_base_url), or its path part, is stripped) at
    /// `now_unix` seconds, and returns what it grants a GET of: a room, whether its dedicated
    /// bucket or its shared prefix, and a key. The URL names no bucket: the caller resolves a
    /// dedicated room's bucket from its placement ([`SignedObject::scope`]), so a URL signed
    /// before the room moved still reaches its object, and no URL can name a place.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] saying why: malformed, tampered (scope, room, key, expiry or
    /// signature do not match) or expired. The signature is compared in constant time.
    pub fn verify_signed_url(&self, path_and_query: &str, now_unix: u64) -> Result<SignedObject> {
        let mut rest = path_and_query;
        if !self.base_url.is_empty() {
            if let Some(stripped) = rest.strip_prefix(self.base_url.as_str()) {
                rest = stripped;
            } else if let Some(stripped) = self.base_path().and_then(|p| rest.strip_prefix(p)) {
                rest = stripped;
            }
        }
        self.signer.verify(rest, now_unix)
    }

    /// The path part of the base URL (`/x` of `https://h/x`), if any.
    fn base_path(&self) -> Option<&str> {
        let after_scheme = self
            .base_url
            .split_once("://")
            .map_or(self.base_url.as_str(), |(_, r)| r);
        let path = after_scheme.find('/').map(|i| &after_scheme[i..])?;
        (!path.is_empty()).then_some(path)
    }

    /// Re-wraps the data key of an encrypted object under its room key's current version
    /// ([`KeyManager::rewrap_data_key`]) when it is stale after a rotation, rewriting only the
    /// header: the body's ciphertext is copied byte for byte, not re-encrypted. Returns whether
    /// it rewrote the object. Pooled objects are not encrypted: `Ok(false)`. With a key manager
    /// that can tell key versions (`key_versions`), an object already under the current version
    /// is left alone; without, every object is re-wrapped (a KMS re-encrypt is idempotent).
    ///
    /// The rewrite is atomic (staged and renamed like a put). If the object changes while it is
    /// re-wrapped (a concurrent put), the re-wrap is abandoned with [`Error::Conflict`] rather
    /// than overwriting the newer object; a put racing the final rename itself can still lose,
    /// within that narrow window, so run re-wrap sweeps where puts to the same key are rare.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the key manager lacks the `rewrap` capability;
    /// [`Error::NotFound`] for a missing object or bucket; [`Error::Sealed`] for a revoked grant;
    /// [`Error::Corrupt`] for a damaged header or wrapped key.
    pub async fn rewrap_object(&self, scope: &Scope, key: &ObjectKey) -> Result<bool> {
        let Scope::Dedicated(room, _) = scope else {
            return Ok(false);
        };
        let caps = self.keys.capabilities();
        if !caps.rewrap {
            return Err(Error::unsupported("rewrap_object", self.name()));
        }
        let location = self.location(scope, key).await?;
        let mut opened = self.open_object(scope, key, &location).await?;
        let parsed = Self::read_header(&mut opened, key.as_str()).await?;
        if caps.key_versions
            && self
                .keys
                .wrapped_key_version(room, &parsed.header.wrapped_key)
                .await?
                .is_current()
        {
            return Ok(false);
        }
        let context = object_context(room, key);
        let mut header = parsed.header.clone();
        header.wrapped_key = self
            .keys
            .rewrap_data_key(room, &parsed.header.wrapped_key, &context)
            .await?;
        let what = describe(scope, key);
        let upload = self
            .store
            .put_multipart(&location)
            .await
            .map_err(|e| store_error(what.clone(), e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        writer.put(Bytes::from(header.encode()?));
        writer.put(parsed.leftover.freeze());
        let copied: Result<()> = async {
            while let Some(chunk) = opened.stream.next().await {
                writer.put(chunk?);
                writer
                    .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| store_error(what.clone(), e))?;
            }
            let now = self
                .store
                .head(&location)
                .await
                .map_err(|e| store_error(what.clone(), e))?;
            if now.e_tag != opened.meta.e_tag {
                return Err(Error::conflict(format!(
                    "{what} changed while its data key was re-wrapped; not rewritten"
                )));
            }
            Ok(())
        }
        .await;
        if let Err(e) = copied {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.finish().await.map_err(|e| store_error(what, e))?;
        Ok(true)
    }

    /// The scope's directory as an `object_store` path: `shared/<room>`, or the bucket its
    /// location names (`rooms/<room>`).
    fn scope_path(scope: &Scope) -> Result<StorePath> {
        match scope {
            Scope::Pooled(room) => Ok(StorePath::from_iter(["shared", room.as_str()])),
            Scope::Dedicated(room, at) => {
                let name = Self::bucket_name(room, at)?;
                Ok(StorePath::from_iter(name.split('/')))
            }
        }
    }

    /// A dedicated location's bucket name, checked: two plain segments of `a-z 0-9 _ -` under
    /// the root, not in the pooled area (`shared/…`) — a placement cannot point the store
    /// outside its directory or at another room's shared prefix.
    fn bucket_name<'a>(room: &RoomId, at: &'a Location) -> Result<&'a str> {
        let name = at.bucket.as_deref().ok_or_else(|| {
            Error::invalid(
                "bucket location",
                format!("dedicated room {room} has no bucket location (locate_bucket first)"),
            )
        })?;
        let segments: Vec<&str> = name.split('/').collect();
        let plain = segments.len() == 2
            && segments.iter().all(|seg| {
                !seg.is_empty()
                    && !seg.starts_with(['-', '_'])
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
            })
            && segments[0] != "shared";
        if !plain {
            return Err(Error::invalid(
                "bucket location",
                format!(
                    "{name:?} is not a bucket of this store (write <dir>/<dir> of a-z 0-9 _ -, \
                     not under shared/)"
                ),
            ));
        }
        Ok(name)
    }

    /// The room's own bucket directory on disk.
    fn bucket_dir(&self, room: &RoomId, at: &Location) -> Result<PathBuf> {
        let name = Self::bucket_name(room, at)?;
        Ok(name
            .split('/')
            .fold(self.root.clone(), |dir, seg| dir.join(seg)))
    }

    /// For a dedicated scope, [`Error::NotFound`] unless its bucket exists.
    async fn check_bucket(&self, scope: &Scope) -> Result<()> {
        if let Scope::Dedicated(room, at) = scope {
            let dir = self.bucket_dir(room, at)?;
            let missing = || {
                Error::not_found(format!(
                    "bucket {} of room {room}",
                    at.bucket.as_deref().unwrap_or_default()
                ))
            };
            match tokio::fs::metadata(&dir).await {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(missing()),
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(missing()),
                Err(e) => return Err(io_error(format!("bucket {}", dir.display()), e)),
            }
        }
        Ok(())
    }

    /// The object's path, after checking the scope's bucket.
    async fn location(&self, scope: &Scope, key: &ObjectKey) -> Result<StorePath> {
        self.check_bucket(scope).await?;
        let mut path = Self::scope_path(scope)?;
        for segment in key.as_str().split('/') {
            path = path.join(PathPart::from(segment));
        }
        Ok(path)
    }

    async fn open_object(
        &self,
        scope: &Scope,
        key: &ObjectKey,
        location: &StorePath,
    ) -> Result<Opened> {
        self.open_location(describe(scope, key), location).await
    }

    async fn open_location(&self, what: String, location: &StorePath) -> Result<Opened> {
        let result = self
            .store
            .get(location)
            .await
            .map_err(|e| store_error(what.clone(), e))?;
        let meta = result.meta.clone();
        let stream = match result.payload {
            object_store::GetResultPayload::File(file, _) => file_stream(file, result.range, what),
            object_store::GetResultPayload::Stream(s) => s
                .map(move |chunk| chunk.map_err(|e| store_error(what.clone(), e)))
                .boxed(),
        };
        Ok(Opened { meta, stream })
    }

    /// Reads an encrypted object's header from the front of its stream.
    async fn read_header(opened: &mut Opened, what: &str) -> Result<ParsedHeader> {
        let mut buf = BytesMut::new();
        let mut need = PREAMBLE_LEN;
        loop {
            while buf.len() < need {
                match opened.stream.next().await {
                    Some(chunk) => buf.extend_from_slice(&chunk?),
                    None => {
                        return Err(Error::corrupt(
                            format!("encrypted media object {what}"),
                            "file ends inside its header (truncated)",
                        ));
                    }
                }
            }
            if need == PREAMBLE_LEN {
                need = Header::total_len(&buf)?;
                continue;
            }
            break;
        }
        let header_bytes = buf.split_to(need);
        let header = Header::decode(&header_bytes)?;
        let body_len = opened.meta.size.checked_sub(need as u64).ok_or_else(|| {
            Error::corrupt(
                format!("encrypted media object {what}"),
                "shorter than its header",
            )
        })?;
        let layout = Layout::from_body_len(body_len, header.chunk_size)?;
        Ok(ParsedHeader {
            header,
            layout,
            leftover: buf,
        })
    }

    fn to_meta(
        key: ObjectKey,
        raw: &object_store::ObjectMeta,
        size: u64,
        content_type: Option<String>,
    ) -> ObjectMeta {
        ObjectMeta {
            key,
            size,
            etag: raw.e_tag.clone(),
            last_modified_unix_ms: u64::try_from(raw.last_modified.timestamp_millis()).ok(),
            content_type,
        }
    }

    /// Metadata of the object at `location` (plaintext size and content type for encrypted
    /// objects, read from the header and the file size).
    async fn meta_at(
        &self,
        scope: &Scope,
        key: &ObjectKey,
        location: &StorePath,
    ) -> Result<ObjectMeta> {
        match scope {
            Scope::Pooled(_) => {
                let raw = self
                    .store
                    .head(location)
                    .await
                    .map_err(|e| store_error(describe(scope, key), e))?;
                Ok(Self::to_meta(key.clone(), &raw, raw.size, None))
            }
            Scope::Dedicated(..) => {
                let mut opened = self.open_object(scope, key, location).await?;
                let parsed = Self::read_header(&mut opened, key.as_str()).await?;
                Ok(Self::to_meta(
                    key.clone(),
                    &opened.meta,
                    parsed.layout.plaintext_len,
                    parsed.header.content_type,
                ))
            }
        }
    }

    /// Streams `body` into a multipart upload at `location`, encrypting for dedicated scopes.
    async fn write_body(
        &self,
        scope: &Scope,
        key: &ObjectKey,
        location: &StorePath,
        mut body: ObjectBody,
        content_type: Option<String>,
    ) -> Result<ObjectMeta> {
        let what = describe(scope, key);
        if let Some(ct) = &content_type
            && (ct.len() > usize::from(u16::MAX) || ct.chars().any(char::is_control))
        {
            return Err(Error::invalid(
                "content type",
                "use at most 65535 bytes and no control characters",
            ));
        }
        // Key material first: a sealed room fails before anything is written.
        let mut encryptor = match scope {
            Scope::Pooled(_) => None,
            Scope::Dedicated(room, _) => {
                let data_key = self
                    .keys
                    .generate_data_key(room, &object_context(room, key))
                    .await?;
                let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
                OsRng.fill_bytes(&mut nonce_prefix);
                let header = Header {
                    chunk_size: CHUNK_SIZE as u32,
                    nonce_prefix,
                    content_type: content_type.clone(),
                    key_id: data_key.key_id.clone(),
                    wrapped_key: data_key.wrapped.clone(),
                };
                let encryptor = ChunkEncryptor::new(data_key.plaintext.expose(), &header)?;
                Some((encryptor, header.encode()?))
            }
        };
        let upload = self
            .store
            .put_multipart(location)
            .await
            .map_err(|e| store_error(what.clone(), e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        if let Some((_, header)) = &encryptor {
            writer.put(Bytes::from(header.clone()));
        }
        let mut written: u64 = 0;
        let streamed: Result<()> = async {
            while let Some(chunk) = body.next_chunk().await {
                let chunk = chunk?;
                written += chunk.len() as u64;
                match &mut encryptor {
                    None => writer.put(chunk),
                    Some((enc, _)) => {
                        for frame in enc.push(chunk)? {
                            writer.put(frame);
                        }
                    }
                }
                writer
                    .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| store_error(what.clone(), e))?;
            }
            if let Some((enc, _)) = encryptor.take() {
                let (last, _) = enc.finish()?;
                writer.put(last);
            }
            Ok(())
        }
        .await;
        if let Err(e) = streamed {
            // Removes the staging file now (not later on the blocking pool), so a failed put
            // leaves nothing behind.
            if let Err(abort) = writer.abort().await {
                tracing::warn!(%what, error = %abort, "could not remove an aborted upload");
            }
            return Err(e);
        }
        let result = writer
            .finish()
            .await
            .map_err(|e| store_error(what.clone(), e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: written,
            etag: result.e_tag,
            last_modified_unix_ms: Some(now_unix_ms()),
            content_type: match scope {
                Scope::Pooled(_) => None,
                Scope::Dedicated(..) => content_type,
            },
        })
    }

    /// Walks the scope and keeps the `limit + 1` smallest keys after `after` that start with
    /// `prefix` (bounded memory whatever the scope's size), in ascending byte order.
    async fn smallest_keys(
        &self,
        scope: &Scope,
        prefix: &str,
        after: Option<&str>,
        keep: usize,
    ) -> Result<BTreeMap<String, object_store::ObjectMeta>> {
        let base = Self::scope_path(scope)?;
        // Walk only the deepest directory the prefix names (`att/20` → `att`).
        let mut walk = base.clone();
        if let Some((dir, _)) = prefix.rsplit_once('/') {
            for segment in dir.split('/').filter(|s| !s.is_empty()) {
                walk = walk.join(PathPart::from(segment));
            }
        }
        let mut found = BTreeMap::new();
        let mut listing = self.store.list(Some(&walk));
        while let Some(entry) = listing.next().await {
            let entry = match entry {
                Ok(entry) => entry,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(store_error(format!("listing of {scope}"), e)),
            };
            let Some(parts) = entry.location.prefix_match(&base) else {
                continue;
            };
            let decoded: Option<Vec<String>> = parts.map(|p| decode_segment(p.as_ref())).collect();
            let Some(key) = decoded.map(|d| d.join("/")) else {
                tracing::warn!(location = %entry.location, "skipping an undecodable file name");
                continue;
            };
            if !key.starts_with(prefix) || after.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            if ObjectKey::new(key.clone()).is_err() {
                tracing::warn!(location = %entry.location, "skipping a file that is not a valid key");
                continue;
            }
            found.insert(key, entry);
            if found.len() > keep {
                found.pop_last();
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl MediaStore for LocalMediaStore {
    fn name(&self) -> &str {
        "local"
    }

    fn capabilities(&self) -> MediaCapabilities {
        MediaCapabilities {
            streaming_put: true,
            multipart: true,
            presign_get: true,
            copy: true,
            bucket_lifecycle: false,
            bucket_encryption: false,
            versioning: false,
            tagging: false,
            public_access_block: false,
            client_side_encryption: true,
            max_object_size: None,
            max_presign_expiry_secs: Some(MAX_PRESIGN_EXPIRY_SECS),
            regions: false,
        }
    }

    /// Creates `root/rooms/<room>` (mode 0700). Refuses, before creating anything, every
    /// setting a directory cannot honour: lifecycle, versioning, public-access blocking, tags
    /// and a region are [`Error::Unsupported`]. A `kms_key` is honoured by client-side
    /// encryption when it names the key the [`KeyManager`] wraps this room's data keys with
    /// (checked by generating a throw-away data key); another key is [`Error::Invalid`].
    fn locate_bucket(&self, room: &RoomId) -> Result<String> {
        // `RoomId` admits only `a-z 0-9 _ -`: one plain path component, never `..`.
        Ok(format!("rooms/{room}"))
    }

    async fn ensure_bucket(
        &self,
        room: &RoomId,
        at: &Location,
        spec: &BucketSpec,
    ) -> Result<BucketRef> {
        if let Some(operation) = spec.unsupported_by(&self.capabilities()) {
            return Err(Error::unsupported(operation, self.name()));
        }
        if at.region.is_some() {
            return Err(Error::unsupported("ensure_bucket.region", self.name()));
        }
        let dir = self.bucket_dir(room, at)?;
        if at.adopted.bucket && !tokio::fs::try_exists(&dir).await.unwrap_or(false) {
            return Err(Error::not_found(format!(
                "adopted bucket {} of room {room} (an adopted bucket is never created)",
                at.bucket.as_deref().unwrap_or_default()
            )));
        }
        if let Some(kms_key) = &spec.kms_key {
            let context =
                EncryptionContext::for_room(room).with("roomshard:purpose", "bucket-check");
            let data_key = self.keys.generate_data_key(room, &context).await?;
            if &data_key.key_id != kms_key {
                return Err(Error::invalid(
                    "bucket spec kms_key",
                    format!(
                        "{kms_key:?}, but room {room}'s data keys are wrapped by {:?}",
                        data_key.key_id
                    ),
                ));
            }
        }
        let create = dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&create)
        })
        .await
        .map_err(|e| Error::unavailable("bucket creation task", false, e))?
        .map_err(|e| io_error(format!("bucket {}", dir.display()), e))?;
        Ok(BucketRef {
            name: Self::bucket_name(room, at)?.to_string(),
            region: None,
        })
    }

    async fn put(
        &self,
        scope: &Scope,
        key: &ObjectKey,
        body: ObjectBody,
        options: &PutOptions,
    ) -> Result<ObjectMeta> {
        let location = self.location(scope, key).await?;
        self.write_body(scope, key, &location, body, options.content_type.clone())
            .await
    }

    /// For encrypted objects, checks the key and decrypts the first chunk before returning, so a
    /// sealed room, a tampered header or a damaged first chunk fail here; damage further on
    /// surfaces as an [`Error::Corrupt`] from the body stream.
    async fn get(&self, scope: &Scope, key: &ObjectKey) -> Result<GetObject> {
        let location = self.location(scope, key).await?;
        let mut opened = self.open_object(scope, key, &location).await?;
        let room = match scope {
            Scope::Pooled(_) => {
                let meta = Self::to_meta(key.clone(), &opened.meta, opened.meta.size, None);
                let body = ObjectBody::new(opened.stream, Some(meta.size));
                return Ok(GetObject { meta, body });
            }
            Scope::Dedicated(room, _) => room,
        };
        let parsed = Self::read_header(&mut opened, key.as_str()).await?;
        let data_key = self
            .keys
            .decrypt_data_key(room, &parsed.header.wrapped_key, &object_context(room, key))
            .await?;
        let mut decryptor = ChunkDecryptor::new(
            data_key.expose(),
            &parsed.header,
            parsed.layout,
            parsed.leftover,
            opened.stream,
        )?;
        drop(data_key);
        let first = decryptor.next_plain().await?;
        let rest = futures::stream::try_unfold(decryptor, |mut d| async move {
            Ok(d.next_plain().await?.map(|chunk| (chunk, d)))
        });
        let stream = futures::stream::iter(first.filter(|c| !c.is_empty()).map(Ok))
            .chain(rest.try_filter(|c| futures::future::ready(!c.is_empty())));
        let meta = Self::to_meta(
            key.clone(),
            &opened.meta,
            parsed.layout.plaintext_len,
            parsed.header.content_type,
        );
        let body = ObjectBody::new(stream, Some(meta.size));
        Ok(GetObject { meta, body })
    }

    async fn head(&self, scope: &Scope, key: &ObjectKey) -> Result<ObjectMeta> {
        let location = self.location(scope, key).await?;
        self.meta_at(scope, key, &location).await
    }

    async fn list(&self, scope: &Scope, request: &ListRequest) -> Result<ListPage> {
        self.check_bucket(scope).await?;
        let limit = request
            .limit
            .unwrap_or(MAX_LIST_LIMIT)
            .clamp(1, MAX_LIST_LIMIT) as usize;
        let prefix = request.prefix.as_deref().unwrap_or("");
        let mut found = self
            .smallest_keys(scope, prefix, request.page_token.as_deref(), limit + 1)
            .await?;
        let more = found.len() > limit;
        if more {
            found.pop_last();
        }
        let mut objects = Vec::with_capacity(found.len());
        for (key, raw) in found {
            let key = ObjectKey::new(key)?;
            let meta = match scope {
                Scope::Pooled(_) => Self::to_meta(key, &raw, raw.size, None),
                Scope::Dedicated(..) => match self.meta_at(scope, &key, &raw.location).await {
                    Ok(meta) => meta,
                    // Deleted between the walk and now: not part of this page.
                    Err(Error::NotFound { .. }) => continue,
                    Err(e) => return Err(e),
                },
            };
            objects.push(meta);
        }
        let next_page_token = if more {
            objects.last().map(|m| m.key.as_str().to_owned())
        } else {
            None
        };
        Ok(ListPage {
            objects,
            next_page_token,
        })
    }

    async fn delete(&self, scope: &Scope, key: &ObjectKey) -> Result<()> {
        let location = self.location(scope, key).await?;
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(describe(scope, key), e)),
        }
    }

    async fn usage(&self, scope: &Scope) -> Result<Usage> {
        self.check_bucket(scope).await?;
        let base = Self::scope_path(scope)?;
        let mut usage = Usage::default();
        let mut listing = self.store.list(Some(&base));
        while let Some(entry) = listing.next().await {
            let entry = match entry {
                Ok(entry) => entry,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(store_error(format!("usage of {scope}"), e)),
            };
            let size = match scope {
                Scope::Pooled(_) => entry.size,
                Scope::Dedicated(..) => {
                    let what = entry.location.to_string();
                    let mut opened = match self.open_location(what.clone(), &entry.location).await {
                        Ok(opened) => opened,
                        Err(Error::NotFound { .. }) => continue,
                        Err(e) => return Err(e),
                    };
                    Self::read_header(&mut opened, &what)
                        .await?
                        .layout
                        .plaintext_len
                }
            };
            usage.bytes += size;
            usage.objects += 1;
        }
        Ok(usage)
    }

    /// Removes the scope's directory tree, staging files (`<key>#<n>`, left by a put killed
    /// before its rename, invisible to `list`) included; a dedicated bucket's directory is
    /// recreated empty (mode 0700), so the bucket itself stays.
    async fn purge(&self, scope: &Scope) -> Result<()> {
        let dir = match scope {
            Scope::Pooled(room) => self.root.join("shared").join(room.as_str()),
            Scope::Dedicated(room, at) => self.bucket_dir(room, at)?,
        };
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(format!("scope {}", dir.display()), e)),
        }
        if let Scope::Dedicated(..) = scope {
            let create = dir.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&create)
            })
            .await
            .map_err(|e| Error::unavailable("bucket creation task", false, e))?
            .map_err(|e| io_error(format!("bucket {}", dir.display()), e))?;
        }
        Ok(())
    }

    async fn drop_bucket(&self, room: &RoomId, at: &Location) -> Result<()> {
        if at.bucket.is_none() || at.adopted.bucket {
            // Nothing was located, or the bucket is the customer's: left as it is.
            return Ok(());
        }
        let dir = self.bucket_dir(room, at)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(format!("bucket {}", dir.display()), e)),
        }
    }

    /// Pooled → pooled is a file-system copy (a hard link renamed into place). Every copy that
    /// involves a dedicated scope decrypts and/or re-encrypts inside the store (the destination
    /// object gets its own data key, bound to its own key name), without the bytes passing
    /// through the caller.
    async fn copy(
        &self,
        from: &Scope,
        from_key: &ObjectKey,
        to: &Scope,
        to_key: &ObjectKey,
    ) -> Result<ObjectMeta> {
        let source = self.location(from, from_key).await?;
        let dest = self.location(to, to_key).await?;
        if let (Scope::Pooled(_), Scope::Pooled(_)) = (from, to) {
            self.store
                .copy(&source, &dest)
                .await
                .map_err(|e| store_error(describe(from, from_key), e))?;
            return self.meta_at(to, to_key, &dest).await;
        }
        let object = self.get(from, from_key).await?;
        let content_type = object.meta.content_type.clone();
        self.write_body(to, to_key, &dest, object.body, content_type)
            .await
    }

    /// Signs a relative (or [`with_base_url`](LocalMediaStore::with_base_url)-prefixed) URL
    /// checked by [`LocalMediaStore::verify_signed_url`]. For a dedicated scope it first asks
    /// the key manager for a throw-away data key under the room's context — the cheapest real
    /// check that the grant still stands — so a sealed room gets [`Error::Sealed`]. Pooled
    /// scopes are not under a room key and are not checked.
    async fn presign_get(
        &self,
        scope: &Scope,
        key: &ObjectKey,
        expires_in: Duration,
    ) -> Result<SignedUrl> {
        let secs = expires_in.as_secs() + u64::from(expires_in.subsec_nanos() > 0);
        if secs == 0 || secs > MAX_PRESIGN_EXPIRY_SECS {
            return Err(Error::invalid(
                "expires_in",
                format!("{expires_in:?}: use 1 second to {MAX_PRESIGN_EXPIRY_SECS} seconds"),
            ));
        }
        if let Scope::Dedicated(room, _) = scope {
            let context = EncryptionContext::for_room(room).with("roomshard:purpose", "presign");
            self.keys.generate_data_key(room, &context).await?;
        }
        let exp = now_unix_ms() / 1000 + secs;
        let path = self.signer.sign(scope, key, exp)?;
        Ok(SignedUrl::new(
            format!("{}{path}", self.base_url),
            exp * 1000,
        ))
    }
}
