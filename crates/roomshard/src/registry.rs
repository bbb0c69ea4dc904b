//! Several providers of a kind under names: one host with rooms on several database servers,
//! on its own bucket and on a customer's, each placement saying which ones hold it.
//!
//! The providers a [`Roomshard`] is constructed with are `default`: they serve the pooled
//! rooms (the shared tables, the shared bucket) and every room whose placement names no other.
//! More are registered under names ([`Roomshard::with_shards`], [`Roomshard::with_media`],
//! [`Roomshard::with_keys`]), each checked against the settings at registration as the default
//! ones are at construction. A decentralise picks its target providers by name
//! ([`DecentraliseOptions::providers`](crate::flows::decentralise::DecentraliseOptions)) and
//! records them in the placement ([`Placement::providers`]) *before* creating anything, so every
//! later flow — export, revoke, rotate, recentralise, abort — resolves the room's own shard,
//! bucket and key through [`Roomshard::providers_for`] and never guesses.
//!
//! Rows and objects cross between two different providers through the contract alone: rows as
//! a [`dump`](ShardStore::dump) streamed into a [`restore`](ShardStore::restore) (inside the
//! read-only cutover, since no common change feed exists between two different stores), objects
//! as `get` into `put` (server-side `copy` only within one media store). `docs/flows.md` says
//! what that costs.

use std::collections::BTreeMap;
use std::sync::Arc;

use roomshard_core::{
    Error, KeyManager, MediaStore, Placement, Profile, ProviderName, ProviderNames, Result,
    ShardStore,
};

use crate::Roomshard;

/// The providers registered under names beside the `default` ones (see the [module
/// docs](self)). Empty by default: a host with one provider of each kind needs none.
#[derive(Clone, Default)]
pub struct Registry {
    shards: BTreeMap<ProviderName, Arc<dyn ShardStore>>,
    media: BTreeMap<ProviderName, Arc<dyn MediaStore>>,
    keys: BTreeMap<ProviderName, Arc<dyn KeyManager>>,
}

impl Registry {
    /// The registered names of each kind, `default` first: for errors, `Debug` and operators.
    pub fn names(&self) -> RegisteredNames {
        let list = |names: Vec<&ProviderName>| {
            std::iter::once(ProviderName::DEFAULT.to_string())
                .chain(names.into_iter().map(ToString::to_string))
                .collect()
        };
        RegisteredNames {
            shards: list(self.shards.keys().collect()),
            media: list(self.media.keys().collect()),
            keys: list(self.keys.keys().collect()),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self.names();
        f.debug_struct("Registry")
            .field("shards", &names.shards)
            .field("media", &names.media)
            .field("keys", &names.keys)
            .finish()
    }
}

/// The names a host has registered, per kind, `default` first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredNames {
    /// Shard stores.
    pub shards: Vec<String>,
    /// Media stores.
    pub media: Vec<String>,
    /// Key managers.
    pub keys: Vec<String>,
}

/// One room's providers, resolved from its placement's names.
#[derive(Clone)]
pub struct Providers {
    /// The shard store holding the room's own shard.
    pub shards: Arc<dyn ShardStore>,
    /// The media store holding the room's own bucket.
    pub media: Arc<dyn MediaStore>,
    /// The key manager holding the room's key.
    pub keys: Arc<dyn KeyManager>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("shards", &self.shards.name())
            .field("media", &self.media.name())
            .field("keys", &self.keys.name())
            .finish()
    }
}

fn lookup<T: ?Sized>(
    kind: &str,
    name: &ProviderName,
    default: &Arc<T>,
    named: &BTreeMap<ProviderName, Arc<T>>,
    registered: &[String],
) -> Result<Arc<T>> {
    if name.is_default() {
        return Ok(default.clone());
    }
    named.get(name).cloned().ok_or_else(|| {
        Error::not_found(format!(
            "{kind} {name:?}: this host registered only {}",
            registered.join(", ")
        ))
    })
}

impl Roomshard {
    /// Resolves provider names to this host's providers.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a name this host has not registered, listing the ones it has (a
    /// placement written by a host configured differently).
    pub fn providers_for(&self, names: &ProviderNames) -> Result<Providers> {
        let registered = self.registry.names();
        Ok(Providers {
            shards: lookup(
                "shard store",
                &names.shards,
                &self.shards,
                &self.registry.shards,
                &registered.shards,
            )?,
            media: lookup(
                "media store",
                &names.media,
                &self.media,
                &self.registry.media,
                &registered.media,
            )?,
            keys: lookup(
                "key manager",
                &names.keys,
                &self.keys,
                &self.registry.keys,
                &registered.keys,
            )?,
        })
    }

