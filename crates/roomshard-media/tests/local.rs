//! Behaviour tests of `LocalMediaStore` against the `MediaStore` contract.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures::StreamExt;
use roomshard_core::traits::{
    BucketSpec, Grantee, KeyManager, ListRequest, MediaStore, PutOptions,
};
use roomshard_core::{
    EncryptionContext, Error, KeySpec, Location, ObjectBody, ObjectKey, RoomId, Scope,
};
use roomshard_kms::LocalKeyManager;
use roomshard_media::{LocalMediaStore, MAX_PRESIGN_EXPIRY_SECS, SignedObject};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

const CHUNK: usize = 64 * 1024;

struct Env {
    _dir: TempDir,
    media: PathBuf,
    keys: Arc<LocalKeyManager>,
    store: LocalMediaStore,
    room: RoomId,
}

impl Env {
    fn dedicated(&self) -> Scope {
        Scope::Dedicated(self.room.clone(), at(&self.store, &self.room))
    }
    fn pooled(&self) -> Scope {
        Scope::Pooled(self.room.clone())
    }
    fn file(&self, scope: &Scope, key: &str) -> PathBuf {
        let kind = match scope {
            Scope::Pooled(_) => "shared",
            Scope::Dedicated(..) => "rooms",
        };
        self.media.join(kind).join(scope.room().as_str()).join(key)
    }
}

/// What a local store can honour: no lifecycle, versioning or public-access block.
fn local_spec() -> BucketSpec {
    BucketSpec {
        lifecycle_ia_days: None,
        block_public_access: false,
        versioning: false,
        ..BucketSpec::default()
    }
}

/// The local key manager without its `rewrap` and `key_versions` capabilities.
struct NoRewrap(Arc<LocalKeyManager>);

