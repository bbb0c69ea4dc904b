//! roomshard: make a chat room a sovereign, portable unit of data.
//!
//! A host (a community server, "Mesh") hands roomshard its room tables ([`RoomSchema`]) and four
//! providers — where rows live ([`ShardStore`]), where objects live ([`MediaStore`]), who holds
//! the keys ([`KeyManager`]) and where roomshard keeps its own records ([`ControlPlane`]) — and
//! gets the flows, each readable top to bottom in its own module:
//!
//! - [`flows::decentralise`]: move a room from the shared database, bucket and key into its own,
//!   resumably, with parity checked before the placement flips and a signed Sovereignty Receipt;
//! - [`flows::recentralise`]: the way back, deleting the room's own resources;
//! - [`flows::export`]: a signed `room_<id>.tar.zst` (bundle format v1) and its Sigstore sidecar,
//!   streamed to any async writer;
//! - [`flows::import`]: verify first, then load a bundle under a new room id, remapping colliding
//!   ids, all or nothing;
//! - [`flows::access`]: revoke ("Revoke Mesh": the room is sealed) and re-grant;
//! - [`flows::rotate`]: rotate the room key.
//!
//! The flows only talk to the traits, so they run unchanged on the embedded default
//! ([`home::Home`]: SQLite, a local directory, a local key directory) and on PostgreSQL, S3 and a
//! cloud KMS. `docs/flows.md` walks through each flow and the placement state machine.

#![forbid(unsafe_code)]

pub mod flows;
#[cfg(feature = "embedded")]
pub mod home;
pub mod registry;
pub mod router;
mod support;

use std::sync::Arc;

pub use registry::{Providers, Registry};
pub use roomshard_core::{
    Adopted, ControlPlane, Error, KeyManager, Location, MediaStore, Placement, PlacementState,
    ProgressEvent, ProgressSink, Result, RoomId, RoomSchema, Scope, ShardStore,
};
use roomshard_core::{Algorithm, BucketSpec, Grantee, Profile, SigningKeyId};
pub use support::{now_rfc3339, parity_digest, trusted_key_set_json};

/// The providers and settings every flow runs with: one value per host, shared (`Arc`) across
/// requests.
#[derive(Clone)]
pub struct Roomshard {
    /// Where rooms' rows live.
    pub shards: Arc<dyn ShardStore>,
    /// Where rooms' objects live.
    pub media: Arc<dyn MediaStore>,
    /// Who holds rooms' keys and the platform's signing key.
    pub keys: Arc<dyn KeyManager>,
    /// roomshard's own records (placements, jobs, imports, audit, receipts).
    pub control: Arc<dyn ControlPlane>,
    /// More providers under names, beside the `default` ones above ([`registry`]); empty
    /// unless the host registers some with [`Roomshard::with_shards`] and its siblings.
    pub registry: Registry,
    /// The host's room tables.
    pub schema: RoomSchema,
    /// Settings.
    pub config: Config,
}

impl Roomshard {
    /// Puts the providers and settings together after checking, at startup, that the providers
    /// can do what the settings ask — so a misconfiguration is refused here, naming provider and
    /// capability, instead of failing midway through a decentralise after a key was made:
    ///
    /// - the bucket spec against the media store's capabilities ([`BucketSpec::unsupported_by`]);
    /// - the `sovereign` profile needs a key manager that grants and revokes (Revoke Mesh);
    /// - a pinned [`Config::region`] needs every provider to place resources in regions
    ///   (`regions`): residency is refused at startup, not after a key was made;
    /// - the signing key exists, and its algorithm (from the key manager's public key, P-256 or
    ///   Ed25519) is one the manager declares it can sign with; it becomes
    ///   [`Config::signing_algorithm`], written into manifests and key sets.
    ///
    /// # Errors
    /// [`Error::Unsupported`] naming the provider and the capability; what the key manager
    /// returns for the signing key ([`Error::NotFound`]).
    pub async fn new(
        shards: Arc<dyn ShardStore>,
        media: Arc<dyn MediaStore>,
        keys: Arc<dyn KeyManager>,
        control: Arc<dyn ControlPlane>,
        schema: RoomSchema,
        mut config: Config,
    ) -> Result<Roomshard> {
        if let Some(op) = config.bucket_spec.unsupported_by(&media.capabilities()) {
            return Err(Error::unsupported(op, media.name()));
        }
        let key_caps = keys.capabilities();
        if config.region.is_some() {
            for (ok, operation, provider) in [
                (
                    shards.capabilities().regions,
                    "ensure_shard.region",
                    shards.name(),
                ),
                (
                    media.capabilities().regions,
                    "ensure_bucket.region",
                    media.name(),
                ),
                (key_caps.regions, "ensure_room_key.region", keys.name()),
            ] {
                if !ok {
                    return Err(Error::unsupported(operation, provider));
                }
            }
        }
        if config.profile == Profile::Sovereign {
            for (ok, operation) in [
                (key_caps.grants, "profile.sovereign.grant"),
                (key_caps.revoke, "profile.sovereign.revoke"),
            ] {
                if !ok {
                    return Err(Error::unsupported(operation, keys.name()));
                }
            }
        }
        let public = keys.public_key(&config.signing_key).await?;
        let can_sign = match public.algorithm {
            Algorithm::EcdsaP256Sha256 => key_caps.sign_p256,
            Algorithm::Ed25519 => key_caps.sign_ed25519,
        };
        if !can_sign {
            return Err(Error::unsupported(
                match public.algorithm {
                    Algorithm::EcdsaP256Sha256 => "sign.ecdsa-p256-sha256",
                    Algorithm::Ed25519 => "sign.ed25519",
                },
                keys.name(),
            ));
        }
        config.signing_algorithm = public.algorithm;
        Ok(Roomshard {
            shards,
            media,
            keys,
            control,
            registry: Registry::default(),
            schema,
            config,
        })
    }
}

