//! Checks of [`MediaStore`]'s documented behaviour.

use super::{
    CheckResult, CheckSpec, Context, Failure, Kind, Report, Verdict, checks, ensure, expect_kind,
    expect_unsupported, fresh_room, now_unix_ms, run_checks,
};
use roomshard_core::{
    BucketSpec, Bytes, Error, Grantee, KeyManager, KeySpec, ListRequest, Location, MediaStore,
    ObjectBody, ObjectKey, PutOptions, RoomId, Scope,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What the media suite needs to know beyond the trait.
#[derive(Clone, Default)]
pub struct MediaSuiteConfig {
    /// The key manager the store encrypts with, if any: the suite makes sure each room it uses
    /// has a key (client-side encryption needs one) and, with [`acting_as`](Self::acting_as),
    /// revokes the grant to check that a sealed room's objects are refused.
    pub keys: Option<Arc<dyn KeyManager>>,
    /// The principal `keys` acts as.
    pub acting_as: Option<Grantee>,
    /// Prefix of the room ids the suite creates (default `cf`).
    pub room_prefix: Option<String>,
}

impl std::fmt::Debug for MediaSuiteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSuiteConfig")
            .field("keys", &self.keys.as_ref().map(|k| k.name().to_string()))
            .field("acting_as", &self.acting_as)
            .field("room_prefix", &self.room_prefix)
            .finish()
    }
}

impl MediaSuiteConfig {
    async fn room(&self) -> Result<RoomId, Failure> {
        let room = fresh_room(self.room_prefix.as_deref().unwrap_or("cf"))?;
        if let Some(keys) = &self.keys {
            keys.ensure_room_key(&room, &KeySpec::default())
                .await
                .context("ensure_room_key for the suite's room")?;
        }
        Ok(room)
    }
}

/// The checks of the media suite, in the order [`run_media_suite`] runs them.
pub fn media_checks() -> Vec<CheckSpec<dyn MediaStore, MediaSuiteConfig>> {
    checks!(dyn MediaStore, MediaSuiteConfig;
        locate_bucket_is_pure_and_ensure_bucket_goes_there, an_adopted_bucket_is_never_created_or_dropped, ensure_bucket_is_idempotent, ensure_bucket_refuses_what_it_cannot_honour, put_get_round_trip, large_streamed_object_round_trips, put_replaces_an_object, failed_put_leaves_the_old_object, missing_object_is_not_found_and_delete_is_idempotent, dedicated_scope_without_bucket_is_not_found, scopes_are_isolated, list_is_ordered_filtered_and_paged, usage_counts_objects, objects_over_the_size_limit_are_refused, drop_bucket_is_idempotent, copy_server_side, presign_get_bounds, revoked_room_is_sealed,
    )
}

/// Runs every media-store check against `store` and reports each.
pub async fn run_media_suite(
    store: &(dyn MediaStore + 'static),
    config: &MediaSuiteConfig,
) -> Report {
    run_checks("media", store.name(), &media_checks(), store, config).await
}

/// A bucket spec with every optional setting off: what any store can honour.
pub fn plain_spec() -> BucketSpec {
    BucketSpec {
        region: None,
        kms_key: None,
        lifecycle_ia_days: None,
        block_public_access: false,
        versioning: false,
        tags: BTreeMap::new(),
    }
}

fn key(k: &str) -> Result<ObjectKey, Failure> {
    ObjectKey::new(k).map_err(|e| Failure::new(format!("object key {k:?}: {e}")))
}

/// Deterministic test bytes of `len`, different per `seed`.
fn bytes_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(u32::from(seed)) as u8)
        .collect()
}

/// A body streamed in chunks of `chunk` bytes, declaring its length.
fn chunked(data: &[u8], chunk: usize) -> ObjectBody {
    let chunks: Vec<roomshard_core::Result<Bytes>> = data
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    ObjectBody::new(futures::stream::iter(chunks), Some(data.len() as u64))
}

async fn read_all(
    store: &dyn MediaStore,
    scope: &Scope,
    k: &ObjectKey,
) -> Result<Vec<u8>, Failure> {
    let got = store.get(scope, k).await.context(&format!("get {k}"))?;
    let declared = got.meta.size;
    let bytes = got
        .body
        .collect(u64::MAX)
        .await
        .context(&format!("reading the body of {k}"))?;
    ensure(bytes.len() as u64 == declared, || {
        format!(
            "get {k}: metadata says {declared} bytes, the body gave {}",
            bytes.len()
        )
    })?;
    Ok(bytes.to_vec())
}

