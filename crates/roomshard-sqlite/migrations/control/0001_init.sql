-- roomshard control plane, version 1.
--
-- Applied by roomshard-sqlite's own migration runner (table roomshard_migrations), never by
-- sqlx's, so it cannot collide with the host's `_sqlx_migrations`. An applied file must never
-- change: the runner stores its SHA-256 and refuses to start if the file differs. Add a new
-- numbered file instead.

-- Where each room lives. `version` is the compare-and-swap token.
CREATE TABLE roomshard_placements (
    room         TEXT    NOT NULL PRIMARY KEY,
    is_sharded   INTEGER NOT NULL CHECK (is_sharded IN (0, 1)),
    shard_url    TEXT,
    media_bucket TEXT,
    kms_key_ref  TEXT,
    profile      TEXT    NOT NULL,
    region       TEXT,
    state        TEXT    NOT NULL,
    version      INTEGER NOT NULL CHECK (version >= 0)
);

-- A running decentralise/recentralise's resumable state; `checkpoint` is CopyCheckpoint as JSON.
CREATE TABLE roomshard_copy_jobs (
    room               TEXT    NOT NULL,
    kind               TEXT    NOT NULL CHECK (kind IN ('decentralise', 'recentralise')),
    checkpoint         TEXT,
    media_after        TEXT,
    media_done_objects INTEGER NOT NULL CHECK (media_done_objects >= 0),
    media_done_bytes   INTEGER NOT NULL CHECK (media_done_bytes >= 0),
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (room, kind)
);

-- Each import's journal entry, written before the import writes anything.
CREATE TABLE roomshard_imports (
    id              TEXT    NOT NULL PRIMARY KEY,
    source_room     TEXT    NOT NULL,
    new_room        TEXT    NOT NULL,
    manifest_sha256 TEXT    NOT NULL,
    signer_key_id   TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('staging', 'done')),
    started_at      INTEGER NOT NULL
);

CREATE INDEX roomshard_imports_by_state ON roomshard_imports (state, started_at);

-- Old-to-new id values of a finished import (only changed ids).
CREATE TABLE roomshard_import_id_maps (
    import_id   TEXT NOT NULL,
    table_name  TEXT NOT NULL,
    column_name TEXT NOT NULL,
    old_value   TEXT NOT NULL,
    new_value   TEXT NOT NULL,
    PRIMARY KEY (import_id, table_name, column_name, old_value)
);

-- The hash-chained audit log. `detail` is the JSON text exactly as serde_json wrote it, since
-- the hash covers those bytes.
CREATE TABLE roomshard_audit (
    seq       INTEGER NOT NULL PRIMARY KEY CHECK (seq >= 1),
    at        TEXT    NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    room      TEXT,
    detail    TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);

CREATE INDEX roomshard_audit_by_room ON roomshard_audit (room, seq);

-- Append-only at the database level: rows cannot be edited or deleted, and a new row must extend
-- the chain (next seq, previous hash), which also rules out INSERT OR REPLACE over an old row
-- (REPLACE deletes without firing delete triggers unless recursive_triggers is on).
-- Whoever can write the file can still drop these triggers; `verify_audit` is what detects that.
CREATE TRIGGER roomshard_audit_no_update BEFORE UPDATE ON roomshard_audit
BEGIN
    SELECT RAISE(ABORT, 'roomshard_audit is append-only: rows cannot be updated');
END;

CREATE TRIGGER roomshard_audit_no_delete BEFORE DELETE ON roomshard_audit
BEGIN
    SELECT RAISE(ABORT, 'roomshard_audit is append-only: rows cannot be deleted');
END;

CREATE TRIGGER roomshard_audit_append_only BEFORE INSERT ON roomshard_audit
WHEN NEW.seq IS NOT COALESCE((SELECT MAX(seq) FROM roomshard_audit), 0) + 1
  OR NEW.prev_hash IS NOT COALESCE(
         (SELECT hash FROM roomshard_audit ORDER BY seq DESC LIMIT 1),
         '0000000000000000000000000000000000000000000000000000000000000000')
BEGIN
    SELECT RAISE(ABORT, 'roomshard_audit is append-only: a new row must extend the chain');
END;

-- Every Sovereignty Receipt issued.
CREATE TABLE roomshard_receipts (
    room     TEXT    NOT NULL,
    version  INTEGER NOT NULL CHECK (version >= 0),
    reason   TEXT    NOT NULL,
    issued   TEXT    NOT NULL,
    envelope TEXT    NOT NULL,
    UNIQUE (room, version, reason)
);
