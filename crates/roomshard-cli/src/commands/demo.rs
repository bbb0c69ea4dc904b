//! `roomshard demo`: the whole story in one directory, on the embedded default.
//!
//! ```text
//! D/.roomshard-demo          marks D as a demo directory (so a re-run may wipe it)
//! D/home/                    the first home: room `general`, seeded then decentralised
//! D/exports/room_general.tar.zst (+ .sigstore.json)
//! D/keys/trusted-keys.json   the first home's public key, as a verifier would receive it
//! D/keys/public.pem          the same key as a PEM file, for `openssl dgst -verify`
//! D/lite/                    the second home, where the export is imported
//! D/receipts/*.json          the decentralise and import Sovereignty Receipts
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use roomshard::flows;
use roomshard_core::RoomId;
use roomshard_verify::VerifyOptions;

use super::{
    CliError, Create, block_on, failed, human_bytes, open_home, print_json, read_trusted_keys,
    receipt_json, usage, write_file,
};
use crate::progress::Bars;

/// The file that marks a demo directory.
const MARKER: &str = ".roomshard-demo";
/// The demo room.
const ROOM: &str = "general";

/// `demo` arguments.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// The directory to run in: must be missing, empty, or a previous demo directory (with
    /// `--force`).
    #[arg(long)]
    pub dir: PathBuf,
    /// Messages in the demo room.
    #[arg(long, default_value_t = 5000)]
    pub messages: u64,
    /// Media objects in the demo room.
    #[arg(long, default_value_t = 40)]
    pub media_objects: u64,
    /// Total media bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub media_bytes: u64,
    /// Wipe a previous demo directory first.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Run the demo's server home on this control plane instead of under DIR, e.g.
    /// postgres://postgres@127.0.0.1:5432/mesh (a database the demo may fill).
    #[arg(long, value_name = "URL")]
    pub control: Option<String>,
    /// Its shard store, e.g. postgres://postgres@127.0.0.1:5432/mesh [default: the control
    /// database if PostgreSQL, else DIR/home/shards].
    #[arg(long, value_name = "URL")]
    pub shards: Option<String>,
    /// Its media store [default: DIR/home/media].
    #[arg(long, value_name = "URL")]
    pub media: Option<String>,
    /// Its key manager [default: DIR/home/keys].
    #[arg(long, value_name = "URL")]
    pub keys: Option<String>,
}

impl DemoArgs {
    /// The server home's arguments: DIR/home with the providers given.
    fn home_args(&self) -> super::HomeArgs {
        super::HomeArgs {
            home: self.dir.join("home"),
            control: self.control.clone(),
            shards: self.shards.clone(),
            media: self.media.clone(),
            keys: self.keys.clone(),
        }
    }

    /// The provider flags to repeat in a printed command on the server home (passwords hidden:
    /// give them through PGPASSWORD or ~/.pgpass instead of the URL).
    fn provider_flags(&self) -> Result<String, CliError> {
        let urls = self.home_args().provider_urls()?;
        let mut out = String::new();
        for (flag, url) in [
            ("--control", &urls.control),
            ("--shards", &urls.shards),
            ("--media", &urls.media),
            ("--keys", &urls.keys),
        ] {
            if let Some(u) = url {
                out.push_str(&format!(" {flag} '{}'", u.redacted()));
            }
        }
        Ok(out)
    }
}