/// Where `store` puts `room`'s bucket (its own `locate_bucket`): what a placement would record
/// before `ensure_bucket`.
fn located(store: &dyn MediaStore, room: &RoomId) -> Result<Location, Failure> {
    Ok(Location {
        bucket: Some(store.locate_bucket(room).context("locate_bucket")?),
        ..Location::default()
    })
}

/// `room`'s dedicated scope at the location `store` gives it.
fn dedicated(store: &dyn MediaStore, room: &RoomId) -> Result<Scope, Failure> {
    Ok(Scope::Dedicated(room.clone(), located(store, room)?))
}

/// Requires `room` to have no bucket where `store` would put it (listing it is `NotFound`).
async fn expect_no_bucket(store: &dyn MediaStore, room: &RoomId, doing: &str) -> CheckResult {
    expect_kind(
        store
            .list(&dedicated(store, room)?, &ListRequest::default())
            .await,
        Kind::NotFound,
        doing,
    )?;
    Ok(Verdict::Passed)
}

async fn with_bucket(store: &dyn MediaStore, config: &MediaSuiteConfig) -> Result<RoomId, Failure> {
    let room = config.room().await?;
    store
        .ensure_bucket(&room, &located(store, &room)?, &plain_spec())
        .await
        .context("ensure_bucket with a plain spec")?;
    Ok(room)
}

/// `locate_bucket`: "No side effect; … the same for the same room"; `ensure_bucket` makes the
/// bucket `at.bucket` names, and a location without one is `Error::Invalid`.
pub async fn locate_bucket_is_pure_and_ensure_bucket_goes_there(
    store: &dyn MediaStore,
    config: &MediaSuiteConfig,
) -> CheckResult {
    let room = config.room().await?;
    let first = store.locate_bucket(&room).context("locate_bucket")?;
    let again = store.locate_bucket(&room).context("locate_bucket again")?;
    ensure(first == again, || {
        format!("locate_bucket answered {first:?}, then {again:?}")
    })?;
    expect_no_bucket(
        store,
        &room,
        "listing a located bucket before ensure_bucket (locate must create nothing)",
    )
    .await?;
    let made = store
        .ensure_bucket(&room, &located(store, &room)?, &plain_spec())
        .await
        .context("ensure_bucket at the located name")?;
    ensure(made.name == first, || {
        format!("ensure_bucket made {:?}, not {first:?}", made.name)
    })?;
    expect_kind(
        store
            .ensure_bucket(&room, &Location::default(), &plain_spec())
            .await,
        Kind::Invalid,
        "ensure_bucket with a location that names no bucket",
    )?;
    Ok(Verdict::Passed)
}

/// `ensure_bucket`: "an adopted one … must exist (`Error::NotFound` otherwise) and is never
/// created"; `drop_bucket`: "An adopted bucket is the customer's: left as it is, objects
/// included".
pub async fn an_adopted_bucket_is_never_created_or_dropped(
    store: &dyn MediaStore,
    config: &MediaSuiteConfig,
) -> CheckResult {
    let room = config.room().await?;
    let mut adopted = located(store, &room)?;
    adopted.adopted.bucket = true;
    expect_kind(
        store.ensure_bucket(&room, &adopted, &plain_spec()).await,
        Kind::NotFound,
        "ensure_bucket of an adopted bucket that does not exist",
    )?;
    expect_no_bucket(
        store,
        &room,
        "listing after a refused adoption (nothing may be created)",
    )
    .await?;
    // The customer's bucket exists (made the ordinary way, standing in for theirs).
    store
        .ensure_bucket(&room, &located(store, &room)?, &plain_spec())
        .await
        .context("making the bucket that stands in for the customer's")?;
    store
        .ensure_bucket(&room, &adopted, &plain_spec())
        .await
        .context("ensure_bucket of an existing adopted bucket")?;
    let scope = Scope::Dedicated(room.clone(), adopted.clone());
    let k = key("theirs.txt")?;
    store
        .put(
            &scope,
            &k,
            chunked(b"customer data", 4),
            &PutOptions::default(),
        )
        .await
        .context("put into the adopted bucket")?;
    store
        .drop_bucket(&room, &adopted)
        .await
        .context("drop_bucket of an adopted bucket")?;
    ensure(
        read_all(store, &scope, &k).await? == b"customer data",
        || "drop_bucket of an adopted bucket changed its objects".into(),
    )?;
    Ok(Verdict::Passed)
}

