//! The commands, one module each, and what they share: the error type (and its exit code),
//! opening a home, JSON output.

pub mod audit;
pub mod demo;
pub mod export;
pub mod import;
pub mod keys;
pub mod placement;
pub mod receipt;
pub mod rooms;
pub mod seed;
pub mod usage;
pub mod verify;

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use roomshard::home::{Home, HomeOptions};
use roomshard_core::{Placement, ProviderUrl, RoomId};
use roomshard_verify::TrustedKeys;

/// Why a command failed, which decides the exit code.
#[derive(Debug)]
pub enum CliError {
    /// The user's to fix: bad arguments, unreadable files, not a home (exit 2).
    Usage(String),
    /// The operation ran and failed or was refused (exit 1).
    Failed(String),
}

impl CliError {
    /// The one-line message (printed after `error: `).
    pub fn message(&self) -> &str {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => m,
        }
    }

    /// 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            CliError::Failed(_) => ExitCode::from(1),
        }
    }
}

/// A usage error from anything printable.
pub fn usage(e: impl Display) -> CliError {
    CliError::Usage(e.to_string())
}

/// A failure from anything printable.
pub fn failed(e: impl Display) -> CliError {
    CliError::Failed(e.to_string())
}

impl From<roomshard_core::Error> for CliError {
    fn from(e: roomshard_core::Error) -> Self {
        CliError::Failed(error_chain(&e))
    }
}

/// `e` and its sources on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out.replace('\n', " ")
}

/// Runs `fut` on a fresh multi-threaded runtime.
pub fn block_on<T>(fut: impl Future<Output = Result<T, CliError>>) -> Result<T, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(format!("starting the async runtime: {e}")))?
        .block_on(fut)
}

/// Whether [`open_home`] may create a new home.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// Create the directory and database if missing.
    Yes,
    /// Refuse a directory that is not a home yet (exit 2).
    No,
}

/// Opens the home in `dir` for the Mesh schema; every open also rolls back imports a crash left
/// half-done.
/// `--home DIR` and, optionally, where the home's providers live instead of under DIR; on every
/// command that opens a home.
#[derive(clap::Args, Clone, Debug)]
pub struct HomeArgs {
    /// The home directory: the embedded default keeps everything here.
    #[arg(long)]
    pub home: PathBuf,
    /// The control plane (and, with SQLite shards, the pooled tables), e.g.
    /// sqlite:///var/lib/mesh/global.sqlite3 or postgres://mesh@db1:5432/mesh
    /// [default: DIR/global.sqlite3].
    #[arg(long, value_name = "URL")]
    pub control: Option<String>,
    /// The shard store, e.g. sqlite:///var/lib/mesh/shards or postgres://mesh@db1:5432/mesh
    /// (pooled tables in public, a schema room_<id> per sovereign room) [default: the control
    /// database if PostgreSQL, else DIR/shards].
    #[arg(long, value_name = "URL")]
    pub shards: Option<String>,
    /// The media store, e.g. file:///srv/mesh-media [default: DIR/media].
    #[arg(long, value_name = "URL")]
    pub media: Option<String>,
    /// The key manager, e.g. local-keys:///etc/roomshard/keys; add ?signing=ed25519 to make a new
    /// directory's platform signing key Ed25519 (default ECDSA P-256) [default: DIR/keys].
    #[arg(long, value_name = "URL")]
    pub keys: Option<String>,
}

impl HomeArgs {
    /// The embedded default in `dir`.
    pub fn at(dir: PathBuf) -> Self {
        HomeArgs {
            home: dir,
            control: None,
            shards: None,
            media: None,
            keys: None,
        }
    }

    /// The provider URLs given, parsed (a malformed URL is a usage error, secrets hidden).
    pub fn provider_urls(&self) -> Result<roomshard::home::ProviderUrls, CliError> {
        let parse = |text: &Option<String>, role: &str| {
            text.as_deref()
                .map(|t| ProviderUrl::parse(t, role))
                .transpose()
                .map_err(|e| usage(e.to_string()))
        };
        Ok(roomshard::home::ProviderUrls {
            control: parse(&self.control, "--control")?,
            shards: parse(&self.shards, "--shards")?,
            media: parse(&self.media, "--media")?,
            keys: parse(&self.keys, "--keys")?,
        })
    }
}

