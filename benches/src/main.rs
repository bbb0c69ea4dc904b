//! roomshard's whole-flow benchmarks (see `docs/benchmarks.md` and `shared/BENCHMARKS.md`).
//!
//! `cargo run --release -p roomshard-benches -- verify [--quick|--full] [--dir D] [--runs N]`
//!
//! Generates (deterministically, cached in `D`) the standard-workload room bundle — examples/mesh's
//! [`Workload::quick`] or [`Workload::full`] — with the real bundle writer, then measures in the
//! same run, on the same archive, each figure `--runs` times (median), interleaved so machine
//! noise hits ours and the baselines alike:
//! - ours: the `roomshard verify` CLI (and the library's `verify_reader`, in a child process);
//! - baseline: `zstd -dc | tar -x` into tmpfs + `sha256sum` of every extracted file;
//! - bare `zstd -dc > /dev/null`, the throughput bound.
//!
//! `… -- flows [--quick|--full] [--runs N]` measures export, verify and import on the embedded
//! default (see the `flows` module).
//!
//! Every figure prints as `name: value unit (baseline: value unit, ratio: x)`. Benchmarks report,
//! they do not assert: the exit status is 0 whatever the figures.

use clap::{Parser, Subcommand};
use roomshard_bundle::{BundleWriter, LocalP256Signer, WriterOptions};
use roomshard_example_mesh::{Media, MediaObject, Workload};
use roomshard_verify::format::KeySet;
use roomshard_verify::{TrustedKeys, VerifyOptions};
use sha2::Digest;
use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

mod flows;
mod postgres;

/// Bump when the generated workload changes, so cached archives are rebuilt (2: examples/mesh's
/// `Workload` replaced the benchmark's own generator).
const GENERATOR_VERSION: u32 = 2;
const MIB: u64 = 1 << 20;
/// The manifest's `created_at` of generated bundles (fixed: same workload ⇒ same archive).
const CREATED_AT: &str = "2026-06-01T12:00:00Z";

#[derive(Parser)]
#[command(name = "roomshard-benches", about = "roomshard whole-flow benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Verify benchmark: roomshard verify vs zstd|tar|sha256sum and bare zstd -dc.
    Verify(VerifyArgs),
    /// (internal) Verify once with the library in this process and print time and VmHWM.
    #[command(hide = true)]
    LibVerify {
        archive: PathBuf,
        keys: PathBuf,
        /// Push the file through `Verifier::update` in chunks of this many bytes instead of
        /// calling `verify_reader`.
        #[arg(long)]
        chunk: Option<usize>,
    },
    /// Export, verify and import benchmark on the embedded default (a `Home` with the Mesh
    /// schema): each phase in a child process, against tar/zstd baselines.
    Flows(FlowsArgs),
    /// The PostgreSQL shard store against plain SQL on the same server: provisioning, the
    /// same-server copy, dump and route lookups.
    Postgres(postgres::PostgresArgs),
    /// (internal) Run one flow phase in this process and print its time and VmHWM.
    #[command(hide = true)]
    FlowPhase {
        #[command(subcommand)]
        phase: Phase,
    },
}

