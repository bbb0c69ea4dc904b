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
//! The control plane and the shards can live in PostgreSQL instead (`--control postgres://…`,
//! `--shards postgres://…`: see [`ProviderUrls`]); media and keys stay under the directory
//! unless given.
//!
//! [`Home::open`] creates what is missing, runs the control plane's migrations, creates the
//! host's shared tables from the schema, and rolls back imports a crash left half-done, so every
//! command starts from a consistent state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use roomshard_core::{
    Algorithm, BucketSpec, ControlPlane, Error, Grantee, KeyManager, ProviderUrl, Result,
    RoomSchema, ShardStore, SigningKeyId,
};
use roomshard_kms::local::LocalKeyManager;
use roomshard_media::LocalMediaStore;
use roomshard_postgres::{PgControlPlane, PgShardStore};
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
    /// The shard store, by engine, for host queries beyond the trait.
    pub shards: HomeShards,
    /// The local media store, for signed-URL checks (`verify_signed_url`) beyond the trait.
    pub media: Arc<LocalMediaStore>,
    /// The local key directory.
    pub keys: Arc<LocalKeyManager>,
}

/// A home's shard store, by engine: the flows see only `Arc<dyn ShardStore>`
/// ([`Roomshard::shards`]); host pages and tools that query rows themselves need the engine.
#[derive(Clone, Debug)]
pub enum HomeShards {
    /// The embedded default: shared tables in the global SQLite file, a file per shard.
    Sqlite(Arc<SqliteShardStore>),
    /// PostgreSQL: shared tables in the database's `public` schema, a schema per shard.
    Postgres(Arc<PgShardStore>),
}

impl HomeShards {
    /// The store as the flows hold it.
    pub fn as_dyn(&self) -> Arc<dyn ShardStore> {
        match self {
            HomeShards::Sqlite(s) => s.clone(),
            HomeShards::Postgres(s) => s.clone(),
        }
    }
}

/// Where a home's control plane is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlAt {
    /// An SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database (which must exist; roomshard's tables are created in it).
    Postgres(ProviderUrl),
}

/// Where the home's providers live, by URL; each `None` is the embedded default under the home
/// directory. The schemes this build knows (more come with their provider crates):
///
/// | setting | scheme | default |
/// |---|---|---|
/// | `control` | `sqlite:///path/to/global.sqlite3` (the control plane and, with SQLite shards, the pooled tables), or `postgres://user@host:port/db` | `<home>/global.sqlite3` |
/// | `shards` | `sqlite:///dir` (one file per sovereign room; pooled tables in the global SQLite database), or `postgres://user@host:port/db` (pooled tables in its `public` schema, one schema `room_<id>` per sovereign room) | the control database when that is PostgreSQL, else `<home>/shards` |
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
        self.control_at(dir)?;
        self.shards_at(dir)?;
        Self::path(&self.media, "file", dir.join("media"))?;
        self.keys(dir)?;
        Ok(())
    }

    /// Where the control plane is: under `dir` or as given.
    pub fn control_at(&self, dir: &Path) -> Result<ControlAt> {
        match &self.control {
            Some(u) if is_postgres(u) => {
                roomshard_postgres::connect_options(u)?;
                Ok(ControlAt::Postgres(u.clone()))
            }
            Some(u) if u.scheme() != "sqlite" => {
                Err(u.unknown_scheme(&["sqlite", "postgres", "postgresql"]))
            }
            other => Ok(ControlAt::Sqlite(Self::path(
                other,
                "sqlite",
                dir.join("global.sqlite3"),
            )?)),
        }
    }

    /// Where the shards are: a directory of SQLite files, or a PostgreSQL database (the
    /// control plane's when that is PostgreSQL and no shard URL is given).
    fn shards_at(&self, dir: &Path) -> Result<ShardsAt> {
        match (&self.shards, self.control_at(dir)?) {
            (Some(u), _) if is_postgres(u) => {
                roomshard_postgres::connect_options(u)?;
                Ok(ShardsAt::Postgres(u.clone()))
            }
            (Some(u), _) if u.scheme() != "sqlite" => {
                Err(u.unknown_scheme(&["sqlite", "postgres", "postgresql"]))
            }
            (None, ControlAt::Postgres(u)) => Ok(ShardsAt::Postgres(ProviderUrl::parse(
                u.expose(),
                "--shards",
            )?)),
            (other, _) => Ok(ShardsAt::Sqlite(Self::path(
                other,
                "sqlite",
                dir.join("shards"),
            )?)),
        }
    }
}