/// "Idempotent and converging: on an existing bucket it … returns the same `BucketRef`."
pub async fn ensure_bucket_is_idempotent(
    store: &dyn MediaStore,
    config: &MediaSuiteConfig,
) -> CheckResult {
    let room = config.room().await?;
    let first = store
        .ensure_bucket(&room, &located(store, &room)?, &plain_spec())
        .await
        .context("ensure_bucket")?;
    let again = store
        .ensure_bucket(&room, &located(store, &room)?, &plain_spec())
        .await
        .context("ensure_bucket again")?;
    ensure(first == again, || {
        format!("ensure_bucket returned {first:?}, then {again:?}")
    })?;
    ensure(!first.name.is_empty(), || "the bucket name is empty".into())?;
    Ok(Verdict::Passed)
}

/// "Every `spec` field the store cannot honour is `Error::Unsupported` (the operation named by
/// `BucketSpec::unsupported_by`), checked before anything is created"; fields it can honour are
/// accepted.
pub async fn ensure_bucket_refuses_what_it_cannot_honour(
    store: &dyn MediaStore,
    config: &MediaSuiteConfig,
) -> CheckResult {
    let caps = store.capabilities();
    let mut tags = BTreeMap::new();
    tags.insert("cost-center".to_string(), "rooms".to_string());
    let variants: Vec<(&str, BucketSpec)> = vec![
        (
            "kms_key",
            BucketSpec {
                kms_key: Some("conformance-key".into()),
                ..plain_spec()
            },
        ),
        (
            "lifecycle_ia_days",
            BucketSpec {
                lifecycle_ia_days: Some(30),
                ..plain_spec()
            },
        ),
        (
            "block_public_access",
            BucketSpec {
                block_public_access: true,
                ..plain_spec()
            },
        ),
        (
            "versioning",
            BucketSpec {
                versioning: true,
                ..plain_spec()
            },
        ),
        (
            "tags",
            BucketSpec {
                tags,
                ..plain_spec()
            },
        ),
    ];
    for (field, spec) in variants {
        let room = config.room().await?;
        match spec.unsupported_by(&caps) {
            Some(operation) => {
                let err = expect_kind(
                    store
                        .ensure_bucket(&room, &located(store, &room)?, &spec)
                        .await,
                    Kind::Unsupported,
                    &format!("ensure_bucket with {field}, which the capabilities rule out"),
                )?;
                if let Error::Unsupported { operation: op, .. } = &err {
                    ensure(*op == operation, || {
                        format!(
                            "ensure_bucket with {field}: Unsupported names {op:?}, not {operation:?}"
                        )
                    })?;
                }
                expect_kind(
                    store
                        .list(&dedicated(store, &room)?, &ListRequest::default())
                        .await,
                    Kind::NotFound,
                    &format!(
                        "listing the bucket after ensure_bucket refused {field} (nothing may be created)"
                    ),
                )?;
            }
            // A kms_key the store can honour must name a real key; the suite has none to give.
            None if field == "kms_key" => {}
            None => {
                store
                    .ensure_bucket(&room, &located(store, &room)?, &spec)
                    .await
                    .context(&format!(
                        "ensure_bucket with {field}, which the capabilities allow"
                    ))?;
            }
        }
    }
    Ok(Verdict::Passed)
}

