//! The embedded default: a whole roomshard server in one directory, with no services.
//!
//! ```text
//! <home>/
//!   global.sqlite3        the host's shared tables (pooled rooms) + roomshard's control plane
//!   shards/room_<id>.sqlite3   one SQLite file per sovereign room
//!   media/shared/<room>/…      pooled rooms' objects (the shared "bucket")
//!   media/rooms/<room>/…       sovereign rooms' objects, envelope-encrypted with the room key
//!   keys/                      room keys, grants and the platform signing key (0700/0600)
//!   keys/trusted-keys.json     the platform's public key, for anyone verifying its exports
//!   tmp/                       spool files of running exports and imports (safe to delete when idle)
//! ```
//!
//! [`Home::open`] creates what is missing, runs the control plane's migrations, creates the
//! host's shared tables from the schema, and rolls back imports a crash left half-done, so every
//! command starts from a consistent state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use roomshard_core::{
    Algorithm, BucketSpec, ControlPlane, Error, Grantee, KeyManager, ProviderUrl, Result,
    RoomSchema, SigningKeyId,
};
use roomshard_kms::local::LocalKeyManager;
use roomshard_media::LocalMediaStore;
use roomshard_sqlite::{SqliteControlPlane, SqliteShardStore, open_global};

use crate::support::trusted_key_set_json;
use crate::{Config, Roomshard};

/// The principal the embedded default acts as on room keys.
pub const HOME_GRANTEE: &str = "roomshard-home";

/// A roomshard server in one directory (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
    /// The flows' handle.
    pub roomshard: Roomshard,
    /// The SQLite store, for host queries (`pool_for`) beyond the trait.
    pub shards: Arc<SqliteShardStore>,
    /// The local media store, for signed-URL checks (`verify_signed_url`) beyond the trait.
    pub media: Arc<LocalMediaStore>,
    /// The local key directory.
    pub keys: Arc<LocalKeyManager>,
}

/// Where the home's providers live, by URL; each `None` is the embedded default under the home
/// directory. The schemes this build knows (more come with their provider crates):
///
/// | setting | scheme | default |
/// |---|---|---|
/// | `control` | `sqlite:///path/to/global.sqlite3` (the control plane and the pooled tables) | `<home>/global.sqlite3` |
/// | `shards` | `sqlite:///dir` (one file per sovereign room; pooled tables in the control database) | `<home>/shards` |
/// | `media` | `file:///dir` | `<home>/media` |
/// | `keys` | `local-keys:///dir`, optionally `?signing=ed25519` (the algorithm of a platform signing key made there; default `ecdsa-p256-sha256`) | `<home>/keys` |
#[derive(Clone, Debug, Default)]
pub struct ProviderUrls {
    /// The control plane (and, for SQLite, the host's pooled tables).
    pub control: Option<ProviderUrl>,
    /// The shard store.
    pub shards: Option<ProviderUrl>,
    /// The media store.
    pub media: Option<ProviderUrl>,
    /// The key manager.
    pub keys: Option<ProviderUrl>,
}

impl ProviderUrls {
    /// The local path for `url` of `scheme`, or `default` when it is not given.
    fn path(url: &Option<ProviderUrl>, scheme: &str, default: PathBuf) -> Result<PathBuf> {
        match url {
            None => Ok(default),
            Some(u) if u.scheme() == scheme => u.local_path(),
            Some(u) => Err(u.unknown_scheme(&[scheme])),
        }
    }

    /// The key directory and the signing algorithm asked for in its URL (`?signing=`), if any.
    fn keys(&self, dir: &Path) -> Result<(PathBuf, Option<Algorithm>)> {
        let Some(u) = &self.keys else {
            return Ok((dir.join("keys"), None));
        };
        if u.scheme() != "local-keys" {
            return Err(u.unknown_scheme(&["local-keys"]));
        }
        let path = u.local_path_with_query(&["signing"])?;
        let algorithm = match u.query("signing") {
            None => None,
            Some(name) => Some(Algorithm::from_name(&name).ok_or_else(|| {
                Error::invalid(
                    u.role(),
                    format!(
                        "{u}: unknown signing algorithm {name:?} (known: ecdsa-p256-sha256, ed25519)"
                    ),
                )
            })?),
        };
        Ok((path, algorithm))
    }

    /// Checks every URL given (known scheme, a usable local path) before anything is opened.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the setting, with the URL's secrets hidden.
    pub fn validate(&self, dir: &Path) -> Result<()> {
        self.control_path(dir)?;
        Self::path(&self.shards, "sqlite", dir.join("shards"))?;
        Self::path(&self.media, "file", dir.join("media"))?;
        self.keys(dir)?;
        Ok(())
    }

