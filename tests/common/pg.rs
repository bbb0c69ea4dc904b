//! A throwaway PostgreSQL 15 cluster on 127.0.0.1 (random free port, socket and data in a temp
//! dir), started with the server binaries on `PATH` and stopped by a drop guard — also when an
//! assertion fails or a benchmark errors. Used by the `psql` interop test and by the flows
//! benchmark's PostgreSQL baselines (`pg_dump`, `psql -f db.sql`).
//!
//! `initdb` and `pg_ctl` refuse to run as root; as root they run as the `postgres` user
//! (`runuser`), as `/work/shared/TESTING.md` describes. A missing binary or a server that does not
//! start is a panic with what to install, never a skip.

use crate::{describe, require_tool, run, run_ok};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// How the server runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `fsync=off`, `synchronous_commit=off`, `full_page_writes=off`: fast, for tests that check
    /// what a restore produced, not how long it took.
    #[default]
    Off,
    /// PostgreSQL's defaults (every commit flushed): for benchmarks that compare against a flow
    /// which makes its own writes durable.
    Durable,
}

/// A throwaway PostgreSQL cluster; stopped (`pg_ctl -m immediate stop`) on drop.
pub struct Cluster {
    data: PathBuf,
    port: u16,
    pg_ctl: PathBuf,
    as_root: bool,
    psql: PathBuf,
    // Dropped after `drop` has stopped the server.
    _dir: tempfile::TempDir,
}