/// `put` then `get` and `head`: the same bytes, size and content type.
pub async fn put_get_round_trip(store: &dyn MediaStore, config: &MediaSuiteConfig) -> CheckResult {
    let room = config.room().await?;
    let scope = Scope::Pooled(room);
    let k = key("attachments/2026/photo.png")?;
    let data = bytes_of(200_000, 1);
    let options = PutOptions {
        content_type: Some("image/png".into()),
    };
    let meta = store
        .put(&scope, &k, chunked(&data, 7_000), &options)
        .await
        .context("put")?;
    ensure(meta.key == k && meta.size == data.len() as u64, || {
        format!("put returned {meta:?} for {} bytes under {k}", data.len())
    })?;
    let head = store.head(&scope, &k).await.context("head")?;
    ensure(head.size == data.len() as u64, || {
        format!("head says {} bytes, {} were put", head.size, data.len())
    })?;
    // `ObjectMeta::content_type` is "MIME type, if stored": a store may keep none, but one it
    // reports must be the one put.
    ensure(
        head.content_type
            .as_deref()
            .is_none_or(|t| t == "image/png"),
        || {
            format!(
                "head reports content type {:?}, image/png was put",
                head.content_type
            )
        },
    )?;
    let got = store.get(&scope, &k).await.context("get")?;
    ensure(
        got.meta
            .content_type
            .as_deref()
            .is_none_or(|t| t == "image/png"),
        || {
            format!(
                "get reports content type {:?}, image/png was put",
                got.meta.content_type
            )
        },
    )?;
    ensure(got.body.length() == Some(data.len() as u64), || {
        format!(
            "get must declare the body's length ({} bytes), declared {:?}",
            data.len(),
            got.body.length()
        )
    })?;
    let back = got
        .body
        .collect(u64::MAX)
        .await
        .context("reading the body")?;
    ensure(back.as_ref() == data.as_slice(), || {
        "get returned other bytes than were put".into()
    })?;
    let empty = key("empty")?;
    store
        .put(&scope, &empty, ObjectBody::empty(), &PutOptions::default())
        .await
        .context("put of an empty object")?;
    ensure(read_all(store, &scope, &empty).await?.is_empty(), || {
        "an empty object read back non-empty".into()
    })?;
    Ok(Verdict::Passed)
}

/// "Streams: reads `body` chunk by chunk": an object of several MiB in 64 KiB chunks (over a
/// multipart threshold for stores that have one) round-trips in a dedicated bucket.
pub async fn large_streamed_object_round_trips(
    store: &dyn MediaStore,
    config: &MediaSuiteConfig,
) -> CheckResult {
    let room = with_bucket(store, config).await?;
    let scope = dedicated(store, &room)?;
    let k = key("video/big.bin")?;
    let size = 6 * 1024 * 1024 + 123;
    if store
        .capabilities()
        .max_object_size
        .is_some_and(|m| m < size as u64)
    {
        return Ok(Verdict::NotApplicable(format!(
            "max_object_size is below the {size} bytes this check puts"
        )));
    }
    let data = bytes_of(size, 9);
    store
        .put(
            &scope,
            &k,
            chunked(&data, 64 * 1024),
            &PutOptions::default(),
        )
        .await
        .context("put of a large object")?;
    let back = read_all(store, &scope, &k).await?;
    ensure(Sha256::digest(&back) == Sha256::digest(&data), || {
        "a large object read back with other bytes".into()
    })?;
    Ok(Verdict::Passed)
}

/// "Stores `body` under `key`, replacing any object there."
pub async fn put_replaces_an_object(
    store: &dyn MediaStore,
    config: &MediaSuiteConfig,
) -> CheckResult {
    let scope = Scope::Pooled(config.room().await?);
    let k = key("doc.txt")?;
    store
        .put(
            &scope,
            &k,
            ObjectBody::from(b"first version".to_vec()),
            &PutOptions::default(),
        )
        .await
        .context("put")?;
    store
        .put(
            &scope,
            &k,
            ObjectBody::from(b"second".to_vec()),
            &PutOptions::default(),
        )
        .await
        .context("put over it")?;
    let back = read_all(store, &scope, &k).await?;
    ensure(back == b"second", || {
        format!(
            "after replacing, get returned {:?}",
            String::from_utf8_lossy(&back)
        )
    })?;
    Ok(Verdict::Passed)
}

