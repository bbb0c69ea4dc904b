//! [`MediaStore`]: where a room's objects live.

use crate::body::ObjectBody;
use crate::capabilities::MediaCapabilities;
use crate::error::{Error, Result};
use crate::ids::{ObjectKey, RoomId};
use crate::placement::{Location, Scope};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Stores rooms' media objects: a prefix of the shared bucket for pooled rooms, and one bucket
/// (or directory) per dedicated room.
///
/// Keys are relative to the scope: the provider maps `Scope::Pooled(room)` to its configured
/// shared bucket and per-room prefix, and `Scope::Dedicated(room)` to the room's own bucket, so
/// the same key names the same object wherever the room lives.
///
/// # Contract for every method
///
/// See the [module docs](crate::traits). In addition: object operations on a dedicated scope
/// whose bucket does not exist return [`Error::NotFound`]; when the bytes cannot be decrypted
/// because the room's key grant was revoked (client-side encryption, or a KMS-encrypted bucket
/// whose KMS denial the provider can recognise) they return [`Error::Sealed`].
#[async_trait]
pub trait MediaStore: Send + Sync {
    /// A short name for the provider (`s3`, `local`, `memory`), used in
    /// [`Error::Unsupported`] and logs.
    fn name(&self) -> &str;

    /// What this store can do. Must be constant for the store's lifetime.
    fn capabilities(&self) -> MediaCapabilities;

    /// The name [`ensure_bucket`](Self::ensure_bucket) would give `room`'s own bucket: what a
    /// placement records **before** anything is created.
    ///
    /// # Behaviour
    /// - No side effect; derived by the provider's naming rule (e.g. a configured template plus
    ///   the id, with `_` mapped to `-` where the backend forbids `_`), the same for the same room
    ///   while the configuration is unchanged.
    ///
    /// # Requires capability
    /// None.
    fn locate_bucket(&self, room: &RoomId) -> Result<String>;

    /// Makes sure `room`'s own bucket `at.bucket` exists and is configured as `spec` says.
    ///
    /// # Behaviour
    /// - `at.bucket` is from [`locate_bucket`](Self::locate_bucket) or a customer's own bucket
    ///   (`at.adopted.bucket`); `None` or a name the store cannot address is [`Error::Invalid`].
    /// - Creates the bucket if missing — except an adopted one, which must exist
    ///   ([`Error::NotFound`] otherwise) and is never created — and returns it.
    /// - **Idempotent and converging**: on an existing bucket it applies any setting that differs
    ///   from `spec` and returns the same [`BucketRef`].
    /// - Every `spec` field the store cannot honour is [`Error::Unsupported`] (the operation
    ///   named by [`BucketSpec::unsupported_by`], including a pinned `region` without
    ///   `regions`), checked before anything is created: a setting is never silently dropped,
    ///   because a profile may have promised it.
    ///
    /// # Requires capability
    /// Per field of `spec`, see [`BucketSpec::unsupported_by`].
    async fn ensure_bucket(
        &self,
        room: &RoomId,
        at: &Location,
        spec: &BucketSpec,
    ) -> Result<BucketRef>;

    /// Stores `body` under `key`, replacing any object there.
    ///
    /// # Behaviour
    /// - **Streams**: reads `body` chunk by chunk and never holds the whole object in memory
    ///   (large objects go up in parts with `multipart`). Without `streaming_put` the store may
    ///   buffer, up to `max_object_size`.
    /// - The object becomes visible whole or not at all: a failed or dropped put leaves the old
    ///   object (or none), never a truncated one.
    /// - A body error (including the length check of [`ObjectBody`]) aborts the put and is
    ///   returned; an object over `max_object_size` is [`Error::QuotaExceeded`].
    ///
    /// # Requires capability
    /// None (`streaming_put`, `multipart` describe how).
    async fn put(
        &self,
        scope: &Scope,
        key: &ObjectKey,
        body: ObjectBody,
        options: &PutOptions,
    ) -> Result<ObjectMeta>;

    /// Reads an object.
    ///
    /// # Behaviour
    /// - Returns its metadata at once and its bytes as a stream with the length declared; the
    ///   caller pulls chunks, so the store never buffers the object.
    /// - A missing object is [`Error::NotFound`].
    ///
    /// # Requires capability
    /// None.
    async fn get(&self, scope: &Scope, key: &ObjectKey) -> Result<GetObject>;

    /// An object's metadata; [`Error::NotFound`] if missing.
    ///
    /// # Requires capability
    /// None.
    async fn head(&self, scope: &Scope, key: &ObjectKey) -> Result<ObjectMeta>;

    /// One page of the objects in a scope.
    ///
    /// # Behaviour
    /// - Keys in **ascending byte order** (the order bundles store media in), filtered by
    ///   `request.prefix`, at most `request.limit` (the store may return fewer, and may cap the
    ///   limit); `next_page_token` is `Some` while more remain and is passed back verbatim.
    /// - An empty scope, or a pooled scope with no objects, is an empty page, not an error.
    ///
    /// # Requires capability
    /// None.
    async fn list(&self, scope: &Scope, request: &ListRequest) -> Result<ListPage>;

