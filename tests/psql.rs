//! `db.sql` restores with PostgreSQL's own client into a real PostgreSQL 15 server
//! (docs/bundle-format.md §4): `psql -v ON_ERROR_STOP=1 -f db.sql` into an empty database, row
//! counts equal the manifest's, and values of every logical type round-trip exactly.
//!
//! The server is started by this test on 127.0.0.1 (random free port, socket and data in a temp
//! dir, fsync off) and stopped by a drop guard, also when an assertion fails.
#![allow(clippy::unwrap_used)]

use roomshard_interop_tests::pg::Cluster;
use roomshard_interop_tests::{
    FLOAT_ROWS, ROOM, TRICKY_BODY, TRICKY_JSON, TRICKY_TEXT, TS_1, UUID_1, build_fixture,
    extract_with_gnu_tar, repo_root, tricky_bytes,
};
use std::fs;
use std::time::Instant;

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