impl Roomshard {
    /// Where the providers would put `room`'s own shard and bucket, in the configured region:
    /// the [`Location`] a decentralise (or a dedicated import) records before creating anything.
    /// No side effect.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when a provider cannot place a resource in the region.
    pub fn locate(&self, room: &roomshard_core::RoomId) -> Result<Location> {
        self.locate_on(
            room,
            &self.providers_for(&roomshard_core::ProviderNames::default())?,
        )
    }

    /// [`locate`](Self::locate) on the given providers (a decentralise onto a registered one).
    ///
    /// # Errors
    /// As [`locate`](Self::locate).
    pub fn locate_on(&self, room: &roomshard_core::RoomId, on: &Providers) -> Result<Location> {
        let region = self.config.region.clone();
        Ok(Location {
            shard: Some(on.shards.locate_shard(room, region.as_deref())?),
            bucket: Some(on.media.locate_bucket(room)?),
            key: None,
            region,
            adopted: roomshard_core::Adopted::default(),
        })
    }
}

impl std::fmt::Debug for Roomshard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roomshard")
            .field("shards", &self.shards.name())
            .field("media", &self.media.name())
            .field("keys", &self.keys.name())
            .field("control", &self.control.name())
            .field("registry", &self.registry)
            .field("schema", &self.schema.version())
            .field("config", &self.config)
            .finish()
    }
}

/// Settings of a [`Roomshard`]; [`Config::new`] gives sane defaults for everything but the
/// signing key's published id.
#[derive(Clone, Debug)]
pub struct Config {
    /// The principal this server acts as on room keys: revoking its grant seals the room here.
    pub grantee: Grantee,
    /// The platform's export- and receipt-signing key in the [`KeyManager`].
    pub signing_key: SigningKeyId,
    /// That key's id in published trusted key sets (what verifiers look up).
    pub signing_key_id: String,
    /// That key's algorithm, as the key manager reports it ([`Roomshard::new`] sets it): what
    /// manifests and key sets name.
    pub signing_algorithm: Algorithm,
    /// Who is acting, for the audit log (a user name, a service principal).
    pub actor: String,
    /// This server's name, written into bundles as `source_instance`.
    pub instance: String,
    /// How a sovereign room's bucket is configured.
    pub bucket_spec: BucketSpec,
    /// The profile recorded in placements and receipts.
    pub profile: Profile,
    /// The region recorded in placements and receipts (`None`: not pinned, shown as `local`).
    pub region: Option<String>,
    /// How long a Sovereignty Receipt is valid.
    pub receipt_validity_days: u32,
    /// A catch-up pass that changes at most this many rows ends the copy phase and starts the
    /// read-only cutover (whose final pass should then be short).
    pub cutover_threshold_rows: u64,
    /// The longest a read-only cutover may take (final catch-up, media reconcile, parity).
    /// Past it the cutover aborts: the placement goes back to `copying`, the pooled copy stays
    /// authoritative and writes reopen, and the next attempt starts with more catch-up passes.
    /// It bounds how long the room refuses writes, whatever the room's size or write rate.
    pub cutover_limit: std::time::Duration,
    /// Rows per key-range chunk when a store with `chunk_parity` checks a copy: the unit a
    /// mismatch is found, named and re-checked in. Smaller chunks make the re-check inside the
    /// cutover cheaper and the first check (while the room is writable) do more queries.
    pub parity_chunk_rows: u64,
    /// Storage price used by plans' cost estimates, in US dollars per GiB-month.
    pub price_per_gib_month_usd: f64,
}

impl Config {
    /// Defaults: standard profile, unpinned region, receipts valid 365 days, cutover once a
    /// catch-up pass changes ≤ 100 rows and for at most 5 s, parity chunks of 10 000 rows, $0.023/GiB-month (object storage
    /// list price).
    pub fn new(grantee: Grantee, signing_key: SigningKeyId, signing_key_id: String) -> Self {
        Config {
            grantee,
            signing_key,
            signing_key_id,
            signing_algorithm: Algorithm::EcdsaP256Sha256,
            actor: "roomshard".to_string(),
            instance: "roomshard".to_string(),
            bucket_spec: BucketSpec::default(),
            profile: Profile::Sovereign,
            region: None,
            receipt_validity_days: 365,
            cutover_threshold_rows: 100,
            cutover_limit: std::time::Duration::from_secs(5),
            parity_chunk_rows: 10_000,
            price_per_gib_month_usd: 0.023,
        }
    }
}