/// "A body error (including the length check of `ObjectBody`) aborts the put and is returned";
/// "a failed or dropped put leaves the old object (or none), never a truncated one".
pub async fn failed_put_leaves_the_old_object(
    store: &dyn MediaStore,
    config: &MediaSuiteConfig,
) -> CheckResult {
    let scope = Scope::Pooled(config.room().await?);
    let k = key("kept.bin")?;
    let old = bytes_of(10_000, 3);
    store
        .put(
            &scope,
            &k,
            ObjectBody::from(old.clone()),
            &PutOptions::default(),
        )
        .await
        .context("put")?;

    let failing = ObjectBody::new(
        futures::stream::iter(vec![
            Ok(Bytes::from(bytes_of(70_000, 4))),
            Err(Error::unavailable(
                "conformance body",
                false,
                "the body broke",
            )),
        ]),
        None,
    );
    let err = store.put(&scope, &k, failing, &PutOptions::default()).await;
    ensure(err.is_err(), || {
        "put of a body that fails halfway succeeded".into()
    })?;
    // 70 000 bytes declared as 100 000: the body's own length check fails.
    let short = ObjectBody::new(
        futures::stream::iter(vec![Ok(Bytes::from(bytes_of(70_000, 5)))]),
        Some(100_000),
    );
    expect_kind(
        store.put(&scope, &k, short, &PutOptions::default()).await,
        Kind::Invalid,
        "put of a body shorter than its declared length",
    )?;
    let back = read_all(store, &scope, &k).await?;
    ensure(back == old, || {
        format!(
            "after failed puts the object holds {} bytes, not the old {}",
            back.len(),
            old.len()
        )
    })?;

    let fresh = key("never.bin")?;
    let failing = ObjectBody::new(
        futures::stream::iter(vec![
            Ok(Bytes::from(bytes_of(1_000, 6))),
            Err(Error::unavailable(
                "conformance body",
                false,
                "the body broke",
            )),
        ]),
        None,
    );
    ensure(
        store
            .put(&scope, &fresh, failing, &PutOptions::default())
            .await
            .is_err(),
        || "put of a failing body succeeded".into(),
    )?;
    expect_kind(
        store.head(&scope, &fresh).await,
        Kind::NotFound,
        "head of a key whose only put failed (no truncated object may appear)",
    )?;
    Ok(Verdict::Passed)
}

/// "A missing object is `Error::NotFound`" (get, head); "Deletes an object. Idempotent: a missing
/// object is `Ok`."
pub async fn missing_object_is_not_found_and_delete_is_idempotent(
    store: &dyn MediaStore,
    config: &MediaSuiteConfig,
) -> CheckResult {
    let scope = Scope::Pooled(config.room().await?);
    let k = key("gone.txt")?;
    expect_kind(
        store.get(&scope, &k).await,
        Kind::NotFound,
        "get of a missing object",
    )?;
    expect_kind(
        store.head(&scope, &k).await,
        Kind::NotFound,
        "head of a missing object",
    )?;
    store
        .delete(&scope, &k)
        .await
        .context("delete of a missing object")?;
    store
        .put(
            &scope,
            &k,
            ObjectBody::from(b"x".to_vec()),
            &PutOptions::default(),
        )
        .await
        .context("put")?;
    store.delete(&scope, &k).await.context("delete")?;
    store.delete(&scope, &k).await.context("delete again")?;
    expect_kind(
        store.head(&scope, &k).await,
        Kind::NotFound,
        "head after delete",
    )?;
    Ok(Verdict::Passed)
}

/// "Object operations on a dedicated scope whose bucket does not exist return
/// `Error::NotFound`."
pub async fn dedicated_scope_without_bucket_is_not_found(
    store: &dyn MediaStore,
    config: &MediaSuiteConfig,
) -> CheckResult {
    let scope = dedicated(store, &config.room().await?)?;
    let k = key("a.txt")?;
    expect_kind(
        store
            .put(
                &scope,
                &k,
                ObjectBody::from(b"x".to_vec()),
                &PutOptions::default(),
            )
            .await,
        Kind::NotFound,
        "put into a dedicated scope without a bucket",
    )?;
    expect_kind(
        store.get(&scope, &k).await,
        Kind::NotFound,
        "get from a dedicated scope without a bucket",
    )?;
    expect_kind(
        store.head(&scope, &k).await,
        Kind::NotFound,
        "head in a dedicated scope without a bucket",
    )?;
    expect_kind(
        store.list(&scope, &ListRequest::default()).await,
        Kind::NotFound,
        "list of a dedicated scope without a bucket",
    )?;
    Ok(Verdict::Passed)
}