    /// Deletes an object. **Idempotent**: a missing object is `Ok`. With versioning, this adds a
    /// delete marker; old versions go with [`drop_bucket`](Self::drop_bucket).
    ///
    /// # Requires capability
    /// None.
    async fn delete(&self, scope: &Scope, key: &ObjectKey) -> Result<()>;

    /// Bytes and objects stored in a scope (current versions), for metering and quotas.
    ///
    /// # Requires capability
    /// None.
    async fn usage(&self, scope: &Scope) -> Result<Usage>;

    /// Deletes every object of a scope **and every partial upload** a crashed or dropped `put`
    /// left behind (an S3 incomplete multipart upload, a local staging file), keeping a
    /// dedicated bucket itself. Used when a room leaves a scope (decentralise cleanup, a rolled
    /// back import), where invisible leftovers would still be the room's data.
    ///
    /// # Behaviour
    /// - **Idempotent**: an empty scope, or a dedicated scope whose bucket is missing, is `Ok`.
    /// - Never touches another room's objects.
    /// - The default lists and deletes page by page; a provider that can leave partial uploads
    ///   overrides it to remove those too.
    ///
    /// # Requires capability
    /// None.
    async fn purge(&self, scope: &Scope) -> Result<()> {
        loop {
            let page = match self.list(scope, &ListRequest::default()).await {
                Ok(page) => page,
                Err(Error::NotFound { .. }) if matches!(scope, Scope::Dedicated(..)) => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            if page.objects.is_empty() {
                return Ok(());
            }
            for meta in &page.objects {
                self.delete(scope, &meta.key).await?;
            }
        }
    }

    /// Deletes `room`'s own bucket `at.bucket` with every object and version in it.
    ///
    /// # Behaviour
    /// - **Idempotent**: a missing bucket, or a location without one, is `Ok`. Resumable: a drop
    ///   interrupted halfway is finished by calling it again.
    /// - An adopted bucket is the customer's: left as it is, objects included, and `Ok`.
    ///
    /// # Requires capability
    /// None.
    async fn drop_bucket(&self, room: &RoomId, at: &Location) -> Result<()>;

    /// Copies an object server-side, within or across scopes, without streaming it through the
    /// caller.
    ///
    /// # Behaviour
    /// - Replaces any object at the destination; the source is unchanged; a missing source is
    ///   [`Error::NotFound`]. Callers without the capability stream `get` into `put` instead.
    ///
    /// # Requires capability
    /// `copy`.
    async fn copy(
        &self,
        from: &Scope,
        from_key: &ObjectKey,
        to: &Scope,
        to_key: &ObjectKey,
    ) -> Result<ObjectMeta> {
        let _ = (from, from_key, to, to_key);
        Err(Error::unsupported("copy", self.name()))
    }

    /// A URL that lets its bearer GET one object until it expires.
    ///
    /// # Behaviour
    /// - Bound to the scope's bucket, the key and the expiry: it cannot be altered to read another
    ///   key or to live longer.
    /// - `expires_in` of zero, or longer than `max_presign_expiry_secs`, is [`Error::Invalid`].
    /// - Does not check that the object exists (a GET of a missing object fails then).
    /// - A sealed room is [`Error::Sealed`]: no new URL is issued for it.
    ///
    /// # Requires capability
    /// `presign_get`.
    async fn presign_get(
        &self,
        scope: &Scope,
        key: &ObjectKey,
        expires_in: Duration,
    ) -> Result<SignedUrl> {
        let _ = (scope, key, expires_in);
        Err(Error::unsupported("presign_get", self.name()))
    }
}

/// How a room's own bucket should be configured.
///
/// `Default` is roomshard's baseline for a sovereign room: infrequent-access after 90 days,
/// public access blocked, versioning on, no region pin, no KMS key, no tags. Stores that cannot do
/// all of that (a local directory) are given a spec stripped to what they can do, deliberately, by
/// the caller — see [`unsupported_by`](Self::unsupported_by).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSpec {
    /// Region the bucket must be created in; `None` for the store's default.
    pub region: Option<String>,
    /// Key reference (e.g. a KMS key ARN) to encrypt objects at rest with.
    pub kms_key: Option<String>,
    /// Move objects to infrequent-access storage after this many days.
    pub lifecycle_ia_days: Option<u32>,
    /// Block every form of public access.
    pub block_public_access: bool,
    /// Keep object versions.
    pub versioning: bool,
    /// Cost-allocation tags.
    pub tags: BTreeMap<String, String>,
}

impl Default for BucketSpec {
    fn default() -> Self {
        BucketSpec {
            region: None,
            kms_key: None,
            lifecycle_ia_days: Some(90),
            block_public_access: true,
            versioning: true,
            tags: BTreeMap::new(),
        }
    }
}