#[roomshard_core::async_trait]
impl KeyManager for NoRewrap {
    fn name(&self) -> &str {
        "no-rewrap"
    }
    fn capabilities(&self) -> roomshard_core::KeyCapabilities {
        roomshard_core::KeyCapabilities {
            rewrap: false,
            key_versions: false,
            ..self.0.capabilities()
        }
    }
    async fn ensure_room_key(
        &self,
        room: &RoomId,
        spec: &KeySpec,
    ) -> roomshard_core::Result<roomshard_core::KeyRef> {
        self.0.ensure_room_key(room, spec).await
    }
    async fn generate_data_key(
        &self,
        room: &RoomId,
        context: &EncryptionContext,
    ) -> roomshard_core::Result<roomshard_core::DataKey> {
        self.0.generate_data_key(room, context).await
    }
    async fn decrypt_data_key(
        &self,
        room: &RoomId,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> roomshard_core::Result<roomshard_core::SecretBytes> {
        self.0.decrypt_data_key(room, wrapped, context).await
    }
}

/// Where `store` puts `room`'s bucket, as a placement would record it.
fn at(store: &LocalMediaStore, room: &RoomId) -> Location {
    Location {
        bucket: Some(store.locate_bucket(room).unwrap()),
        ..Location::default()
    }
}

fn grantee() -> Grantee {
    Grantee::new("mesh").unwrap()
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(LocalKeyManager::open(dir.path().join("keys"), grantee()).unwrap());
    let room = RoomId::new("general").unwrap();
    keys.ensure_room_key(&room, &KeySpec::default())
        .await
        .unwrap();
    let media = dir.path().join("media");
    let store = LocalMediaStore::open(&media, keys.clone()).unwrap();
    store
        .ensure_bucket(&room, &at(&store, &room), &local_spec())
        .await
        .unwrap();
    let media = std::fs::canonicalize(&media).unwrap();
    Env {
        _dir: dir,
        media,
        keys,
        store,
        room,
    }
}

fn key(k: &str) -> ObjectKey {
    ObjectKey::new(k).unwrap()
}

/// Deterministic content: byte `i` of the object.
fn byte_at(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// A body of `len` bytes produced in `piece`-sized chunks, never held whole, with no declared
/// length (so the store cannot rely on one).
fn generated(len: u64, piece: usize) -> ObjectBody {
    let stream = futures::stream::unfold(0u64, move |at| async move {
        if at >= len {
            return None;
        }
        let n = (len - at).min(piece as u64);
        let chunk: Vec<u8> = (at..at + n).map(byte_at).collect();
        Some((Ok(Bytes::from(chunk)), at + n))
    });
    ObjectBody::new(stream, None)
}

fn expected_digest(len: u64) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut at = 0;
    while at < len {
        let n = (len - at).min(1 << 20);
        let chunk: Vec<u8> = (at..at + n).map(byte_at).collect();
        h.update(&chunk);
        at += n;
    }
    h.finalize().to_vec()
}

/// Reads a body chunk by chunk; returns its digest, length and largest chunk.
async fn digest_body(mut body: ObjectBody) -> roomshard_core::Result<(Vec<u8>, u64, usize)> {
    let mut h = Sha256::new();
    let (mut len, mut largest) = (0u64, 0usize);
    while let Some(chunk) = body.next_chunk().await {
        let chunk = chunk?;
        len += chunk.len() as u64;
        largest = largest.max(chunk.len());
        h.update(&chunk);
    }
    Ok((h.finalize().to_vec(), len, largest))
}

async fn read_all(
    store: &LocalMediaStore,
    scope: &Scope,
    k: &str,
) -> roomshard_core::Result<Bytes> {
    store
        .get(scope, &key(k))
        .await?
        .body
        .collect(u64::MAX)
        .await
}

/// Every file under `dir`, recursively, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

/// Parses the cleartext header of an encrypted object (format v1): (header length, wrapped key).
fn header_of(file: &[u8]) -> (usize, Vec<u8>) {
    assert_eq!(&file[..4], b"RSME");
    let rest = u32::from_be_bytes(file[5..9].try_into().unwrap()) as usize;
    let mut at = 9 + 4 + 7;
    let mut field = || {
        let len = u16::from_be_bytes(file[at..at + 2].try_into().unwrap()) as usize;
        let v = file[at + 2..at + 2 + len].to_vec();
        at += 2 + len;
        v
    };
    let _content_type = field();
    let _key_id = field();
    let wrapped = field();
    (9 + rest, wrapped)
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trips_every_size_in_both_scopes() {
    let env = env().await;
    let sizes = [
        0u64,
        1,
        CHUNK as u64,
        CHUNK as u64 + 1,
        20 * 1024 * 1024 + 12_345,
    ];
    for scope in [env.dedicated(), env.pooled()] {
        for size in sizes {
            let k = format!("att/{size}.bin");
            let opts = PutOptions {
                content_type: Some("application/octet-stream".into()),
            };
            let meta = env
                .store
                .put(&scope, &key(&k), generated(size, 7919), &opts)
                .await
                .unwrap();
            assert_eq!(meta.size, size, "{scope} {size}");
            let head = env.store.head(&scope, &key(&k)).await.unwrap();
            assert_eq!(head.size, size);
            let got = env.store.get(&scope, &key(&k)).await.unwrap();
            assert_eq!(got.meta.size, size);
            assert_eq!(got.body.length(), Some(size));
            if matches!(scope, Scope::Dedicated(..)) {
                assert_eq!(
                    head.content_type.as_deref(),
                    Some("application/octet-stream")
                );
                assert_eq!(got.meta.content_type, head.content_type);
            }
            let (digest, len, largest) = digest_body(got.body).await.unwrap();
            assert_eq!(len, size);
            assert!(largest <= CHUNK, "chunk of {largest} bytes handed out");
            assert_eq!(digest, expected_digest(size), "{scope} {size}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn big_objects_stream_in_bounded_memory() {
    let env = env().await;
    let scope = env.dedicated();
    let total: u64 = 64 * 1024 * 1024;
    let handed = Arc::new(AtomicU64::new(0));
    let worst_gap = Arc::new(AtomicU64::new(0));
    let dir = env.file(&scope, "");
    let (h, w) = (handed.clone(), worst_gap.clone());
    // Before handing out each chunk, measure how far the staged upload on disk lags behind
    // what the store has been given: if the store collected the body, the gap would grow to
    // the whole object.
    let stream = futures::stream::unfold(0u64, move |at| {
        let (h, w, dir) = (h.clone(), w.clone(), dir.clone());
        async move {
            if at >= total {
                return None;
            }
            let on_disk: u64 = std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().contains('#'))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum();
            let given = h.load(Ordering::SeqCst);
            w.fetch_max(given.saturating_sub(on_disk), Ordering::SeqCst);
            let chunk = Bytes::from(vec![(at / CHUNK as u64) as u8; CHUNK]);
            h.fetch_add(CHUNK as u64, Ordering::SeqCst);
            Some((Ok(chunk), at + CHUNK as u64))
        }
    });
    let meta = env
        .store
        .put(
            &scope,
            &key("big.bin"),
            ObjectBody::new(stream, None),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(meta.size, total);
    let gap = worst_gap.load(Ordering::SeqCst);
    assert!(
        gap <= 8 * 1024 * 1024,
        "store held {gap} bytes not yet on disk"
    );
    let on_disk = std::fs::metadata(env.file(&scope, "big.bin"))
        .unwrap()
        .len();
    assert!(on_disk > total, "ciphertext plus tags and header");

    let mut body = env.store.get(&scope, &key("big.bin")).await.unwrap().body;
    let (mut n, mut at) = (0usize, 0u64);
    while let Some(chunk) = body.next_chunk().await {
        let chunk = chunk.unwrap();
        assert!(chunk.len() <= CHUNK, "chunk of {} bytes", chunk.len());
        assert!(chunk.iter().all(|b| *b == (at / CHUNK as u64) as u8));
        at += chunk.len() as u64;
        n += 1;
    }
    assert_eq!(at, total);
    assert!(n >= (total as usize) / CHUNK);
}

#[tokio::test(flavor = "multi_thread")]
async fn dedicated_objects_are_encrypted_on_disk_pooled_are_not() {
    let env = env().await;
    let marker = b"PLAINTEXT-MARKER-".repeat(10_000);
    for scope in [env.dedicated(), env.pooled()] {
        env.store
            .put(
                &scope,
                &key("doc.txt"),
                marker.clone().into(),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        let raw = std::fs::read(env.file(&scope, "doc.txt")).unwrap();
        let leaks = raw.windows(17).any(|w| w == b"PLAINTEXT-MARKER-");
        match scope {
            Scope::Dedicated(..) => assert!(!leaks, "plaintext on disk"),
            Scope::Pooled(_) => assert_eq!(raw, marker),
        }
        assert_eq!(
            read_all(&env.store, &scope, "doc.txt").await.unwrap(),
            marker
        );
    }
}

fn assert_corrupt(r: roomshard_core::Result<impl std::fmt::Debug>) {
    match r {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tampering_is_corrupt() {
    let env = env().await;
    let scope = env.dedicated();
    let put = |k: &'static str, size: u64| {
        let store = &env.store;
        let scope = scope.clone();
        async move {
            store
                .put(
                    &scope,
                    &key(k),
                    generated(size, 4096),
                    &PutOptions::default(),
                )
                .await
                .unwrap();
        }
    };
    // A flipped byte in the only chunk: get itself fails.
    put("small", 1000).await;
    let path = env.file(&scope, "small");
    let mut raw = std::fs::read(&path).unwrap();
    let last = raw.len() - 20;
    raw[last] ^= 1;
    std::fs::write(&path, &raw).unwrap();
    assert_corrupt(env.store.get(&scope, &key("small")).await);

    // A flipped byte in a later chunk: the stream fails there.
    put("large", 3 * CHUNK as u64).await;
    let path = env.file(&scope, "large");
    let mut raw = std::fs::read(&path).unwrap();
    let at = raw.len() - CHUNK / 2;
    raw[at] ^= 0x80;
    std::fs::write(&path, &raw).unwrap();
    let got = env.store.get(&scope, &key("large")).await.unwrap();
    assert_corrupt(digest_body(got.body).await);

    // A tampered wrapped key, and a tampered content type (authenticated by every chunk).
    put("hdr", 10).await;
    let path = env.file(&scope, "hdr");
    let clean = std::fs::read(&path).unwrap();
    let (header_len, _) = header_of(&clean);
    let mut raw = clean.clone();
    raw[header_len - 3] ^= 1;
    std::fs::write(&path, &raw).unwrap();
    assert_corrupt(env.store.get(&scope, &key("hdr")).await);
    // A content type changed in place (same length, so the header still parses).
    let store = &env.store;
    let typed = PutOptions {
        content_type: Some("image/png".into()),
    };
    store
        .put(&scope, &key("typed"), generated(10, 10), &typed)
        .await
        .unwrap();
    let path = env.file(&scope, "typed");
    let mut raw = std::fs::read(&path).unwrap();
    let at = raw.windows(9).position(|w| w == b"image/png").unwrap();
    raw[at + 8] = b'x';
    std::fs::write(&path, &raw).unwrap();
    assert_eq!(
        store
            .head(&scope, &key("typed"))
            .await
            .unwrap()
            .content_type
            .as_deref(),
        Some("image/pnx")
    );
    assert_corrupt(store.get(&scope, &key("typed")).await);

    // An object moved to another key: its data key is bound to the old name.
    put("moved-from", 10).await;
    std::fs::rename(env.file(&scope, "moved-from"), env.file(&scope, "moved-to")).unwrap();
    assert_corrupt(env.store.get(&scope, &key("moved-to")).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn truncation_and_appending_are_corrupt() {
    let env = env().await;
    let scope = env.dedicated();
    env.store
        .put(
            &scope,
            &key("obj"),
            generated(2 * CHUNK as u64 + 100, 5000),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let path = env.file(&scope, "obj");
    let clean = std::fs::read(&path).unwrap();
    let (header_len, _) = header_of(&clean);
    let frame = CHUNK + 16;
    let cuts = [
        clean.len() - 1,        // inside the last chunk
        header_len + 2 * frame, // exactly after two full chunks
        header_len + frame,     // exactly after one
        header_len,             // header only
        header_len - 5,         // inside the header
    ];
    for cut in cuts {
        std::fs::write(&path, &clean[..cut]).unwrap();
        let outcome = match env.store.get(&scope, &key("obj")).await {
            Ok(got) => digest_body(got.body).await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert_corrupt(outcome);
    }
    let mut longer = clean.clone();
    longer.extend_from_slice(&[0u8; 16]);
    std::fs::write(&path, &longer).unwrap();
    let outcome = match env.store.get(&scope, &key("obj")).await {
        Ok(got) => digest_body(got.body).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert_corrupt(outcome);
}

fn assert_sealed(r: roomshard_core::Result<impl std::fmt::Debug>) {
    match r {
        Err(Error::Sealed { room }) => assert_eq!(room.as_str(), "general"),
        other => panic!("expected Sealed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_grant_seals_and_regrant_restores() {
    let env = env().await;
    let scope = env.dedicated();
    env.store
        .put(
            &scope,
            &key("a"),
            Bytes::from_static(b"hello").into(),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    env.keys.revoke(&env.room, &grantee()).await.unwrap();

    assert_sealed(env.store.get(&scope, &key("a")).await);
    assert_sealed(
        env.store
            .put(
                &scope,
                &key("b"),
                Bytes::from_static(b"x").into(),
                &PutOptions::default(),
            )
            .await,
    );
    assert_sealed(
        env.store
            .presign_get(&scope, &key("a"), Duration::from_secs(60))
            .await,
    );
    assert_sealed(env.store.copy(&scope, &key("a"), &scope, &key("c")).await);
    // A failed put left nothing behind.
    assert!(matches!(
        env.store.head(&scope, &key("b")).await,
        Err(Error::NotFound { .. })
    ));
    // Metadata stays readable: the header and the file size are not secret.
    assert_eq!(env.store.head(&scope, &key("a")).await.unwrap().size, 5);
    // Pooled objects are not under the room key.
    env.store
        .put(
            &env.pooled(),
            &key("p"),
            Bytes::from_static(b"pooled").into(),
            &PutOptions::default(),
        )
        .await
        .unwrap();

    env.keys.grant(&env.room, &grantee()).await.unwrap();
    assert_eq!(read_all(&env.store, &scope, "a").await.unwrap(), "hello");
    env.store
        .put(
            &scope,
            &key("b"),
            Bytes::from_static(b"x").into(),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    env.store
        .presign_get(&scope, &key("a"), Duration::from_secs(60))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_keeps_old_objects_readable_and_rewrap_updates_the_header_only() {
    let env = env().await;
    let scope = env.dedicated();
    let body = b"before rotation".repeat(10_000);
    env.store
        .put(
            &scope,
            &key("old"),
            body.clone().into(),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    env.keys.rotate(&env.room).await.unwrap();
    assert_eq!(read_all(&env.store, &scope, "old").await.unwrap(), body);

    env.store
        .put(
            &scope,
            &key("new"),
            Bytes::from_static(b"after").into(),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let (_, wrapped_new) = header_of(&std::fs::read(env.file(&scope, "new")).unwrap());
    assert_eq!(LocalKeyManager::key_version(&wrapped_new).unwrap(), 2);

    let before = std::fs::read(env.file(&scope, "old")).unwrap();
    let (old_len, wrapped_old) = header_of(&before);
    assert_eq!(LocalKeyManager::key_version(&wrapped_old).unwrap(), 1);
    assert!(env.store.rewrap_object(&scope, &key("old")).await.unwrap());
    let after = std::fs::read(env.file(&scope, "old")).unwrap();
    let (new_len, wrapped) = header_of(&after);
    assert_eq!(LocalKeyManager::key_version(&wrapped).unwrap(), 2);
    assert_eq!(before[old_len..], after[new_len..], "body re-encrypted");
    assert_eq!(read_all(&env.store, &scope, "old").await.unwrap(), body);
    // Already current: nothing to do. New objects need nothing either.
    assert!(!env.store.rewrap_object(&scope, &key("old")).await.unwrap());
    assert!(!env.store.rewrap_object(&scope, &key("new")).await.unwrap());
    assert!(
        !env.store
            .rewrap_object(&env.pooled(), &key("new"))
            .await
            .unwrap()
    );
    // No stray staging files.
    assert_eq!(files_under(&env.file(&scope, "")), vec!["new", "old"]);

    // With a key manager that cannot re-wrap, rewrap_object is unsupported.
    let plain = LocalMediaStore::open(&env.media, Arc::new(NoRewrap(env.keys.clone()))).unwrap();
    assert!(matches!(
        plain.rewrap_object(&scope, &key("old")).await,
        Err(Error::Unsupported {
            operation: "rewrap_object",
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn list_is_sorted_paged_and_prefixed() {
    let env = env().await;
    let keys = [
        "b", "a/2", "a/10", "a/1", "A", "a b", "\u{e4}", "x#1", "x%y", "x?z", "..a", "a/1/deep",
    ];
    // "a/1" as a file and "a/1/deep" below it cannot coexist on a file system; skip the file.
    let keys: Vec<&str> = keys.into_iter().filter(|k| *k != "a/1").collect();
    for scope in [env.dedicated(), env.pooled()] {
        for k in &keys {
            env.store
                .put(
                    &scope,
                    &key(k),
                    Bytes::from(k.as_bytes().to_vec()).into(),
                    &PutOptions::default(),
                )
                .await
                .unwrap();
        }
        let mut sorted: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        sorted.sort();
        // One page.
        let page = env
            .store
            .list(&scope, &ListRequest::default())
            .await
            .unwrap();
        let got: Vec<String> = page.objects.iter().map(|m| m.key.to_string()).collect();
        assert_eq!(got, sorted, "{scope}");
        assert_eq!(page.next_page_token, None);
        for m in &page.objects {
            assert_eq!(m.size, m.key.as_str().len() as u64);
        }
        // Pages of 3.
        let mut paged = Vec::new();
        let mut token = None;
        loop {
            let page = env
                .store
                .list(
                    &scope,
                    &ListRequest {
                        prefix: None,
                        page_token: token.clone(),
                        limit: Some(3),
                    },
                )
                .await
                .unwrap();
            assert!(page.objects.len() <= 3);
            paged.extend(page.objects.iter().map(|m| m.key.to_string()));
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(paged, sorted);
        // Prefixes, segment-aligned or not.
        for (prefix, want) in [
            ("a/", vec!["a/1/deep", "a/10", "a/2"]),
            ("a/1", vec!["a/1/deep", "a/10"]),
            ("a", vec!["a b", "a/1/deep", "a/10", "a/2"]),
            ("x", vec!["x#1", "x%y", "x?z"]),
            ("nothing/", vec![]),
        ] {
            let page = env
                .store
                .list(
                    &scope,
                    &ListRequest {
                        prefix: Some(prefix.into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let got: Vec<&str> = page.objects.iter().map(|m| m.key.as_str()).collect();
            assert_eq!(got, want, "{scope} prefix {prefix:?}");
        }
        let usage = env.store.usage(&scope).await.unwrap();
        assert_eq!(usage.objects, keys.len() as u64);
        assert_eq!(
            usage.bytes,
            keys.iter().map(|k| k.len() as u64).sum::<u64>()
        );
    }
    // Every file stayed inside its room's directory.
    for f in files_under(&env.media) {
        assert!(
            f.starts_with("rooms/general/")
                || f.starts_with("shared/general/")
                || f == ".url-secret",
            "{f}"
        );
    }
    // An empty pooled scope is an empty page.
    let other = Scope::Pooled(RoomId::new("other").unwrap());
    let page = env
        .store
        .list(&other, &ListRequest::default())
        .await
        .unwrap();
    assert!(page.objects.is_empty() && page.next_page_token.is_none());
    assert_eq!(env.store.usage(&other).await.unwrap().objects, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn traversal_looking_keys_are_refused_or_contained() {
    let env = env().await;
    for bad in [
        "../escape",
        "a/../../b",
        "/abs",
        "a//b",
        "./a",
        "a\\b",
        "a\nb",
        "",
    ] {
        assert!(
            matches!(ObjectKey::new(bad), Err(Error::Invalid { .. })),
            "{bad:?}"
        );
    }
    assert!(RoomId::new("../x").is_err());
    let scope = env.dedicated();
    for odd in ["%2e%2e/x", "..%2F..%2Fescape", "...", "a/%2F/b"] {
        env.store
            .put(
                &scope,
                &key(odd),
                Bytes::from_static(b"x").into(),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(read_all(&env.store, &scope, odd).await.unwrap(), "x");
    }
    for f in files_under(&env.media) {
        assert!(f.starts_with("rooms/general/") || f == ".url-secret", "{f}");
    }
    assert!(!env.media.parent().unwrap().join("escape").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_and_drop_bucket_are_idempotent() {
    let env = env().await;
    let scope = env.dedicated();
    env.store
        .put(
            &scope,
            &key("d/x"),
            Bytes::from_static(b"1").into(),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    env.store.delete(&scope, &key("d/x")).await.unwrap();
    env.store.delete(&scope, &key("d/x")).await.unwrap();
    env.store.delete(&scope, &key("never")).await.unwrap();
    assert!(matches!(
        env.store.get(&scope, &key("d/x")).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        env.store.head(&scope, &key("d/x")).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(env.store.usage(&scope).await.unwrap().objects, 0);

    env.store
        .put(
            &scope,
            &key("y"),
            Bytes::from_static(b"1").into(),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    env.store
        .drop_bucket(&env.room, &at(&env.store, &env.room))
        .await
        .unwrap();
    env.store
        .drop_bucket(&env.room, &at(&env.store, &env.room))
        .await
        .unwrap();
    assert!(!env.file(&scope, "").exists());
    // Object operations on a missing dedicated bucket are NotFound.
    assert!(matches!(
        env.store.get(&scope, &key("y")).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        env.store
            .put(
                &scope,
                &key("y"),
                Bytes::from_static(b"1").into(),
                &PutOptions::default()
            )
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        env.store.list(&scope, &ListRequest::default()).await,
        Err(Error::NotFound { .. })
    ));
    assert!(!env.file(&scope, "").exists(), "put recreated the bucket");
    // ensure_bucket brings it back, idempotently.
    let a = env
        .store
        .ensure_bucket(&env.room, &at(&env.store, &env.room), &local_spec())
        .await
        .unwrap();
    let b = env
        .store
        .ensure_bucket(&env.room, &at(&env.store, &env.room), &local_spec())
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.name, "rooms/general");
    assert!(
        env.store
            .list(&scope, &ListRequest::default())
            .await
            .unwrap()
            .objects
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_body_leaves_no_object_and_no_temp_file() {
    let env = env().await;
    for scope in [env.dedicated(), env.pooled()] {
        // An old object survives a failed replacement.
        env.store
            .put(
                &scope,
                &key("f/old"),
                Bytes::from_static(b"old").into(),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        for k in ["f/new", "f/old"] {
            let chunks = (0..40)
                .map(|i| {
                    if i < 39 {
                        Ok(Bytes::from(vec![7u8; 100_000]))
                    } else {
                        Err(Error::unavailable("upstream", true, "connection reset"))
                    }
                })
                .collect::<Vec<_>>();
            let body = ObjectBody::new(futures::stream::iter(chunks), None);
            let err = env
                .store
                .put(&scope, &key(k), body, &PutOptions::default())
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Unavailable { .. }), "{err}");
            // A declared length the stream does not meet fails the same way.
            let short = ObjectBody::new(
                futures::stream::iter([Ok(Bytes::from_static(b"ab"))]),
                Some(3),
            );
            let err = env
                .store
                .put(&scope, &key(k), short, &PutOptions::default())
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Invalid { .. }), "{err}");
        }
        assert!(matches!(
            env.store.head(&scope, &key("f/new")).await,
            Err(Error::NotFound { .. })
        ));
        assert_eq!(read_all(&env.store, &scope, "f/old").await.unwrap(), "old");
        assert_eq!(files_under(&env.file(&scope, "f")), vec!["old"], "{scope}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_within_and_across_scopes() {
    let env = env().await;
    let (ded, pool) = (env.dedicated(), env.pooled());
    let body = b"copy me".repeat(30_000);
    let opts = PutOptions {
        content_type: Some("text/plain".into()),
    };
    env.store
        .put(&pool, &key("src"), body.clone().into(), &opts)
        .await
        .unwrap();
    // pooled -> pooled, pooled -> dedicated, dedicated -> dedicated, dedicated -> pooled.
    let steps = [
        (&pool, "src", &pool, "p2"),
        (&pool, "p2", &ded, "d1"),
        (&ded, "d1", &ded, "d2"),
        (&ded, "d2", &pool, "p3"),
    ];
    for (from, fk, to, tk) in steps {
        let meta = env.store.copy(from, &key(fk), to, &key(tk)).await.unwrap();
        assert_eq!(meta.size, body.len() as u64);
        assert_eq!(
            read_all(&env.store, to, tk).await.unwrap(),
            body,
            "{to} {tk}"
        );
        assert_eq!(
            read_all(&env.store, from, fk).await.unwrap(),
            body,
            "source changed"
        );
    }
    // Content types travel with encrypted objects (pooled files carry none).
    env.store
        .put(&ded, &key("typed"), body.clone().into(), &opts)
        .await
        .unwrap();
    let meta = env
        .store
        .copy(&ded, &key("typed"), &ded, &key("typed2"))
        .await
        .unwrap();
    assert_eq!(meta.content_type.as_deref(), Some("text/plain"));
    let head = env.store.head(&ded, &key("typed2")).await.unwrap();
    assert_eq!(head.content_type.as_deref(), Some("text/plain"));
    let d1 = std::fs::read(env.file(&ded, "d1")).unwrap();
    let d2 = std::fs::read(env.file(&ded, "d2")).unwrap();
    assert_ne!(
        header_of(&d1).1,
        header_of(&d2).1,
        "copies share a data key"
    );
    assert!(matches!(
        env.store.copy(&ded, &key("missing"), &ded, &key("x")).await,
        Err(Error::NotFound { .. })
    ));
    assert!(env.store.capabilities().copy);
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_urls_are_bound_to_scope_room_key_and_expiry() {
    let env = env().await;
    let scope = env.dedicated();
    let k = key("att/2026/a b.png");
    let signed = env
        .store
        .presign_get(&scope, &k, Duration::from_secs(600))
        .await
        .unwrap();
    let url = signed.url().to_owned();
    assert!(
        url.starts_with("/media/rooms/general/att/2026/a%20b.png?exp="),
        "{url}"
    );
    let exp = signed.expires_at_unix_ms() / 1000;
    assert!(exp >= now() + 599 && exp <= now() + 601);
    assert_eq!(
        env.store.verify_signed_url(&url, now()).unwrap(),
        SignedObject {
            room: scope.room().clone(),
            dedicated: true,
            key: k.clone()
        }
    );

    let refused = |u: &str, at: u64| match env.store.verify_signed_url(u, at) {
        Err(Error::PermissionDenied { what }) => what,
        other => panic!("{u}: expected PermissionDenied, got {other:?}"),
    };
    let tampered = [
        url.replace("a%20b.png", "a%20c.png"),
        url.replace("/general/", "/other/"),
        url.replace("/rooms/", "/shared/"),
        url.replace(&format!("exp={exp}"), &format!("exp={}", exp + 1)),
        {
            let (head, sig) = url.split_once("sig=").unwrap();
            let flipped = if sig.starts_with('0') { "1" } else { "0" };
            format!("{head}sig={flipped}{}", &sig[1..])
        },
        url.replace("sig=", "sig=00"),
        format!("{url}&extra=1"),
        url.split_once('?').unwrap().0.to_owned(),
        url.replace("/media/", "/x/"),
    ];
    for t in &tampered {
        let why = refused(t, now());
        assert!(why.contains("signed URL refused"), "{why}");
    }
    assert!(refused(&tampered[0], now()).contains("signature does not match"));
    assert!(refused(&url, exp).contains("expired"));
    assert!(refused(&url, exp + 100).contains("expired"));

    // Expiry bounds.
    for bad in [
        Duration::ZERO,
        Duration::from_secs(MAX_PRESIGN_EXPIRY_SECS + 1),
    ] {
        assert!(matches!(
            env.store.presign_get(&scope, &k, bad).await,
            Err(Error::Invalid { .. })
        ));
    }
    assert_eq!(
        env.store.capabilities().max_presign_expiry_secs,
        Some(MAX_PRESIGN_EXPIRY_SECS)
    );
    env.store
        .presign_get(&scope, &k, Duration::from_secs(MAX_PRESIGN_EXPIRY_SECS))
        .await
        .unwrap();

    // Pooled URLs, and absolute URLs with a base.
    let store = LocalMediaStore::open(&env.media, env.keys.clone())
        .unwrap()
        .with_base_url("https://media.example.org/base/");
    let pooled = store
        .presign_get(&env.pooled(), &k, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        pooled
            .url()
            .starts_with("https://media.example.org/base/media/shared/general/")
    );
    let granted = store.verify_signed_url(pooled.url(), now()).unwrap();
    assert_eq!(
        (granted.scope(None), granted.key),
        (Some(env.pooled()), k.clone())
    );
    let path_only = pooled.url().trim_start_matches("https://media.example.org");
    assert!(store.verify_signed_url(path_only, now()).is_ok());
    // Same secret on disk: the first store verifies the second's relative URL too.
    let rel = pooled
        .url()
        .trim_start_matches("https://media.example.org/base");
    assert!(env.store.verify_signed_url(rel, now()).is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_url_secret_is_private_and_never_printed() {
    use std::os::unix::fs::PermissionsExt;
    let env = env().await;
    let path = env.media.join(".url-secret");
    let secret = std::fs::read(&path).unwrap();
    assert_eq!(secret.len(), 32);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let shown = format!("{:?} {:#?}", env.store, env.store);
    assert!(!shown.contains(&hex::encode(&secret)), "{shown}");
    assert!(!shown.contains(&hex::encode_upper(&secret)), "{shown}");
    assert!(!shown.contains(&format!("{:?}", &secret[..8])), "{shown}");
    assert!(shown.contains("LocalMediaStore"));
    // Reopening keeps the secret (URLs survive restarts).
    let _again = LocalMediaStore::open(&env.media, env.keys.clone()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), secret);
}

#[tokio::test(flavor = "multi_thread")]
async fn ensure_bucket_refuses_what_it_cannot_honour() {
    let env = env().await;
    let room = RoomId::new("fresh").unwrap();
    env.keys
        .ensure_room_key(&room, &KeySpec::default())
        .await
        .unwrap();
    let caps = env.store.capabilities();
    assert!(
        caps.streaming_put && caps.multipart && caps.presign_get && caps.client_side_encryption
    );
    assert!(!(caps.bucket_lifecycle || caps.bucket_encryption || caps.versioning));
    assert!(!(caps.tagging || caps.public_access_block));

    let unsupported = |spec: BucketSpec, op: &'static str| {
        let store = &env.store;
        let room = room.clone();
        async move {
            match store.ensure_bucket(&room, &at(store, &room), &spec).await {
                Err(Error::Unsupported { operation, .. }) => assert_eq!(operation, op),
                other => panic!("expected Unsupported {op}, got {other:?}"),
            }
        }
    };
    unsupported(BucketSpec::default(), "ensure_bucket.lifecycle_ia_days").await;
    unsupported(
        BucketSpec {
            versioning: true,
            ..local_spec()
        },
        "ensure_bucket.versioning",
    )
    .await;
    let mut tagged = local_spec();
    tagged.tags.insert("cost".into(), "x".into());
    unsupported(tagged, "ensure_bucket.tags").await;
    unsupported(
        BucketSpec {
            region: Some("eu-west-1".into()),
            ..local_spec()
        },
        "ensure_bucket.region",
    )
    .await;
    assert!(
        !env.media.join("rooms/fresh").exists(),
        "created before refusing"
    );

    // A kms_key naming the room's key is honoured by client-side encryption; another is not.
    let right = BucketSpec {
        kms_key: Some("local:room/fresh".into()),
        ..local_spec()
    };
    env.store
        .ensure_bucket(&room, &at(&env.store, &room), &right)
        .await
        .unwrap();
    let wrong = BucketSpec {
        kms_key: Some("arn:aws:kms:eu-west-1:1:key/x".into()),
        ..local_spec()
    };
    assert!(matches!(
        env.store
            .ensure_bucket(&room, &at(&env.store, &room), &wrong)
            .await,
        Err(Error::Invalid { .. })
    ));
    assert!(env.media.join("rooms/fresh").is_dir());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_put_leaves_no_object_and_cleans_its_staging_file() {
    let env = env().await;
    let scope = env.dedicated();
    // Two chunks, then a body that never ends.
    let stream = futures::stream::iter([
        Ok(Bytes::from(vec![1u8; 200_000])),
        Ok(Bytes::from(vec![2u8; 200_000])),
    ])
    .chain(futures::stream::pending());
    let (hang, opts) = (key("hang"), PutOptions::default());
    let put = env
        .store
        .put(&scope, &hang, ObjectBody::new(stream, None), &opts);
    let timed_out = tokio::time::timeout(Duration::from_millis(300), put).await;
    assert!(timed_out.is_err(), "the put cannot finish");
    assert!(matches!(
        env.store.head(&scope, &key("hang")).await,
        Err(Error::NotFound { .. })
    ));
    // The staging file is removed by the upload's Drop on the blocking pool.
    let dir = env.file(&scope, "");
    for _ in 0..100 {
        if files_under(&dir).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("left behind: {:?}", files_under(&dir));
}