/// "The same key names the same object wherever the room lives" — and only that room's: a key in
/// one pooled room is not visible in another, nor in the room's own bucket.
pub async fn scopes_are_isolated(store: &dyn MediaStore, config: &MediaSuiteConfig) -> CheckResult {
    let a = with_bucket(store, config).await?;
    let b = config.room().await?;
    let k = key("shared-name.txt")?;
    let pooled_a = Scope::Pooled(a.clone());
    store
        .put(
            &pooled_a,
            &k,
            ObjectBody::from(b"room a".to_vec()),
            &PutOptions::default(),
        )
        .await
        .context("put in pooled room a")?;
    expect_kind(
        store.head(&Scope::Pooled(b.clone()), &k).await,
        Kind::NotFound,
        "head of room a's key in pooled room b",
    )?;
    expect_kind(
        store.head(&dedicated(store, &a)?, &k).await,
        Kind::NotFound,
        "head of room a's pooled key in room a's own bucket",
    )?;
    store
        .put(
            &Scope::Pooled(b.clone()),
            &k,
            ObjectBody::from(b"room b".to_vec()),
            &PutOptions::default(),
        )
        .await
        .context("put in pooled room b")?;
    ensure(read_all(store, &pooled_a, &k).await? == b"room a", || {
        "room b's put changed room a's object".into()
    })?;
    let empty = store
        .list(
            &Scope::Pooled(config.room().await?),
            &ListRequest::default(),
        )
        .await
        .context("list of a pooled room with no objects")?;
    ensure(
        empty.objects.is_empty() && empty.next_page_token.is_none(),
        || format!("a pooled room with no objects listed {empty:?}"),
    )?;
    Ok(Verdict::Passed)
}

/// "Keys in ascending byte order …, filtered by `request.prefix`, at most `request.limit`;
/// `next_page_token` is `Some` while more remain"; "An empty scope … is an empty page".
pub async fn list_is_ordered_filtered_and_paged(
    store: &dyn MediaStore,
    config: &MediaSuiteConfig,
) -> CheckResult {
    let room = with_bucket(store, config).await?;
    let scope = dedicated(store, &room)?;
    let empty = store
        .list(&scope, &ListRequest::default())
        .await
        .context("list of an empty bucket")?;
    ensure(
        empty.objects.is_empty() && empty.next_page_token.is_none(),
        || format!("an empty bucket listed {empty:?}"),
    )?;
    let names = ["b", "a/2", "Z", "a/10", "a/1x", "a/1", "a-b", "c/d/e"];
    for (i, n) in names.iter().enumerate() {
        store
            .put(
                &scope,
                &key(n)?,
                ObjectBody::from(bytes_of(i + 1, i as u8)),
                &PutOptions::default(),
            )
            .await
            .context(&format!("put {n}"))?;
    }
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort_unstable();

    let mut seen = Vec::new();
    let mut token = None;
    for page_no in 0..100 {
        let page = store
            .list(
                &scope,
                &ListRequest {
                    prefix: None,
                    page_token: token.clone(),
                    limit: Some(3),
                },
            )
            .await
            .context(&format!("list page {page_no}"))?;
        ensure(page.objects.len() <= 3, || {
            format!("a page with limit 3 held {} objects", page.objects.len())
        })?;
        seen.extend(page.objects.iter().map(|o| o.key.as_str().to_string()));
        token = page.next_page_token;
        if token.is_none() {
            break;
        }
    }
    ensure(seen == sorted, || {
        format!("paging through the bucket gave {seen:?}, expected {sorted:?}")
    })?;
    let all = store
        .list(&scope, &ListRequest::default())
        .await
        .context("list")?;
    for o in &all.objects {
        let i = names.iter().position(|n| *n == o.key.as_str()).unwrap_or(0);
        ensure(o.size == (i + 1) as u64, || {
            format!(
                "list says {} is {} bytes, {} were put",
                o.key,
                o.size,
                i + 1
            )
        })?;
    }

    let filtered = store
        .list(
            &scope,
            &ListRequest {
                prefix: Some("a/".into()),
                ..ListRequest::default()
            },
        )
        .await
        .context("list with prefix a/")?;
    let got: Vec<&str> = filtered.objects.iter().map(|o| o.key.as_str()).collect();
    ensure(got == ["a/1", "a/10", "a/1x", "a/2"], || {
        format!("list with prefix \"a/\" gave {got:?}")
    })?;
    Ok(Verdict::Passed)
}

/// "Bytes and objects stored in a scope (current versions)": counts objects exactly and at least
/// their bytes (a store may count its own overhead, e.g. encryption headers).
pub async fn usage_counts_objects(
    store: &dyn MediaStore,
    config: &MediaSuiteConfig,
) -> CheckResult {
    let scope = Scope::Pooled(config.room().await?);
    let before = store
        .usage(&scope)
        .await
        .context("usage of an empty scope")?;
    ensure(before.objects == 0 && before.bytes == 0, || {
        format!("an empty scope uses {before:?}")
    })?;
    for (i, size) in [100usize, 2_000, 30_000].into_iter().enumerate() {
        store
            .put(
                &scope,
                &key(&format!("u/{i}"))?,
                ObjectBody::from(bytes_of(size, 0)),
                &PutOptions::default(),
            )
            .await
            .context("put")?;
    }
    let used = store.usage(&scope).await.context("usage")?;
    ensure(used.objects == 3 && used.bytes >= 32_100, || {
        format!("3 objects of 32 100 bytes in all, usage says {used:?}")
    })?;
    Ok(Verdict::Passed)
}