impl BucketSpec {
    /// The first setting of this spec that a store with `caps` cannot honour, as the operation
    /// name [`MediaStore::ensure_bucket`] reports in [`Error::Unsupported`]; `None` if it can
    /// honour all. One function, so every provider and the profile check agree.
    pub fn unsupported_by(&self, caps: &MediaCapabilities) -> Option<&'static str> {
        if self.kms_key.is_some() && !(caps.bucket_encryption || caps.client_side_encryption) {
            Some("ensure_bucket.kms_key")
        } else if self.lifecycle_ia_days.is_some() && !caps.bucket_lifecycle {
            Some("ensure_bucket.lifecycle_ia_days")
        } else if self.block_public_access && !caps.public_access_block {
            Some("ensure_bucket.block_public_access")
        } else if self.versioning && !caps.versioning {
            Some("ensure_bucket.versioning")
        } else if !self.tags.is_empty() && !caps.tagging {
            Some("ensure_bucket.tags")
        } else if self.region.is_some() && !caps.regions {
            Some("ensure_bucket.region")
        } else {
            None
        }
    }
}

/// A room's own bucket, as created by [`MediaStore::ensure_bucket`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRef {
    /// The bucket's name (or the directory, for local stores): the placement's `media_bucket`.
    pub name: String,
    /// Its region, if the backend has regions.
    pub region: Option<String>,
}

/// Options of [`MediaStore::put`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// MIME type to store with the object.
    pub content_type: Option<String>,
}

/// An object's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Its key.
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// The backend's entity tag, if any (changes when the content does).
    pub etag: Option<String>,
    /// Last modification, in milliseconds since the Unix epoch, if known.
    pub last_modified_unix_ms: Option<u64>,
    /// MIME type, if stored.
    pub content_type: Option<String>,
}

/// An object being read: metadata plus a body declared to be `meta.size` bytes long.
#[derive(Debug)]
pub struct GetObject {
    /// Metadata.
    pub meta: ObjectMeta,
    /// The bytes.
    pub body: ObjectBody,
}

/// A page request for [`MediaStore::list`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListRequest {
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// The previous page's `next_page_token`.
    pub page_token: Option<String>,
    /// Most objects wanted; `None` for the store's default.
    pub limit: Option<u32>,
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Objects in ascending key byte order.
    pub objects: Vec<ObjectMeta>,
    /// Token for the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Storage used by a scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes of current object versions.
    pub bytes: u64,
    /// Number of objects.
    pub objects: u64,
}

/// A presigned GET URL. It is a bearer credential until it expires, so `Debug` hides its query
/// string (where signatures live); [`url`](Self::url) gives the whole URL.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedUrl {
    url: String,
    expires_at_unix_ms: u64,
}

impl SignedUrl {
    /// Wraps a signed URL and its expiry (milliseconds since the Unix epoch).
    pub fn new(url: impl Into<String>, expires_at_unix_ms: u64) -> Self {
        SignedUrl {
            url: url.into(),
            expires_at_unix_ms,
        }
    }

    /// The full URL, signature included.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// When it stops working, in milliseconds since the Unix epoch.
    pub fn expires_at_unix_ms(&self) -> u64 {
        self.expires_at_unix_ms
    }
}

impl fmt::Debug for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = match self.url.split_once('?') {
            Some((base, _)) => format!("{base}?<redacted>"),
            None => self.url.clone(),
        };
        f.debug_struct("SignedUrl")
            .field("url", &shown)
            .field("expires_at_unix_ms", &self.expires_at_unix_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_the_sovereign_baseline() {
        let spec = BucketSpec::default();
        assert_eq!(spec.lifecycle_ia_days, Some(90));
        assert!(spec.block_public_access && spec.versioning);
    }

    #[test]
    fn unsupported_settings_are_named_not_dropped() {
        let local = MediaCapabilities::default();
        let spec = BucketSpec::default();
        assert_eq!(
            spec.unsupported_by(&local),
            Some("ensure_bucket.lifecycle_ia_days")
        );
        let plain = BucketSpec {
            lifecycle_ia_days: None,
            block_public_access: false,
            versioning: false,
            ..BucketSpec::default()
        };
        assert_eq!(plain.unsupported_by(&local), None);
        let with_key = BucketSpec {
            kms_key: Some("arn:aws:kms:eu-west-1:1:key/x".into()),
            ..plain
        };
        assert_eq!(
            with_key.unsupported_by(&local),
            Some("ensure_bucket.kms_key")
        );
        let client_side = MediaCapabilities {
            client_side_encryption: true,
            ..Default::default()
        };
        assert_eq!(with_key.unsupported_by(&client_side), None);
        let s3 = MediaCapabilities {
            bucket_lifecycle: true,
            bucket_encryption: true,
            versioning: true,
            tagging: true,
            public_access_block: true,
            ..Default::default()
        };
        let mut full = BucketSpec::default();
        full.tags.insert("cost-center".into(), "rooms".into());
        assert_eq!(full.unsupported_by(&s3), None);
    }

    #[test]
    fn signed_url_debug_hides_the_signature() {
        let url = SignedUrl::new(
            "https://b.s3.example/att/1.png?X-Amz-Signature=deadbeef",
            1_700_000_000_000,
        );
        let shown = format!("{url:?}");
        assert!(!shown.contains("deadbeef"), "{shown}");
        assert!(shown.contains("att/1.png"), "{shown}");
        assert!(url.url().contains("deadbeef"));
    }
}