/// Where a home's shards are.
enum ShardsAt {
    Sqlite(PathBuf),
    Postgres(ProviderUrl),
}

fn is_postgres(url: &ProviderUrl) -> bool {
    matches!(url.scheme(), "postgres" | "postgresql")
}

/// Connections per PostgreSQL pool of a home: the flows run a copy, a dump or a restore at a
/// time, plus the host's own reads.
const HOME_PG_CONNECTIONS: u32 = 8;

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
        let control_at = urls.control_at(dir)?;
        let shards_at = urls.shards_at(dir)?;
        let media_dir = ProviderUrls::path(&urls.media, "file", dir.join("media"))?;
        let (keys_dir, signing) = urls.keys(dir)?;
        let mut dirs = vec![media_dir.clone(), dir.join("keys")];
        if let ControlAt::Sqlite(path) = &control_at {
            dirs.push(path.parent().map(Path::to_path_buf).unwrap_or_default());
        }
        if let ShardsAt::Sqlite(path) = &shards_at {
            dirs.push(path.clone());
        }
        for path in &dirs {
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

        let (control, sqlite_global): (Arc<dyn ControlPlane>, _) = match &control_at {
            ControlAt::Sqlite(path) => {
                let pool = open_global(path).await?;
                (Arc::new(SqliteControlPlane::new(pool.clone())), Some(pool))
            }
            ControlAt::Postgres(url) => {
                let pool = roomshard_postgres::connect(url, HOME_PG_CONNECTIONS).await?;
                (Arc::new(PgControlPlane::new(pool)), None)
            }
        };
        control.migrate().await?;
        let key_dyn: Arc<dyn KeyManager> = keys.clone();
        let shards = match &shards_at {
            ShardsAt::Sqlite(shards_dir) => {
                // SQLite shards keep the pooled tables in the global SQLite database, which is
                // the control database unless that is PostgreSQL.
                let global = match sqlite_global {
                    Some(pool) => pool,
                    None => open_global(&dir.join("global.sqlite3")).await?,
                };
                let mut shards =
                    SqliteShardStore::open(global, shards_dir)?.with_key_gate(key_dyn.clone());
                if let Some(n) = options.batch_rows {
                    shards = shards.with_batch_rows(n);
                }
                shards.ensure_pooled_tables(&schema).await?;
                HomeShards::Sqlite(Arc::new(shards))
            }
            ShardsAt::Postgres(url) => {
                let pool = roomshard_postgres::connect(url, HOME_PG_CONNECTIONS).await?;
                let mut shards = PgShardStore::new(pool, url)?.with_key_gate(key_dyn.clone());
                if let Some(n) = options.batch_rows {
                    shards = shards.with_batch_rows(n);
                }
                shards.ensure_pooled_tables(&schema).await?;
                HomeShards::Postgres(Arc::new(shards))
            }
        };
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
            shards.as_dyn(),
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

/// Whether the control plane `urls` name (under `dir` by default) already exists: the SQLite
/// file, or roomshard's tables in the PostgreSQL database. Creates nothing, so a command that
/// must not make a new home can refuse one that is not there.
///
/// # Errors
/// [`Error::Invalid`] for a bad URL; [`Error::Unavailable`] when PostgreSQL cannot be reached.
pub async fn control_exists(dir: &Path, urls: &ProviderUrls) -> Result<bool> {
    match urls.control_at(dir)? {
        ControlAt::Sqlite(path) => Ok(path.is_file()),
        ControlAt::Postgres(url) => {
            let pool = roomshard_postgres::connect(&url, 1).await?;
            let found = PgControlPlane::new(pool.clone()).exists().await;
            pool.close().await;
            found
        }
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