pub async fn open_home(
    home: &HomeArgs,
    create: Create,
    batch_rows: Option<usize>,
) -> Result<Home, CliError> {
    let dir = home.home.as_path();
    let providers = home.provider_urls()?;
    providers.validate(dir).map_err(|e| usage(e.to_string()))?;
    let control = providers
        .control_at(dir)
        .map_err(|e| usage(e.to_string()))?;
    if create == Create::No
        && !roomshard::home::control_exists(dir, &providers)
            .await
            .map_err(|e| {
                failed(format!(
                    "opening home {}: {}",
                    dir.display(),
                    error_chain(&e)
                ))
            })?
    {
        let what = match &control {
            roomshard::home::ControlAt::Sqlite(path) => format!("no {}", path.display()),
            roomshard::home::ControlAt::Postgres(url) => {
                format!("no roomshard tables in {url}")
            }
        };
        return Err(usage(format!(
            "{} is not a roomshard home ({what}); create one with `roomshard seed` or \
             `roomshard import`",
            dir.display(),
        )));
    }
    let options = HomeOptions {
        batch_rows,
        providers,
        ..HomeOptions::default()
    };
    let mut home = Home::open(dir, roomshard_example_mesh::schema(), options)
        .await
        .map_err(|e| {
            failed(format!(
                "opening home {}: {}",
                dir.display(),
                error_chain(&e)
            ))
        })?;
    let user = std::env::var("USER").unwrap_or_default();
    home.roomshard.config.actor = if user.is_empty() {
        "roomshard-cli".to_string()
    } else {
        format!("roomshard-cli:{user}")
    };
    Ok(home)
}

/// Parses a room id argument (clap value parser).
pub fn parse_room(s: &str) -> Result<RoomId, String> {
    RoomId::new(s).map_err(|e| e.to_string())
}

/// Reads and parses a trusted key set file (exit 2 if unreadable or malformed).
pub fn read_trusted_keys(path: &Path) -> Result<TrustedKeys, CliError> {
    let bytes =
        std::fs::read(path).map_err(|e| usage(format!("reading {}: {e}", path.display())))?;
    TrustedKeys::from_json(&bytes).map_err(|e| usage(format!("{}: {e}", path.display())))
}

/// Prints one JSON value on stdout.
pub fn print_json(value: &serde_json::Value) {
    outln!("{value}");
}

/// A receipt envelope (JSON text) as a JSON value (a string if it somehow does not parse).
pub fn receipt_json(envelope: &[u8]) -> serde_json::Value {
    serde_json::from_slice(envelope)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(envelope).into()))
}

/// A placement as the JSON object every command prints.
pub fn placement_json(p: &Placement) -> serde_json::Value {
    serde_json::json!({
        "room": p.room.as_str(),
        "state": p.state.as_str(),
        "profile": p.profile.as_str(),
        "is_sharded": p.is_sharded,
        "bucket": p.media_bucket,
        "key_ref": p.kms_key_ref,
        "region": p.region,
        "shard_url": p.shard_url.as_ref().map(|u| u.redacted()),
        "adopted": p.adopted,
        "version": p.version,
    })
}

/// A placement in one human line.
pub fn placement_line(p: &Placement) -> String {
    format!(
        "room {}: {} (profile {}, {}, bucket {}, key {}, version {})",
        p.room,
        p.state,
        p.profile,
        if p.is_sharded {
            "sharded"
        } else {
            "not sharded"
        },
        p.media_bucket.as_deref().unwrap_or("-"),
        p.kms_key_ref.as_deref().unwrap_or("-"),
        p.version
    )
}

/// Writes `bytes` to `path` atomically (temporary file, then rename), creating its directory.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| failed(format!("creating {}: {e}", dir.display())))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| failed(format!("writing {}: {e}", path.display())))
}

/// Bytes in a human unit.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Verifies a receipt envelope against `keys` (now) and describes it in a few human lines.
pub fn verified_receipt_lines(
    envelope: &[u8],
    keys: &TrustedKeys,
) -> Result<Vec<String>, CliError> {
    let r = roomshard_verify::dsse::verify_receipt(envelope, keys, &roomshard::now_rfc3339())
        .map_err(|e| {
            failed(format!(
                "receipt does not verify: {}: {}",
                e.reason.as_str(),
                e.detail
            ))
        })?;
    let p = &r.predicate;
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    Ok(vec![
        format!(
            "room {} (version {}), profile {}, region {}",
            p.room, p.version, p.profile, p.region
        ),
        format!(
            "bucket {}, key {}",
            or_dash(&p.bucket),
            or_dash(&p.key_alias)
        ),
        format!("speaks for sha256 {}", p.manifest_sha256),
        format!(
            "issued {}, expires {}, signed by {} (verified)",
            p.issued, p.expires, r.key_id
        ),
    ])
}