/// Makes sure `dir` may be used: missing or empty, or a previous demo directory wiped with
/// `--force`.
fn prepare_dir(dir: &Path, force: bool) -> Result<(), CliError> {
    if dir.exists() {
        if !dir.is_dir() {
            return Err(usage(format!("{} is not a directory", dir.display())));
        }
        let mut entries =
            std::fs::read_dir(dir).map_err(|e| usage(format!("reading {}: {e}", dir.display())))?;
        if entries.next().is_some() {
            if !dir.join(MARKER).is_file() {
                return Err(usage(format!(
                    "{} is not empty and is not a demo directory; pick a new or empty directory",
                    dir.display()
                )));
            }
            if !force {
                return Err(usage(format!(
                    "{} holds a previous demo; pass --force to wipe it and run again, or pick \
                     another directory",
                    dir.display()
                )));
            }
            for entry in std::fs::read_dir(dir)
                .map_err(|e| usage(format!("reading {}: {e}", dir.display())))?
            {
                let path = entry
                    .map_err(|e| failed(format!("reading {}: {e}", dir.display())))?
                    .path();
                let removed = if path.is_dir() && !path.is_symlink() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(|e| failed(format!("removing {}: {e}", path.display())))?;
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| usage(format!("creating {}: {e}", dir.display())))?;
    write_file(
        &dir.join(MARKER),
        b"made by `roomshard demo`; `roomshard demo --force` may wipe this directory\n",
    )
}

/// Prints a step's line (human mode only).
fn step(json: bool, started: Instant, text: &str) {
    if !json {
        outln!("[{:>5.1}s] {text}", started.elapsed().as_secs_f64());
    }
}

/// Runs `demo`.
pub fn run(args: &DemoArgs) -> Result<ExitCode, CliError> {
    prepare_dir(&args.dir, args.force)?;
    let started = Instant::now();
    let dir = args.dir.as_path();
    let json = args.json;
    let room = RoomId::new(ROOM)?;
    block_on(async {
        // 1. A home with a pooled room of generated data.
        let home = open_home(&args.home_args(), Create::Yes, None).await?;
        let w = super::seed::workload(
            &room,
            args.messages,
            args.media_objects,
            args.media_bytes,
            1,
        );
        let bars = Bars::new(&format!("seed {room}"));
        let seeded = super::seed::seed_room(&home, &room, &w, &bars).await?;
        bars.finish();
        let rows: u64 = seeded.tables.iter().map(|t| t.rows).sum();
        step(
            json,
            started,
            &format!(
                "seeded pooled room {room} in {}: {rows} rows, {} objects ({})",
                home.dir().display(),
                seeded.objects,
                human_bytes(seeded.bytes)
            ),
        );

        // 2. Decentralise it.
        let bars = Bars::new(&format!("decentralise {room}"));
        let dec = flows::decentralise(&home.roomshard, &room, &bars).await?;
        bars.finish();
        let receipts = dir.join("receipts");
        let dec_receipt = receipts.join(format!("decentralise_{room}.json"));
        write_file(&dec_receipt, dec.receipt.as_bytes())?;
        step(
            json,
            started,
            &format!(
                "decentralised {room}: {} (bucket {}, key {}), parity checked; receipt {}",
                dec.placement.state,
                dec.placement.media_bucket.as_deref().unwrap_or("-"),
                dec.placement.kms_key_ref.as_deref().unwrap_or("-"),
                dec_receipt.display()
            ),
        );

        // 3. Export it.
        let exported = super::export::export_room(&home, &room, &dir.join("exports"), true).await?;
        step(
            json,
            started,
            &format!(
                "exported {} ({}, sha256 {})",
                exported.archive.display(),
                human_bytes(exported.outcome.archive_bytes),
                exported.outcome.archive_sha256
            ),
        );

        // 4. Verify it against the published key set, as a stranger would.
        let trusted_path = dir.join("keys").join("trusted-keys.json");
        let published = std::fs::read(home.trusted_keys_path()).map_err(|e| {
            failed(format!(
                "reading {}: {e}",
                home.trusted_keys_path().display()
            ))
        })?;
        write_file(&trusted_path, &published)?;
        let trusted = read_trusted_keys(&trusted_path)?;
        if let Some(key) = trusted.keys().next() {
            write_file(
                &dir.join("keys").join("public.pem"),
                key.public_key_pem.as_bytes(),
            )?;
        }
        let file = std::fs::File::open(&exported.archive)
            .map_err(|e| failed(format!("opening {}: {e}", exported.archive.display())))?;
        let options = VerifyOptions {
            hash_archive: true,
            ..VerifyOptions::default()
        };
        let mut report = roomshard_verify::verify_reader(
            std::io::BufReader::with_capacity(64 << 10, file),
            trusted.clone(),
            options,
        );
        if report.valid {
            let sidecar = std::fs::read(&exported.sidecar)
                .map_err(|e| failed(format!("reading {}: {e}", exported.sidecar.display())))?;
            if let Err(e) = roomshard_verify::verify_sidecar(&sidecar, &report, &trusted) {
                report.fail(&e);
            }
        }
        if !report.valid {
            let why = report
                .error
                .as_ref()
                .map(|e| format!("{}: {}", e.reason.as_str(), e.detail))
                .unwrap_or_default();
            return Err(failed(format!(
                "the export does not verify: {}: {why}",
                exported.archive.display()
            )));
        }
        step(
            json,
            started,
            &format!(
                "verified the export and its sidecar against {}",
                trusted_path.display()
            ),
        );

        // 5. Import it into a second home.
        let lite = open_home(&super::HomeArgs::at(dir.join("lite")), Create::Yes, None).await?;
        let imported = super::import::import_archive(
            &lite,
            &exported.archive,
            &trusted,
            Some(room.clone()),
            false,
            false,
        )
        .await?;
        let imp_receipt = receipts.join(format!("import_{}.json", imported.new_room));
        write_file(&imp_receipt, &imported.receipt)?;
        let imported_rows: u64 = imported.tables.iter().map(|t| t.rows).sum();
        step(
            json,
            started,
            &format!(
                "imported it into {} as room {}: {imported_rows} rows, {} objects; receipt {}",
                lite.dir().display(),
                imported.new_room,
                imported.objects,
                imp_receipt.display()
            ),
        );
        let seconds = started.elapsed().as_secs_f64();
        let d = dir.display();
        let rs = invocation();
        let next = [
            format!("{rs} lite serve --home {d}/lite --addr 127.0.0.1:8080",),
            format!(
                "{rs} verify {} --trusted-keys {} --sidecar {}",
                exported.archive.display(),
                trusted_path.display(),
                exported.sidecar.display()
            ),
            format!(
                "{rs} receipt verify {} --trusted-keys {}",
                dec_receipt.display(),
                trusted_path.display()
            ),
            format!(
                "{rs} receipt verify {} --trusted-keys {}",
                imp_receipt.display(),
                lite.trusted_keys_path().display()
            ),
            format!("{rs} rooms --home {d}/lite"),
            format!(
                "{rs} audit verify --home {d}/home{}",
                args.provider_flags()?
            ),
        ];
        if json {
            print_json(&serde_json::json!({
                "dir": dir,
                "room": room.as_str(),
                "home": home.dir(),
                "lite": lite.dir(),
                "rows": rows,
                "objects": seeded.objects,
                "media_bytes": seeded.bytes,
                "export": super::export::exported_json(&exported),
                "trusted_keys": trusted_path,
                "imported_room": imported.new_room.as_str(),
                "receipts": {
                    "decentralise": dec_receipt,
                    "import": imp_receipt,
                },
                "decentralise_receipt": receipt_json(dec.receipt.as_bytes()),
                "import_receipt": receipt_json(&imported.receipt),
                "seconds": seconds,
                "next": next,
            }));
            return Ok(ExitCode::SUCCESS);
        }
        let lite_keys = read_trusted_keys(&lite.trusted_keys_path())?;
        for (title, path, envelope, keys) in [
            (
                "Decentralise receipt",
                &dec_receipt,
                dec.receipt.as_bytes(),
                &trusted,
            ),
            (
                "Import receipt",
                &imp_receipt,
                &imported.receipt[..],
                &lite_keys,
            ),
        ] {
            outln!();
            outln!("{title} ({}):", path.display());
            for line in super::verified_receipt_lines(envelope, keys)? {
                outln!("  {line}");
            }
        }
        outln!();
        outln!("demo finished in {seconds:.1}s. Next:");
        for line in &next {
            outln!("  {line}");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// How to call this binary in printed commands: `roomshard` when that name on `PATH` is this
/// very executable, else its full path (a `cargo run` build is not on `PATH`), so every printed
/// command works when copied.
fn invocation() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|p| p.canonicalize()) else {
        return "roomshard".to_string();
    };
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("roomshard"))
            .find(|p| p.is_file())
            .and_then(|p| p.canonicalize().ok())
    });
    if on_path.as_deref() == Some(exe.as_path()) {
        "roomshard".to_string()
    } else {
        exe.display().to_string()
    }
}