    /// The control database's file under `dir` or as given.
    pub fn control_path(&self, dir: &Path) -> Result<PathBuf> {
        Self::path(&self.control, "sqlite", dir.join("global.sqlite3"))
    }
}

/// What [`Home::open`] may change from the defaults.
#[derive(Clone, Debug, Default)]
pub struct HomeOptions {
    /// Where the providers live (default: all under the home directory).
    pub providers: ProviderUrls,
    /// Copy batch size in rows (default: the store's).
    pub batch_rows: Option<usize>,
    /// Prefix of signed media URLs (default: relative `/media/…`).
    pub media_base_url: Option<String>,
    /// Name written into exports as `source_instance` (default: the directory name).
    pub instance: Option<String>,
}

impl Home {
    /// Opens (creating if needed) the home in `dir` for the host tables of `schema`.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the directory or database cannot be created or opened;
    /// [`Error::Conflict`] when the existing shared tables differ from `schema`.
    pub async fn open(dir: &Path, schema: RoomSchema, options: HomeOptions) -> Result<Home> {
        for sub in ["", "tmp"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| {
                Error::unavailable(format!("home directory {}", path.display()), false, e)
            })?;
        }
        let urls = &options.providers;
        let control_path = urls.control_path(dir)?;
        let shards_dir = ProviderUrls::path(&urls.shards, "sqlite", dir.join("shards"))?;
        let media_dir = ProviderUrls::path(&urls.media, "file", dir.join("media"))?;
        let (keys_dir, signing) = urls.keys(dir)?;
        let control_dir = control_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for path in [&control_dir, &shards_dir, &media_dir, &dir.join("keys")] {
            std::fs::create_dir_all(path).map_err(|e| {
                Error::unavailable(format!("directory {}", path.display()), false, e)
            })?;
        }
        let grantee = Grantee::new(HOME_GRANTEE)?;
        let keys = Arc::new(match signing {
            None => LocalKeyManager::open(keys_dir, grantee.clone())?,
            Some(alg) => LocalKeyManager::open_with_signing(keys_dir, grantee.clone(), alg)?,
        });
        let signing_key = SigningKeyId::new(LocalKeyManager::PLATFORM_SIGNING_KEY)?;
        let public = keys.public_key(&signing_key).await?;
        let signing_key_id =
            roomshard_bundle::key_id_for_spki_pem(public.algorithm, &public.spki_pem)
                .map_err(|e| Error::corrupt("platform public key", e.to_string()))?;
        write_if_changed(
            &dir.join("keys").join("trusted-keys.json"),
            &trusted_key_set_json(&signing_key_id, public.algorithm, &public.spki_pem),
        )?;

        let pool = open_global(&control_path).await?;
        let control = Arc::new(SqliteControlPlane::new(pool.clone()));
        control.migrate().await?;
        let key_dyn: Arc<dyn KeyManager> = keys.clone();
        let mut shards = SqliteShardStore::open(pool, &shards_dir)?.with_key_gate(key_dyn.clone());
        if let Some(n) = options.batch_rows {
            shards = shards.with_batch_rows(n);
        }
        shards.ensure_pooled_tables(&schema).await?;
        let shards = Arc::new(shards);
        let mut media = LocalMediaStore::open(&media_dir, key_dyn.clone())?;
        if let Some(base) = options.media_base_url {
            media = media.with_base_url(base);
        }
        let media = Arc::new(media);

        let mut config = Config::new(grantee, signing_key, signing_key_id);
        config.instance = options.instance.unwrap_or_else(|| {
            dir.canonicalize()
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "roomshard-home".to_string())
        });
        // A directory cannot do lifecycle rules, versioning or public-access blocks: ask for
        // what it can honour instead of letting ensure_bucket refuse.
        config.bucket_spec = BucketSpec {
            lifecycle_ia_days: None,
            block_public_access: false,
            versioning: false,
            ..BucketSpec::default()
        };
        let roomshard = Roomshard::new(
            shards.clone(),
            media.clone(),
            key_dyn,
            control,
            schema,
            config,
        )
        .await?;
        crate::flows::import::recover_imports(&roomshard).await?;
        Ok(Home {
            dir: dir.to_path_buf(),
            roomshard,
            shards,
            media,
            keys,
        })
    }

    /// The home's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `keys/trusted-keys.json`: the key set that verifies this home's exports and receipts.
    pub fn trusted_keys_path(&self) -> PathBuf {
        self.dir.join("keys").join("trusted-keys.json")
    }

    /// `tmp/`: where exports and imports spool `db.sql`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }
}

/// Writes `bytes` to `path` atomically (temp file + rename) unless it already holds them.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::unavailable(format!("writing {}", path.display()), false, e))
}
