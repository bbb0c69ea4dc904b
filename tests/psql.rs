//! `db.sql` restores with PostgreSQL's own client into a real PostgreSQL 15 server
//! (docs/bundle-format.md §4): `psql -v ON_ERROR_STOP=1 -f db.sql` into an empty database, row
//! counts equal the manifest's, and values of every logical type round-trip exactly.
//!
//! The server is started by this test on 127.0.0.1 (random free port, socket and data in a temp
//! dir, fsync off) and stopped by a drop guard, also when an assertion fails.
#![allow(clippy::unwrap_used)]

use roomshard_interop_tests::{
    FLOAT_ROWS, ROOM, TRICKY_BODY, TRICKY_JSON, TRICKY_TEXT, TS_1, UUID_1, build_fixture, describe,
    extract_with_gnu_tar, repo_root, require_tool, run, run_ok, tricky_bytes,
};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// A throwaway PostgreSQL cluster; stopped (`pg_ctl -m immediate stop`) on drop.
struct Cluster {
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

    fn start() -> Cluster {
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
        let log = cluster._dir.path().join("server.log");
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
                    "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off \
                     -c synchronous_commit=off -c full_page_writes=off",
                    cluster._dir.path().display()
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

    fn psql_cmd(&self, db: &str) -> Command {
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
    fn query(&self, db: &str, sql: &str) -> String {
        let out = run_ok(self.psql_cmd(db).args(["-A", "-t", "-q", "-c", sql]));
        let mut s = String::from_utf8(out.stdout).expect("psql output is UTF-8");
        if s.ends_with('\n') {
            s.pop();
        }
        s
    }

    fn createdb(&self, name: &str) {
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
    fn restore(&self, db: &str, db_sql: &Path) {
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

fn hex_of(s: &str) -> String {
    hex::encode(s.as_bytes())
}

/// Row counts of every table in a manifest against `SELECT count(*)`.
fn check_counts(pg: &Cluster, db: &str, manifest: &serde_json::Value) -> u64 {
    let mut total = 0;
    for t in manifest["tables"].as_array().expect("manifest.tables") {
        let name = t["name"].as_str().unwrap();
        let expected = t["row_count"].as_u64().unwrap();
        let got: u64 = pg
            .query(db, &format!("SELECT count(*) FROM \"{name}\""))
            .parse()
            .expect("count(*) is a number");
        assert_eq!(
            got, expected,
            "rows in {name} after restore vs manifest row_count"
        );
        total += got;
    }
    total
}

#[test]
fn psql_restores_db_sql_with_row_counts_from_manifest() {
    let started = Instant::now();
    let fx = build_fixture();
    let extracted = extract_with_gnu_tar(&fx.archive, &fx.path("x"));
    let db_sql = extracted.join("db.sql");
    let manifest: serde_json::Value = serde_json::from_slice(&fx.manifest_bytes).unwrap();

    let pg = Cluster::start();
    let server_version = pg.query("postgres", "SHOW server_version_num");
    assert!(
        server_version.starts_with("15"),
        "expected PostgreSQL 15, got {server_version}"
    );
    pg.createdb("restored");
    pg.restore("restored", &db_sql);

    // Row counts, per table, equal the manifest's (including the empty table).
    let total = check_counts(&pg, "restored", &manifest);
    assert_eq!(Some(total), manifest["totals"]["rows"].as_u64());
    assert_eq!(pg.query("restored", "SELECT count(*) FROM pins"), "0");
    assert_eq!(
        pg.query(
            "restored",
            "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables \
             WHERE table_schema = 'public'"
        ),
        "messages,pins,samples",
        "db.sql creates exactly the manifest's tables"
    );

    // Column types are the documented mapping of the logical types.
    let types = pg.query(
        "restored",
        "SELECT string_agg(column_name || ':' || data_type || ':' || is_nullable, ',' ORDER BY ordinal_position) \
         FROM information_schema.columns WHERE table_name = 'samples'",
    );
    assert_eq!(
        types,
        "id:integer:NO,room_id:text:NO,n8:bigint:YES,n4:integer:YES,flag:boolean:YES,\
         f8:double precision:YES,at:timestamp with time zone:YES,blob:bytea:YES,doc:jsonb:YES,\
         uid:uuid:YES,note:text:YES"
    );
    assert_eq!(
        pg.query(
            "restored",
            "SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = 'messages'::regclass AND i.indisprimary"
        ),
        "id"
    );

    // Text with unicode, tabs, newlines, CR, backslashes and COPY look-alikes, byte for byte.
    let q = |sql: &str| pg.query("restored", sql);
    assert_eq!(
        q("SELECT encode(convert_to(note, 'UTF8'), 'hex') FROM samples WHERE id = 1"),
        hex_of(TRICKY_TEXT),
        "samples.note round-trips exactly"
    );
    assert_eq!(
        q("SELECT encode(convert_to(body, 'UTF8'), 'hex') FROM messages WHERE id = 2"),
        hex_of(TRICKY_BODY),
        "a value containing a `\\.` line round-trips"
    );
    // The literal text `\N` is not NULL, and '' is not NULL either.
    assert_eq!(
        q(
            "SELECT author || '|' || (body IS NULL)::text || '|' || length(body) FROM messages WHERE id = -9223372036854775808"
        ),
        "\\N|false|0"
    );
    assert_eq!(
        q("SELECT (body IS NULL)::text FROM messages WHERE id = 9223372036854775807"),
        "true"
    );
    // bytea: every byte value.
    assert_eq!(
        q("SELECT encode(blob, 'hex') FROM samples WHERE id = 1"),
        hex::encode(tricky_bytes())
    );
    assert_eq!(
        q("SELECT (blob = ''::bytea)::text FROM samples WHERE id = 2"),
        "true"
    );
    // float8 specials and ordinary values.
    let floats = q(
        "SELECT string_agg(id || '=' || coalesce(f8::text, 'NULL'), ',' ORDER BY id) FROM samples",
    );
    let mut expected: Vec<String> = FLOAT_ROWS
        .iter()
        .map(|(id, _, s)| format!("{id}={s}"))
        .collect();
    expected.push("8=NULL".into());
    assert_eq!(
        floats,
        expected.join(","),
        "float8 values (NaN, ±Infinity, -0.5, …) round-trip"
    );
    assert_eq!(
        q("SELECT (f8 = 0.1::float8)::text FROM samples WHERE id = 5"),
        "true"
    );
    // jsonb: equal as JSON, nested unicode intact.
    let json_sql =
        format!("SELECT (doc = $j${TRICKY_JSON}$j$::jsonb)::text FROM samples WHERE id = 1");
    assert_eq!(q(&json_sql), "true", "jsonb round-trips");
    assert_eq!(
        q("SELECT doc->'nested'->>'ü' FROM samples WHERE id = 1"),
        "ñ"
    );
    assert_eq!(
        q("SELECT doc->>'k' FROM samples WHERE id = 1"),
        "v\tw\\x \"q\""
    );
    // uuid, timestamptz, integers at their limits, bool.
    assert_eq!(q("SELECT uid::text FROM samples WHERE id = 1"), UUID_1);
    assert_eq!(
        q(&format!(
            "SELECT (at = '{TS_1}'::timestamptz)::text || '|' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM samples WHERE id = 1"
        )),
        "true|2026-05-01 09:01:30.123456"
    );
    assert_eq!(
        q("SELECT n8 || '|' || n4 || '|' || flag FROM samples WHERE id = 1"),
        format!("{}|{}|false", i64::MIN, i32::MIN)
    );
    assert_eq!(
        q(
            "SELECT to_char(sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM messages WHERE id = 2"
        ),
        "2026-05-01 09:01:30.250000"
    );
    assert_eq!(
        q("SELECT string_agg(edited::text, ',' ORDER BY id) FROM messages"),
        "true,false,true,false"
    );
    assert_eq!(
        q("SELECT count(*) FROM messages WHERE room_id = 'interop-room'"),
        "4"
    );
    assert_eq!(ROOM, "interop-room");
    // The all-NULL row: every nullable column NULL.
    assert_eq!(
        q("SELECT num_nulls(n8, n4, flag, f8, at, blob, doc, uid, note) FROM samples WHERE id = 8"),
        "9"
    );
    // Media keys in the media column name real archive entries.
    let keys = q("SELECT string_agg(attachment_key, ',' ORDER BY attachment_key) FROM messages");
    for k in keys.split(',') {
        assert!(
            extracted.join("media").join(k).is_file(),
            "media/{k} is in the archive"
        );
    }

    // The committed valid golden vectors restore too, each into its own database.
    let vectors = repo_root().join("conformance").join("vectors");
    let mut restored = 0;
    if let Ok(entries) = fs::read_dir(&vectors) {
        let mut stems: Vec<String> = entries
            .filter_map(|e| {
                let p = e.ok()?.path();
                let name = p.file_name()?.to_str()?.to_string();
                let stem = name.strip_suffix(".expect")?.to_string();
                fs::read_to_string(&p)
                    .ok()?
                    .starts_with("expect: valid")
                    .then_some(stem)
            })
            .collect();
        stems.sort();
        for stem in stems {
            let out = extract_with_gnu_tar(
                &vectors.join(format!("{stem}.tar.zst")),
                &fx.path(&format!("vec-{stem}")),
            );
            let m: serde_json::Value =
                serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
            let db = format!("vec_{}", stem.replace('-', "_"));
            pg.createdb(&db);
            pg.restore(&db, &out.join("db.sql"));
            check_counts(&pg, &db, &m);
            restored += 1;
        }
    }
    assert!(
        restored >= 3,
        "expected to restore the committed valid vectors in {}, restored {restored}",
        vectors.display()
    );
    drop(pg);
    eprintln!(
        "psql_restores_db_sql_with_row_counts_from_manifest: {:?}",
        started.elapsed()
    );
}