/// "An object over `max_object_size` is `Error::QuotaExceeded`."
pub async fn objects_over_the_size_limit_are_refused(
    store: &dyn MediaStore,
    config: &MediaSuiteConfig,
) -> CheckResult {
    let Some(limit) = store.capabilities().max_object_size else {
        return Ok(Verdict::NotApplicable(
            "max_object_size is None (unbounded)".into(),
        ));
    };
    if limit > 64 * 1024 * 1024 {
        return Ok(Verdict::NotApplicable(format!(
            "max_object_size is {limit} bytes; exceeding it would be slow"
        )));
    }
    let scope = Scope::Pooled(config.room().await?);
    let k = key("too-big.bin")?;
    let data = vec![0u8; (limit + 1) as usize];
    expect_kind(
        store
            .put(&scope, &k, chunked(&data, 1 << 20), &PutOptions::default())
            .await,
        Kind::QuotaExceeded,
        &format!("put of {} bytes with max_object_size {limit}", limit + 1),
    )?;
    expect_kind(
        store.head(&scope, &k).await,
        Kind::NotFound,
        "head of the refused object",
    )?;
    Ok(Verdict::Passed)
}

/// "Deletes `room`'s own bucket with every object and version in it"; "Idempotent: a missing
/// bucket is `Ok`."
pub async fn drop_bucket_is_idempotent(
    store: &dyn MediaStore,
    config: &MediaSuiteConfig,
) -> CheckResult {
    let room = with_bucket(store, config).await?;
    let scope = dedicated(store, &room)?;
    for i in 0..3 {
        store
            .put(
                &scope,
                &key(&format!("d/{i}"))?,
                ObjectBody::from(bytes_of(10, i)),
                &PutOptions::default(),
            )
            .await
            .context("put")?;
    }
    let pooled = Scope::Pooled(room.clone());
    store
        .put(
            &pooled,
            &key("pooled.txt")?,
            ObjectBody::from(b"stays".to_vec()),
            &PutOptions::default(),
        )
        .await
        .context("put in the pooled scope")?;
    store
        .drop_bucket(&room, &located(store, &room)?)
        .await
        .context("drop_bucket")?;
    store
        .drop_bucket(&room, &located(store, &room)?)
        .await
        .context("drop_bucket again")?;
    expect_kind(
        store.list(&scope, &ListRequest::default()).await,
        Kind::NotFound,
        "list of a dropped bucket",
    )?;
    ensure(
        read_all(store, &pooled, &key("pooled.txt")?).await? == b"stays",
        || "drop_bucket touched the room's pooled objects".into(),
    )?;
    let never = config.room().await?;
    store
        .drop_bucket(&never, &located(store, &never)?)
        .await
        .context("drop_bucket of a room that never had one")?;
    Ok(Verdict::Passed)
}

/// `copy`: "Replaces any object at the destination; the source is unchanged; a missing source is
/// `Error::NotFound`."
pub async fn copy_server_side(store: &dyn MediaStore, config: &MediaSuiteConfig) -> CheckResult {
    let room = with_bucket(store, config).await?;
    let from = Scope::Pooled(room.clone());
    let to = dedicated(store, &room)?;
    let (src, dst) = (key("src.bin")?, key("copied/dst.bin")?);
    if !store.capabilities().copy {
        return expect_unsupported(store.copy(&from, &src, &to, &dst).await, "copy", "copy");
    }
    let data = bytes_of(150_000, 7);
    store
        .put(&from, &src, chunked(&data, 10_000), &PutOptions::default())
        .await
        .context("put source")?;
    store
        .put(
            &to,
            &dst,
            ObjectBody::from(b"old".to_vec()),
            &PutOptions::default(),
        )
        .await
        .context("put destination")?;
    let meta = store.copy(&from, &src, &to, &dst).await.context("copy")?;
    ensure(meta.key == dst && meta.size == data.len() as u64, || {
        format!("copy returned {meta:?}")
    })?;
    ensure(read_all(store, &to, &dst).await? == data, || {
        "the copy holds other bytes than the source".into()
    })?;
    ensure(read_all(store, &from, &src).await? == data, || {
        "copy changed the source".into()
    })?;
    expect_kind(
        store.copy(&from, &key("no-such-source")?, &to, &dst).await,
        Kind::NotFound,
        "copy of a missing source",
    )?;
    Ok(Verdict::Passed)
}