fn is_root() -> bool {
    let out = run(Command::new("id").arg("-u"));
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binding 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// A command for a server binary, run as `postgres` when we are root (initdb and pg_ctl
    /// refuse to run as root).
    fn server_cmd(as_root: bool, bin: &Path) -> Command {
        if as_root {
            let mut c = Command::new(require_tool("runuser", "apt-get install -y util-linux"));
            c.arg("-u").arg("postgres").arg("--").arg(bin);
            c
        } else {
            Command::new(bin)
        }
    }

    /// Starts a cluster with [`Durability::Off`].
    pub fn start() -> Cluster {
        Self::start_with(Durability::Off)
    }

    /// Initialises and starts a cluster; panics (with the server log) when it cannot.
    pub fn start_with(durability: Durability) -> Cluster {
        let hint = "apt-get install -y postgresql-15 (initdb/pg_ctl/postgres on PATH, e.g. /usr/local/bin -> /usr/lib/postgresql/15/bin)";
        let initdb = require_tool("initdb", hint);
        let pg_ctl = require_tool("pg_ctl", hint);
        require_tool("postgres", hint);
        let psql = require_tool("psql", "apt-get install -y postgresql-client-15");
        let as_root = is_root();

        let dir = tempfile::Builder::new()
            .prefix("roomshard-pg-")
            .tempdir()
            .expect("temp dir for the cluster");
        if as_root {
            run_ok(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(dir.path()),
            );
        }
        run_ok(Command::new("chmod").arg("700").arg(dir.path()));
        let data = dir.path().join("data");

        let t = Instant::now();
        let out = run(Self::server_cmd(as_root, &initdb)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ]));
        if !out.status.success() {
            panic!("initdb failed (as_root={as_root}):\n{}", describe(&out));
        }
        eprintln!("initdb: {:?}", t.elapsed());

        let mut cluster = Cluster {
            data,
            port: 0,
            pg_ctl,
            as_root,
            psql,
            _dir: dir,
        };
        // Profiling knobs (docs/benchmarks.md): `ROOMSHARD_PG_LOG` keeps the server log at a
        // path of its own (it outlives the cluster), `ROOMSHARD_PG_SERVER_OPTS` adds server
        // options, e.g. `-c log_min_duration_statement=0` to log every statement's duration.
        let log = std::env::var_os("ROOMSHARD_PG_LOG")
            .map(PathBuf::from)
            .unwrap_or_else(|| cluster._dir.path().join("server.log"));
        let extra = std::env::var("ROOMSHARD_PG_SERVER_OPTS").unwrap_or_default();
        let mut last = None;
        for _attempt in 0..3 {
            let port = free_port();
            let t = Instant::now();
            let out = run(Self::server_cmd(as_root, &cluster.pg_ctl)
                .arg("-D")
                .arg(&cluster.data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "start", "-o"])
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -p {port} -k {}{} {extra}",
                    cluster._dir.path().display(),
                    match durability {
                        Durability::Off => {
                            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                        }
                        Durability::Durable => "",
                    }
                )));
            if out.status.success() {
                cluster.port = port;
                eprintln!("pg_ctl start on 127.0.0.1:{port}: {:?}", t.elapsed());
                return cluster;
            }
            let log_text = fs::read_to_string(&log).unwrap_or_default();
            last = Some(format!(
                "{}\n--- server log ---\n{log_text}",
                describe(&out)
            ));
            if !log_text.contains("could not bind") && !log_text.contains("Address already in use")
            {
                break;
            }
        }
        panic!("pg_ctl start failed:\n{}", last.unwrap_or_default());
    }

    /// One cluster for the whole test process, started on first use, with a fresh database per
    /// caller ([`fresh_database`](Self::fresh_database)): for suites that open many homes.
    ///
    /// A `static` is never dropped, so a watchdog process stops the server (and removes its
    /// directory) as soon as this process has exited, however it exits — a panic, an abort or
    /// a kill included.
    pub fn shared() -> &'static Cluster {
        static SHARED: std::sync::OnceLock<Cluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = Cluster::start();
            cluster.stop_when_process_exits();
            cluster
        })
    }

    /// Spawns `sh` polling this process; when it is gone, `pg_ctl stop -m immediate` and
    /// `rm -rf` of the cluster's directory.
    fn stop_when_process_exits(&self) {
        let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
        let stop = format!(
            "{runuser}{pg_ctl} -D {data} -m immediate -w stop >/dev/null 2>&1",
            runuser = if self.as_root {
                "runuser -u postgres -- "
            } else {
                ""
            },
            pg_ctl = quote(&self.pg_ctl),
            data = quote(&self.data),
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop}; rm -rf {dir}",
            pid = std::process::id(),
            dir = quote(self._dir.path()),
        );
        // Never waited for: it is meant to outlive this process (and is reaped by init).
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawning the cluster's watchdog (sh)");
    }

    /// Creates a new, empty database named `<prefix>_<n>` (unique in this process) and returns
    /// its name.
    pub fn fresh_database(&self, prefix: &str) -> String {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}_{n}");
        self.createdb(&name);
        name
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`: the URL roomshard's `--control`/`--shards` and
    /// sqlx take for database `db` of this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The connection options every client tool takes: `-h 127.0.0.1 -p PORT -U postgres`.
    pub fn client_args(&self) -> [String; 6] {
        [
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
        ]
    }

    /// `psql -X -h 127.0.0.1 -p PORT -U postgres -d DB -v ON_ERROR_STOP=1`, with the
    /// environment's `PGSERVICE`/`PGOPTIONS` removed.
    pub fn psql_cmd(&self, db: &str) -> Command {
        let mut c = Command::new(&self.psql);
        c.env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .env("PGCONNECT_TIMEOUT", "10")
            .arg("-X")
            .arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg("postgres")
            .arg("-d")
            .arg(db)
            .arg("-v")
            .arg("ON_ERROR_STOP=1");
        c
    }

    /// Runs one query and returns its unaligned, tuples-only output without the final newline.
    pub fn query(&self, db: &str, sql: &str) -> String {
        let out = run_ok(self.psql_cmd(db).args(["-A", "-t", "-q", "-c", sql]));
        let mut s = String::from_utf8(out.stdout).expect("psql output is UTF-8");
        if s.ends_with('\n') {
            s.pop();
        }
        s
    }

    /// `createdb NAME`.
    pub fn createdb(&self, name: &str) {
        let createdb = require_tool("createdb", "apt-get install -y postgresql-client-15");
        run_ok(Command::new(createdb).env("PGCONNECT_TIMEOUT", "10").args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            name,
        ]));
    }

    /// `psql -v ON_ERROR_STOP=1 -f db.sql` into `db`, which must succeed without any notice or
    /// warning on stderr.
    pub fn restore(&self, db: &str, db_sql: &Path) {
        let t = Instant::now();
        let out = run(self.psql_cmd(db).arg("-q").arg("-f").arg(db_sql));
        assert!(
            out.status.success(),
            "psql -v ON_ERROR_STOP=1 -f {} failed:\n{}",
            db_sql.display(),
            describe(&out)
        );
        assert!(
            out.stderr.is_empty(),
            "psql printed to stderr while restoring {}:\n{}",
            db_sql.display(),
            describe(&out)
        );
        eprintln!("restore {} into {db}: {:?}", db_sql.display(), t.elapsed());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.port == 0 && !self.data.join("postmaster.pid").exists() {
            return;
        }
        let out = Self::server_cmd(self.as_root, &self.pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("pg_ctl stop failed: {}", describe(&o)),
            Err(e) => eprintln!("pg_ctl stop could not run: {e}"),
        }
    }
}