#[derive(Subcommand)]
enum Phase {
    /// `export_to_dir` of ROOM from the home in HOME into OUT.
    Export {
        home: PathBuf,
        room: String,
        out: PathBuf,
        /// The home's control plane and shards on this PostgreSQL URL (default: SQLite).
        #[arg(long)]
        pg: Option<String>,
    },
    /// `import_file` of ARCHIVE into a new home in HOME (which must not exist yet).
    Import {
        home: PathBuf,
        archive: PathBuf,
        keys: PathBuf,
        /// The home's control plane and shards on this PostgreSQL URL (default: SQLite).
        #[arg(long)]
        pg: Option<String>,
    },
    /// The bundle writer writing the preset workload straight to OUT (no stores).
    Bundle {
        #[arg(long)]
        full: bool,
        #[arg(long)]
        seed: u64,
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct FlowsArgs {
    /// Small workload (10k messages, 64 MiB media), under a minute; the default.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Full workload (1M messages, 1 GiB media).
    #[arg(long)]
    full: bool,
    /// Measurements per figure (median taken).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Parent of the benchmark's temporary directory (homes, archives, extracts); default: the
    /// system temp directory. It is removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where to write the JSON figures; default `$CARGO_TARGET_DIR/bench/flows-<preset>.json`
    /// (`flows-<preset>-postgres.json` with `--postgres`).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Put the homes' control plane and shards on the benchmark's PostgreSQL instead of SQLite
    /// (export reads the room's schema through COPY, import restores through COPY FROM STDIN):
    /// issue 10's export and import figures against `pg_dump` and `psql -f`.
    #[arg(long)]
    postgres: bool,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Small workload (10k messages, 64 MiB media), under a minute; the default.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Full workload (1M messages, 1 GiB media).
    #[arg(long)]
    full: bool,
    /// Where to keep the generated archive (reused when its parameters match).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Measurements per figure (median taken).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Use an existing `roomshard` binary instead of running `cargo build --release -p roomshard-cli`.
    #[arg(long)]
    no_build_cli: bool,
    /// Regenerate the archive even if a cached one matches.
    #[arg(long)]
    regen: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Verify(args) => bench_verify(&args),
        Cmd::LibVerify {
            archive,
            keys,
            chunk,
        } => lib_verify_once(&archive, &keys, chunk),
        Cmd::Flows(args) => flows::bench_flows(&args),
        Cmd::FlowPhase { phase } => flows::run_phase(phase),
        Cmd::Postgres(args) => postgres::bench_postgres(&args).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomshard-benches: {e}");
            ExitCode::from(2)
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

// ---------------------------------------------------------------------------------------------
// The standard workload: examples/mesh's `Workload` presets (`quick`, `full`).

/// The preset workload (`quick` unless `full`), with `seed`.
fn preset(full: bool, seed: u64) -> (&'static str, Workload) {
    let (name, w) = if full {
        ("full", Workload::full())
    } else {
        ("quick", Workload::quick())
    };
    (name, Workload { seed, ..w })
}

/// What identifies a cached archive: generator version, preset and the workload's fields.
fn params_json(name: &str, w: &Workload) -> String {
    format!(
        "{}\n",
        serde_json::json!({
            "generator": GENERATOR_VERSION,
            "name": name,
            "workload": format!("{w:?}"),
            "zstd_level": 3,
        })
    )
}

/// Total media bytes of a workload.
fn media_total(media: &[MediaObject]) -> u64 {
    media.iter().map(|m| m.size).sum()
}

fn signer() -> Res<LocalP256Signer> {
    Ok(LocalP256Signer::from_seed([7; 32], None)?)
}

/// Writes the bundle from the spooled `db.sql` and the workload's media to `out`; returns the
/// bytes fed into the writer (uncompressed entry bytes) and the time the writer took.
fn write_bundle<W: Write>(
    out: W,
    w: &Workload,
    sql_path: &Path,
    counts: &[u64],
    media: &[MediaObject],
) -> Res<(W, u64, Duration)> {
    let signer = signer()?;
    let start = Instant::now();
    let options = WriterOptions {
        zstd_level: 3,
        zstd_workers: 0,
    };
    let mut writer = BundleWriter::new(out, w.bundle_meta(CREATED_AT), options)?;
    let sql_size = fs::metadata(sql_path)?.len();
    writer.add_db_sql(
        sql_size,
        BufReader::with_capacity(1 << 20, fs::File::open(sql_path)?),
    )?;
    let mut fed = sql_size;
    for m in media {
        writer.add_media(&m.key, m.size, m.reader())?;
        fed += m.size;
    }
    let done = writer.finish(counts, &signer)?;
    Ok((done.out, fed, start.elapsed()))
}

struct Prepared {
    archive: PathBuf,
    keys: PathBuf,
    sql: PathBuf,
    media: Vec<MediaObject>,
    counts: Vec<u64>,
    generated: bool,
}

/// Makes (or reuses) the archive, its `db.sql` spool and `trusted-keys.json` in `dir`.
fn prepare(name: &str, w: &Workload, dir: &Path, regen: bool) -> Res<Prepared> {
    fs::create_dir_all(dir)?;
    let archive = dir.join(roomshard_bundle::archive_file_name(&w.room_id));
    let keys = dir.join("trusted-keys.json");
    let sql = dir.join("db.sql");
    let params = dir.join("params.json");
    let counts_path = dir.join("row-counts.txt");
    let media = w.media_objects();
    let cached = !regen
        && fs::read_to_string(&params).ok().as_deref() == Some(params_json(name, w).as_str())
        && archive.exists()
        && keys.exists()
        && sql.exists();
    if cached {
        let counts = fs::read_to_string(&counts_path)?
            .split_whitespace()
            .map(|s| s.parse::<u64>())
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Prepared {
            archive,
            keys,
            sql,
            media,
            counts,
            generated: false,
        });
    }
    let _ = fs::remove_file(&params);
    eprintln!("generating {name} workload in {} …", dir.display());
    let t = Instant::now();
    let counts = w.write_db_sql(BufWriter::with_capacity(1 << 20, fs::File::create(&sql)?))?;
    eprintln!(
        "  db.sql: {:.1} MB, rows {:?} ({:.1} s)",
        fs::metadata(&sql)?.len() as f64 / 1e6,
        counts,
        t.elapsed().as_secs_f64()
    );
    let tmp = dir.join("archive.partial");
    let out = BufWriter::with_capacity(1 << 20, fs::File::create(&tmp)?);
    let (out, fed, took) = write_bundle(out, w, &sql, &counts, &media)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    fs::rename(&tmp, &archive)?;
    eprintln!(
        "  archive: {:.1} MB from {:.1} MB of entries ({:.1} s)",
        fs::metadata(&archive)?.len() as f64 / 1e6,
        fed as f64 / 1e6,
        took.as_secs_f64()
    );
    let set = KeySet {
        keys: vec![signer()?.trusted_key(None, None)?],
    };
    fs::write(&keys, serde_json::to_vec_pretty(&set)?)?;
    fs::write(
        &counts_path,
        counts.iter().map(|c| format!("{c}\n")).collect::<String>(),
    )?;
    fs::write(&params, params_json(name, w))?;
    Ok(Prepared {
        archive,
        keys,
        sql,
        media,
        counts,
        generated: true,
    })
}
// ---------------------------------------------------------------------------------------------
// Measuring.

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// Runs `bash -c script` (under `/usr/bin/time -v` when present) and returns its wall time and
/// CPU time (user + system, of the whole pipeline); fails on a non-zero status.
fn time_shell(script: &str) -> Res<(f64, f64)> {
    let bash = Path::new("/bin/bash");
    let script = format!("set -euo pipefail; {script}");
    let r = time_process(bash, &["-c".as_ref(), script.as_ref()])?;
    Ok((r.secs, r.cpu_secs))
}

/// A verify run measured from outside: wall time and peak RSS (via `/usr/bin/time -v`).
struct Run {
    secs: f64,
    rss_kib: Option<u64>,
    cpu_secs: f64,
    stdout: String,
}

fn time_process(program: &Path, args: &[&std::ffi::OsStr]) -> Res<Run> {
    let time_v = Path::new("/usr/bin/time").exists();
    let mut cmd = if time_v {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-v").arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd.output()?;
    let secs = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            program.display(),
            out.status,
            stderr.trim()
        )
        .into());
    }
    if std::env::var_os("ROOMSHARD_BENCH_PHASES").is_some() {
        // The child's step timings (flows.rs, `PhaseClock`).
        for line in stderr.lines().filter(|l| l.starts_with("  [")) {
            eprintln!("{line}");
        }
    }
    let rss_kib = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok());
    let field = |name: &str| -> f64 {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let cpu_secs = field("User time (seconds):") + field("System time (seconds):");
    Ok(Run {
        secs,
        rss_kib,
        cpu_secs,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// Child-process body of the library measurement: one `verify_reader` over the file, then
/// `secs decompressed_bytes vm_hwm_kib` on stdout.
fn lib_verify_once(archive: &Path, keys: &Path, chunk: Option<usize>) -> Res<()> {
    let keys = TrustedKeys::from_json(&fs::read(keys)?)?;
    let mut file = fs::File::open(archive)?;
    let start = Instant::now();
    let report = match chunk {
        None => roomshard_verify::verify_reader(file, keys, VerifyOptions::default()),
        Some(n) => {
            let mut v = roomshard_verify::Verifier::new(keys, VerifyOptions::default());
            let mut buf = vec![0u8; n.max(1)];
            loop {
                let got = file.read(&mut buf)?;
                if got == 0 || v.update(&buf[..got]).is_err() {
                    break;
                }
            }
            v.finish()
        }
    };
    let secs = start.elapsed().as_secs_f64();
    if !report.valid {
        return Err(format!("library verify says invalid: {:?}", report.error).into());
    }
    println!("{secs} {} {}", report.decompressed_bytes, vm_hwm_kib());
    Ok(())
}

/// This process's peak resident set size so far (`VmHWM` of `/proc/self/status`), in KiB; 0 if
/// unavailable.
fn vm_hwm_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// CPU time of the calling thread so far, in seconds (`/proc/thread-self/schedstat`, ns).
fn thread_cpu() -> f64 {
    fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(f64::NAN, |ns| ns as f64 / 1e9)
}

/// What plain two-thread pipelining reaches on this archive, without any tar/sql work: this
/// thread decompresses into pooled 256 KiB buffers, a second thread SHA-256s them (bounded
/// queue of 8, as in the verifier). Wall seconds.
fn pipeline_floor(archive: &Path) -> Res<f64> {
    use std::sync::mpsc::{channel, sync_channel};
    const BUF: usize = 256 * 1024;
    let start = Instant::now();
    let (tx, rx) = sync_channel::<Vec<u8>>(8);
    let (back_tx, back_rx) = channel::<Vec<u8>>();
    let hasher = std::thread::spawn(move || {
        let mut h = sha2::Sha256::new();
        for buf in rx {
            h.update(&buf);
            let _ = back_tx.send(buf);
        }
        h.finalize()
    });
    let mut dec = zstd::stream::read::Decoder::new(fs::File::open(archive)?)?;
    let mut pool = 0;
    loop {
        let mut buf = match back_rx.try_recv() {
            Ok(b) => b,
            Err(_) if pool < 10 => {
                pool += 1;
                vec![0u8; BUF]
            }
            Err(_) => back_rx.recv()?,
        };
        buf.resize(BUF, 0);
        let mut filled = 0;
        while filled < BUF {
            let n = dec.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        if filled == 0 {
            break;
        }
        tx.send(buf)?;
    }
    drop(tx);
    std::hint::black_box(hasher.join().map_err(|_| "hash thread panicked")?);
    Ok(start.elapsed().as_secs_f64())
}

/// Profile pieces, in this process, over the same archive: zstd decode alone, decode + SHA-256
/// of every decompressed byte, and SHA-256 alone over an in-memory buffer.
fn profile_pieces(archive: &Path) -> Res<(f64, f64, f64, u64)> {
    let mut buf = vec![0u8; 256 * 1024];
    let t = thread_cpu();
    let mut dec = zstd::stream::read::Decoder::new(fs::File::open(archive)?)?;
    let mut total = 0u64;
    loop {
        let n = dec.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let t_dec = thread_cpu() - t;

    let t = thread_cpu();
    let mut dec = zstd::stream::read::Decoder::new(fs::File::open(archive)?)?;
    let mut h = sha2::Sha256::new();
    loop {
        let n = dec.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    std::hint::black_box(h.finalize());
    let t_dec_hash = thread_cpu() - t;

    let mut block = vec![0u8; 64 << 20];
    // Incompressible bytes from the workload generator (the first `Sizes` object is random).
    let random = Workload {
        media: Media::Sizes(vec![block.len() as u64]),
        ..Workload::quick()
    };
    let object = random.media_objects().pop().ok_or("no media object")?;
    object.reader().read_exact(&mut block)?;
    let t = thread_cpu();
    let mut h = sha2::Sha256::new();
    let mut hashed = 0u64;
    while hashed < total.max(256 << 20) {
        h.update(&block);
        hashed += block.len() as u64;
    }
    std::hint::black_box(h.finalize());
    let sha_rate = hashed as f64 / (thread_cpu() - t);
    Ok((t_dec, t_dec_hash, sha_rate, total))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `$CARGO_TARGET_DIR`, else the target directory this binary was built into, else
/// `<workspace>/target`.
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let profile_dir = exe.parent()?;
        matches!(
            profile_dir.file_name()?.to_str()?,
            "release" | "debug" | "bench"
        )
        .then(|| profile_dir.parent().map(Path::to_path_buf))?
    });
    from_exe.unwrap_or_else(|| workspace_root().join("target"))
}

/// The `roomshard` CLI: built (release) unless told not to, found next to this binary.
fn cli_binary(build: bool) -> Option<PathBuf> {
    if build {
        eprintln!("building roomshard-cli (release) …");
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--quiet", "-p", "roomshard-cli"])
            .current_dir(workspace_root())
            .env("CARGO_TARGET_DIR", target_dir())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("  building roomshard-cli failed; measuring the library only");
        }
    }
    let beside = std::env::current_exe().ok()?.parent()?.join("roomshard");
    let candidates = [beside, target_dir().join("release/roomshard")];
    candidates.into_iter().find(|p| p.exists())
}

/// Where the baseline extracts: tmpfs when it has room for twice the data.
fn extract_parent(need: u64) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let free = Command::new("df")
        .args(["--output=avail", "-B1", "/dev/shm"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)?
                .trim()
                .parse::<u64>()
                .ok()
        });
    match free {
        Some(f) if shm.is_dir() && f > 2 * need => shm.to_path_buf(),
        _ => std::env::temp_dir(),
    }
}

fn line(
    name: &str,
    v: f64,
    unit: &str,
    base_name: &str,
    b: f64,
    target: &str,
    pass: bool,
) -> String {
    format!(
        "{name}: {v:.3} {unit} ({base_name}: {b:.3} {unit}, ratio: {:.3})  target {target}: {}",
        v / b,
        if pass { "PASS" } else { "MISS" }
    )
}

fn bench_verify(args: &VerifyArgs) -> Res<()> {
    let (name, w) = preset(args.full, args.seed);
    let runs = args.runs.max(1);
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| target_dir().join("bench-data").join(name));
    let p = prepare(name, &w, &dir, args.regen)?;
    let archive_len = fs::metadata(&p.archive)?.len();
    let cli = cli_binary(!args.no_build_cli);

    // Warm the page cache so every contender reads the archive from memory.
    let _ = time_shell(&format!("cat {} > /dev/null", sh_quote(&p.archive)))?;

    // Writer throughput (informative): the same bundle written again, to a sink.
    let (_, fed, write_t) = write_bundle(io::sink(), &w, &p.sql, &p.counts, &p.media)?;
    let write_t = write_t.as_secs_f64();
    let (zstd3_t, _) = time_shell(&format!(
        "zstd -dcq {} | zstd -3 -q -c > /dev/null",
        sh_quote(&p.archive)
    ))?;
    // The generator's own share of that (media bytes made up on the fly), to subtract.
    let t = Instant::now();
    for m in &p.media {
        io::copy(&mut m.reader(), &mut io::sink())?;
    }
    let gen_t = t.elapsed().as_secs_f64();

    let self_exe = std::env::current_exe()?;
    let parent = extract_parent(fed);
    let extract_dir = parent.join(format!("roomshard-bench-extract-{}", std::process::id()));
    let baseline_script = format!(
        "mkdir -p {d}; zstd -dcq {a} | tar -x -C {d}; find {d} -type f -print0 | xargs -0 sha256sum > /dev/null",
        d = sh_quote(&extract_dir),
        a = sh_quote(&p.archive)
    );
    let bare_script = format!("zstd -dcq {} > /dev/null", sh_quote(&p.archive));

    let (mut t_cli, mut t_lib, mut t_base, mut t_bare) = (vec![], vec![], vec![], vec![]);
    let (mut rss_cli, mut rss_lib) = (0u64, 0u64);
    let (mut cpu_lib, mut cpu_cli, mut cpu_base, mut cpu_bare) = (vec![], vec![], vec![], vec![]);
    let mut decompressed = 0u64;
    for round in 0..runs {
        eprintln!("round {}/{runs} …", round + 1);
        // ours: library, in a child process (its own RSS).
        let keys_arg = p.keys.as_os_str();
        let r = time_process(
            &self_exe,
            &["lib-verify".as_ref(), p.archive.as_os_str(), keys_arg],
        )?;
        let mut it = r.stdout.split_whitespace();
        let secs: f64 = it.next().ok_or("lib-verify output")?.parse()?;
        decompressed = it.next().ok_or("lib-verify output")?.parse()?;
        let hwm: u64 = it.next().ok_or("lib-verify output")?.parse()?;
        t_lib.push(secs);
        cpu_lib.push(r.cpu_secs);
        rss_lib = rss_lib.max(hwm);
        // ours: the CLI.
        if let Some(cli) = &cli {
            let r = time_process(
                cli,
                &[
                    "verify".as_ref(),
                    p.archive.as_os_str(),
                    "--trusted-keys".as_ref(),
                    keys_arg,
                ],
            )?;
            t_cli.push(r.secs);
            cpu_cli.push(r.cpu_secs);
            rss_cli = rss_cli.max(r.rss_kib.unwrap_or(0));
        }
        // baseline: extract to tmpfs + sha256sum every file.
        let _ = fs::remove_dir_all(&extract_dir);
        let t = time_shell(&baseline_script);
        let _ = fs::remove_dir_all(&extract_dir);
        let (t, c) = t?;
        t_base.push(t);
        cpu_base.push(c);
        // bare decompression.
        let (t, c) = time_shell(&bare_script)?;
        t_bare.push(t);
        cpu_bare.push(c);
    }
    let (dec_t, dec_hash_t, sha_rate, _) = profile_pieces(&p.archive)?;
    let lib_cpu = median(&cpu_lib);
    let pipe_t = median(
        &(0..runs)
            .map(|_| pipeline_floor(&p.archive))
            .collect::<Res<Vec<f64>>>()?,
    );

    let mb = |bytes: u64, secs: f64| bytes as f64 / 1e6 / secs;
    let (m_cli, m_lib, m_base, m_bare) = (
        median(&t_cli),
        median(&t_lib),
        median(&t_base),
        median(&t_bare),
    );
    let (ours_t, ours_name) = if cli.is_some() {
        (m_cli, "roomshard verify CLI")
    } else {
        (m_lib, "library verify_reader")
    };
    let rss_mib = |kib: u64| kib as f64 / 1024.0;
    let ours_rss = if cli.is_some() { rss_cli } else { rss_lib };
    let rss_target = 64.0;

    println!();
    println!(
        "# verify benchmark, {} workload: {} messages, {:.0} MiB media in {} objects; archive {:.1} MB, {:.1} MB decompressed; median of {runs} runs{}",
        name,
        w.messages,
        media_total(&p.media) as f64 / MIB as f64,
        p.media.len(),
        archive_len as f64 / 1e6,
        decompressed as f64 / 1e6,
        if p.generated {
            " (archive generated this run)"
        } else {
            " (cached archive)"
        }
    );
    println!(
        "# ours = {ours_name}; baseline = zstd -dc | tar -x -C {} + sha256sum of every file",
        parent.display()
    );
    let r1 = ours_t / m_base;
    println!(
        "{}",
        line(
            "verify_time",
            ours_t,
            "s",
            "baseline",
            m_base,
            "≤ 0.5",
            r1 <= 0.5
        )
    );
    let (tp_ours, tp_bare) = (mb(decompressed, ours_t), mb(decompressed, m_bare));
    println!(
        "{}",
        line(
            "verify_throughput",
            tp_ours,
            "MB/s",
            "baseline zstd -dc",
            tp_bare,
            "≥ 0.8",
            tp_ours / tp_bare >= 0.8
        )
    );
    println!(
        "verify_peak_rss: {:.1} MiB (baseline: {rss_target:.0} MiB budget, ratio: {:.3})  target ≤ 64 MiB{}: {}",
        rss_mib(ours_rss),
        rss_mib(ours_rss) / rss_target,
        if name == "full" {
            ""
        } else {
            " (binding on full)"
        },
        if rss_mib(ours_rss) <= rss_target {
            "PASS"
        } else {
            "MISS"
        }
    );
    println!("# informative");
    if cli.is_some() {
        println!(
            "verify_time_lib: {m_lib:.3} s (baseline: {m_base:.3} s, ratio: {:.3})",
            m_lib / m_base
        );
        println!(
            "verify_throughput_lib: {:.1} MB/s (baseline zstd -dc: {tp_bare:.1} MB/s, ratio: {:.3})",
            mb(decompressed, m_lib),
            mb(decompressed, m_lib) / tp_bare
        );
        println!(
            "verify_peak_rss_lib: {:.1} MiB (VmHWM of the child)",
            rss_mib(rss_lib)
        );
    }
    println!(
        "bare_zstd_dc_time: {m_bare:.3} s; baseline_extract_sha256sum_time: {m_base:.3} s; runs cli {:?} lib {:?} base {:?} bare {:?}",
        round3(&t_cli),
        round3(&t_lib),
        round3(&t_base),
        round3(&t_bare)
    );
    let ours_cpu = if cli.is_some() {
        median(&cpu_cli)
    } else {
        median(&cpu_lib)
    };
    let (base_cpu, bare_cpu) = (median(&cpu_base), median(&cpu_bare));
    println!(
        "verify_cpu_time: {ours_cpu:.3} s (baseline: {base_cpu:.3} s, ratio: {:.3})  [user+sys; less sensitive to a busy machine than wall time]",
        ours_cpu / base_cpu
    );
    println!(
        "verify_cpu_throughput: {:.1} MB/s per CPU-second (baseline zstd -dc: {:.1} MB/s, ratio: {:.3})",
        mb(decompressed, ours_cpu),
        mb(decompressed, bare_cpu),
        bare_cpu / ours_cpu
    );
    println!(
        "write_throughput_net: {:.1} MB/s (baseline zstd -dc | zstd -3: {:.1} MB/s, ratio: {:.3})  [as below, minus {gen_t:.3} s the generator spends making media bytes]",
        mb(fed, write_t - gen_t),
        mb(decompressed, zstd3_t),
        mb(fed, write_t - gen_t) / mb(decompressed, zstd3_t)
    );
    println!(
        "write_throughput: {:.1} MB/s (baseline zstd -dc | zstd -3: {:.1} MB/s, ratio: {:.3})  [bundle writer, level 3, 1 thread, to a sink; entry bytes / time]",
        mb(fed, write_t),
        mb(decompressed, zstd3_t),
        mb(fed, write_t) / mb(decompressed, zstd3_t)
    );
    // Where the time goes. The verifier hashes entry data on a worker thread (native builds),
    // so its floor is max(decoder thread: zstd + tar/sql scan, hasher thread: SHA-256).
    let sha_t = decompressed as f64 / sha_rate;
    println!(
        "profile_lib: verify {m_lib:.3} s wall, {lib_cpu:.3} s CPU ({:.2} cores busy); single-thread pieces over the same bytes (CPU time of one thread): zstd decode {dec_t:.3} s, SHA-256 {sha_t:.3} s, decode then hash serially {dec_hash_t:.3} s",
        lib_cpu / m_lib
    );
    println!(
        "profile_rates: zstd decode {:.0} MB/s, SHA-256 (sha2 crate, SHA-NI) {:.0} MB/s, decode+hash serial {:.0} MB/s, verify {:.0} MB/s",
        mb(decompressed, dec_t),
        sha_rate / 1e6,
        mb(decompressed, dec_hash_t),
        mb(decompressed, m_lib)
    );
    let other = (lib_cpu - dec_t - sha_t).max(0.0);
    println!(
        "profile_cpu: verify used {lib_cpu:.3} CPU-s = zstd decode {dec_t:.3} ({:.0}%) + SHA-256 {sha_t:.3} ({:.0}%) + the rest {other:.3} ({:.0}%: tar/sql scan, copies, thread hand-off)",
        100.0 * dec_t / lib_cpu,
        100.0 * sha_t / lib_cpu,
        100.0 * other / lib_cpu
    );
    println!(
        "profile_bound: on two idle cores the floor is max(decode + rest, hash) = {:.3} s ({}-bound) = {:.0} MB/s; verify took {m_lib:.3} s wall",
        (dec_t + other).max(sha_t),
        if dec_t + other >= sha_t {
            "decoder-thread"
        } else {
            "hash-thread"
        },
        mb(decompressed, (dec_t + other).max(sha_t))
    );
    println!(
        "profile_pipeline: plain decode-thread -> hash-thread pipeline (no tar/sql work) {pipe_t:.3} s = {:.0} MB/s (ratio vs zstd -dc {:.3}); verify {m_lib:.3} s",
        mb(decompressed, pipe_t),
        mb(decompressed, pipe_t) / tp_bare
    );
    println!(
        "summary: verify_time {} | verify_throughput {} | verify_peak_rss {}",
        if r1 <= 0.5 { "PASS" } else { "MISS" },
        if tp_ours / tp_bare >= 0.8 {
            "PASS"
        } else {
            "MISS"
        },
        if rss_mib(ours_rss) <= rss_target {
            "PASS"
        } else {
            "MISS"
        }
    );
    Ok(())
}

fn round3(xs: &[f64]) -> Vec<f64> {
    xs.iter().map(|x| (x * 1000.0).round() / 1000.0).collect()
}