/// `presign_get`: "`expires_in` of zero, or longer than `max_presign_expiry_secs`, is
/// `Error::Invalid`"; "Does not check that the object exists"; the expiry is reported.
pub async fn presign_get_bounds(store: &dyn MediaStore, config: &MediaSuiteConfig) -> CheckResult {
    let scope = Scope::Pooled(config.room().await?);
    let k = key("shared/link.png")?;
    let caps = store.capabilities();
    if !caps.presign_get {
        return expect_unsupported(
            store.presign_get(&scope, &k, Duration::from_secs(60)).await,
            "presign_get",
            "presign_get",
        );
    }
    expect_kind(
        store.presign_get(&scope, &k, Duration::ZERO).await,
        Kind::Invalid,
        "presign_get with a zero expiry",
    )?;
    if let Some(max) = caps.max_presign_expiry_secs {
        expect_kind(
            store
                .presign_get(&scope, &k, Duration::from_secs(max + 1))
                .await,
            Kind::Invalid,
            &format!(
                "presign_get for {} s with max_presign_expiry_secs {max}",
                max + 1
            ),
        )?;
    }
    let before = now_unix_ms();
    let url = store
        .presign_get(&scope, &k, Duration::from_secs(300))
        .await
        .context("presign_get of a key that does not exist yet")?;
    ensure(!url.url().is_empty(), || "the signed URL is empty".into())?;
    let expires = url.expires_at_unix_ms();
    ensure(
        expires + 5_000 >= before + 300_000 && expires <= now_unix_ms() + 300_000 + 5_000,
        || format!("a 300 s URL expires at {expires}, issued at about {before}"),
    )?;
    let other = store
        .presign_get(&scope, &key("shared/other.png")?, Duration::from_secs(300))
        .await
        .context("presign_get of another key")?;
    ensure(other.url() != url.url(), || {
        "two keys were given the same signed URL".into()
    })?;
    Ok(Verdict::Passed)
}

/// "When the bytes cannot be decrypted because the room's key grant was revoked … they return
/// `Error::Sealed`"; `presign_get`: "A sealed room is `Error::Sealed`: no new URL is issued".
/// Needs `client_side_encryption` and a key manager that can revoke the grant it acts under.
pub async fn revoked_room_is_sealed(
    store: &dyn MediaStore,
    config: &MediaSuiteConfig,
) -> CheckResult {
    if !store.capabilities().client_side_encryption {
        return Ok(Verdict::NotApplicable(
            "capability `client_side_encryption` is off: sealing depends on the backend's KMS"
                .into(),
        ));
    }
    let (Some(keys), Some(me)) = (&config.keys, &config.acting_as) else {
        return Ok(Verdict::NotApplicable(
            "the suite was given no key manager and acting principal to revoke".into(),
        ));
    };
    if !keys.capabilities().revoke || !keys.capabilities().grants {
        return Ok(Verdict::NotApplicable(
            "the key manager cannot revoke and re-grant".into(),
        ));
    }
    let room = with_bucket(store, config).await?;
    let scope = dedicated(store, &room)?;
    let k = key("secret.txt")?;
    store
        .put(
            &scope,
            &k,
            ObjectBody::from(b"sovereign".to_vec()),
            &PutOptions::default(),
        )
        .await
        .context("put")?;
    keys.revoke(&room, me).await.context("revoke")?;
    let sealed = match store.get(&scope, &k).await {
        Ok(got) => got.body.collect(u64::MAX).await.map(|_| ()),
        Err(e) => Err(e),
    };
    expect_kind(
        sealed,
        Kind::Sealed,
        "get of an object after the room's grant was revoked",
    )?;
    if store.capabilities().presign_get {
        expect_kind(
            store.presign_get(&scope, &k, Duration::from_secs(60)).await,
            Kind::Sealed,
            "presign_get in a room whose grant was revoked",
        )?;
    }
    keys.grant(&room, me).await.context("grant again")?;
    ensure(read_all(store, &scope, &k).await? == b"sovereign", || {
        "after re-granting, the object reads back with other bytes".into()
    })?;
    Ok(Verdict::Passed)
}