    /// The providers of `placement`'s own shard, bucket and key (as its `providers` names them).
    ///
    /// # Errors
    /// As [`providers_for`](Self::providers_for).
    pub fn own_providers(&self, placement: &Placement) -> Result<Providers> {
        self.providers_for(&placement.providers)
    }

    /// Registers another shard store under `name` (a second PostgreSQL server, a customer's
    /// database server), after checking it can serve this host: a pinned region needs
    /// `regions`, and rows reach it from the pooled store (and back) as a dump streamed into a
    /// restore, so both it and the default store need `dump` and `restore`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed name, [`Error::AlreadyExists`] for `default` or a name
    /// already registered, [`Error::Unsupported`] naming the provider and capability.
    pub fn with_shards(mut self, name: &str, store: Arc<dyn ShardStore>) -> Result<Self> {
        let name = new_name(name, &self.registry.shards, "shard store")?;
        let caps = store.capabilities();
        if self.config.region.is_some() && !caps.regions {
            return Err(Error::unsupported("ensure_shard.region", store.name()));
        }
        for (provider, caps) in [
            (store.name(), caps),
            (self.shards.name(), self.shards.capabilities()),
        ] {
            if !caps.dump {
                return Err(Error::unsupported("registry.cross_provider.dump", provider));
            }
            if !caps.restore {
                return Err(Error::unsupported(
                    "registry.cross_provider.restore",
                    provider,
                ));
            }
        }
        self.registry.shards.insert(name, store);
        Ok(self)
    }

    /// Registers another media store under `name` (a customer's bucket account, a second
    /// region), after checking it against the bucket spec and a pinned region as
    /// [`Roomshard::new`] checks the default one.
    ///
    /// # Errors
    /// As [`with_shards`](Self::with_shards).
    pub fn with_media(mut self, name: &str, store: Arc<dyn MediaStore>) -> Result<Self> {
        let name = new_name(name, &self.registry.media, "media store")?;
        let caps = store.capabilities();
        if let Some(op) = self.config.bucket_spec.unsupported_by(&caps) {
            return Err(Error::unsupported(op, store.name()));
        }
        if self.config.region.is_some() && !caps.regions {
            return Err(Error::unsupported("ensure_bucket.region", store.name()));
        }
        self.registry.media.insert(name, store);
        Ok(self)
    }

    /// Registers another key manager under `name` (a customer's KMS or Vault), after checking
    /// it against the profile and a pinned region as [`Roomshard::new`] checks the default one.
    /// The platform signing key stays in the default key manager.
    ///
    /// A media store encrypts with the key manager it was constructed with: register a
    /// customer's media store and key manager as a pair, and name both in a decentralise.
    ///
    /// # Errors
    /// As [`with_shards`](Self::with_shards).
    pub fn with_keys(mut self, name: &str, keys: Arc<dyn KeyManager>) -> Result<Self> {
        let name = new_name(name, &self.registry.keys, "key manager")?;
        let caps = keys.capabilities();
        if self.config.region.is_some() && !caps.regions {
            return Err(Error::unsupported("ensure_room_key.region", keys.name()));
        }
        if self.config.profile == Profile::Sovereign {
            if !caps.grants {
                return Err(Error::unsupported("profile.sovereign.grant", keys.name()));
            }
            if !caps.revoke {
                return Err(Error::unsupported("profile.sovereign.revoke", keys.name()));
            }
        }
        self.registry.keys.insert(name, keys);
        Ok(self)
    }
}

/// `name` checked, and free among `taken` (and not `default`, which the constructor's are).
fn new_name<T: ?Sized>(
    name: &str,
    taken: &BTreeMap<ProviderName, Arc<T>>,
    kind: &str,
) -> Result<ProviderName> {
    let name = ProviderName::new(name)?;
    if name.is_default() || taken.contains_key(&name) {
        return Err(Error::AlreadyExists {
            what: format!("{kind} named {name:?}"),
        });
    }
    Ok(name)
}
