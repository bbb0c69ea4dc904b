-- roomshard control plane on PostgreSQL, version 1: the same tables as roomshard-sqlite's
-- migrations 1 to 3 together, in PostgreSQL's own types.
--
-- Applied by roomshard-postgres's own migration runner (table roomshard_migrations), never by
-- sqlx's, so it cannot collide with the host's `_sqlx_migrations`. An applied file must never
-- change: the runner stores its SHA-256 and refuses to start if the file differs. Add a new
-- numbered file instead.
--
-- Names are unqualified: the tables land in the connection's current schema (the host's,
-- usually `public`). Every column that is ordered or compared as a cursor is COLLATE "C", so
-- the database orders ids byte by byte, as Rust's `str` does, whatever the database's locale.

-- Where each room lives. `version` is the compare-and-swap token. `adopted_*`: which dedicated
-- resources are a customer's own (roomshard uses them but never creates or deletes them);
-- `*_provider`: which of the host's registered providers (by name) hold them.
CREATE TABLE roomshard_placements (
    room            text COLLATE "C" NOT NULL PRIMARY KEY,
    is_sharded      boolean NOT NULL,
    shard_url       text,
    media_bucket    text,
    kms_key_ref     text,
    profile         text    NOT NULL,
    region          text,
    state           text    NOT NULL,
    version         bigint  NOT NULL CHECK (version >= 0),
    adopted_shard   boolean NOT NULL DEFAULT false,
    adopted_bucket  boolean NOT NULL DEFAULT false,
    adopted_key     boolean NOT NULL DEFAULT false,
    shards_provider text    NOT NULL DEFAULT 'default',
    media_provider  text    NOT NULL DEFAULT 'default',
    keys_provider   text    NOT NULL DEFAULT 'default'
);

-- A running decentralise/recentralise's resumable state; `checkpoint` is CopyCheckpoint as JSON.
CREATE TABLE roomshard_copy_jobs (
    room               text COLLATE "C" NOT NULL,
    kind               text   NOT NULL CHECK (kind IN ('decentralise', 'recentralise')),
    checkpoint         text,
    media_after        text,
    media_done_objects bigint NOT NULL CHECK (media_done_objects >= 0),
    media_done_bytes   bigint NOT NULL CHECK (media_done_bytes >= 0),
    updated_at         bigint NOT NULL,
    PRIMARY KEY (room, kind)
);

-- Each import's journal entry, written before the import writes anything.
CREATE TABLE roomshard_imports (
    id              text COLLATE "C" NOT NULL PRIMARY KEY,
    source_room     text   NOT NULL,
    new_room        text COLLATE "C" NOT NULL,
    manifest_sha256 text   NOT NULL,
    signer_key_id   text   NOT NULL,
    state           text   NOT NULL CHECK (state IN ('staging', 'done')),
    started_at      bigint NOT NULL
);

CREATE INDEX roomshard_imports_by_state ON roomshard_imports (state, started_at, id);

-- Old-to-new id values of a finished import (only changed ids); `ord` is each value's position
-- in the maps as given, so they read back in that order.
CREATE TABLE roomshard_import_id_maps (
    import_id   text COLLATE "C" NOT NULL,
    ord         bigint NOT NULL CHECK (ord >= 0),
    table_name  text NOT NULL,
    column_name text NOT NULL,
    old_value   text NOT NULL,
    new_value   text NOT NULL,
    PRIMARY KEY (import_id, table_name, column_name, old_value)
);

-- The hash-chained audit log. `detail` is the JSON text exactly as serde_json wrote it (text,
-- not jsonb: the hash covers those bytes, and jsonb would reorder and respace them).
CREATE TABLE roomshard_audit (
    seq       bigint NOT NULL PRIMARY KEY CHECK (seq >= 1),
    at        text   NOT NULL,
    actor     text   NOT NULL,
    action    text   NOT NULL,
    room      text COLLATE "C",
    detail    text   NOT NULL,
    prev_hash text   NOT NULL,
    hash      text   NOT NULL
);

CREATE INDEX roomshard_audit_by_room ON roomshard_audit (room, seq);

-- Append-only at the database level: rows cannot be updated, deleted or truncated away, and a
-- new row must extend the chain (next seq, previous row's hash). The refusal is SQLSTATE RSA01,
-- which roomshard reports as permission denied. The primary key on seq keeps two concurrent
-- inserts from both extending the same row. Whoever owns the table can still drop or disable
-- the trigger (or write with session_replication_role = replica); `verify_audit` is what
-- detects that. The table is named through TG_TABLE_SCHEMA, so the check reads this table
-- whatever the writing session's search_path is.
CREATE FUNCTION roomshard_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    last_seq  bigint;
    last_hash text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'roomshard_audit is append-only: rows cannot be updated'
            USING ERRCODE = 'RSA01';
    ELSIF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'roomshard_audit is append-only: rows cannot be deleted'
            USING ERRCODE = 'RSA01';
    ELSIF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'roomshard_audit is append-only: it cannot be truncated'
            USING ERRCODE = 'RSA01';
    END IF;
    EXECUTE format('SELECT seq, hash FROM %I.%I ORDER BY seq DESC LIMIT 1',
                   TG_TABLE_SCHEMA, TG_TABLE_NAME)
        INTO last_seq, last_hash;
    IF NEW.seq IS DISTINCT FROM COALESCE(last_seq, 0) + 1
       OR NEW.prev_hash IS DISTINCT FROM COALESCE(
           last_hash, '0000000000000000000000000000000000000000000000000000000000000000') THEN
        RAISE EXCEPTION 'roomshard_audit is append-only: a new row must extend the chain'
            USING ERRCODE = 'RSA01';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER roomshard_audit_append_only BEFORE INSERT OR UPDATE OR DELETE ON roomshard_audit
    FOR EACH ROW EXECUTE FUNCTION roomshard_audit_append_only();

CREATE TRIGGER roomshard_audit_no_truncate BEFORE TRUNCATE ON roomshard_audit
    FOR EACH STATEMENT EXECUTE FUNCTION roomshard_audit_append_only();

-- Every Sovereignty Receipt issued; `ord` keeps the order they were recorded in.
CREATE TABLE roomshard_receipts (
    ord      bigint GENERATED ALWAYS AS IDENTITY,
    room     text COLLATE "C" NOT NULL,
    version  bigint NOT NULL CHECK (version >= 0),
    reason   text   NOT NULL,
    issued   text   NOT NULL,
    envelope text   NOT NULL,
    UNIQUE (room, version, reason)
);
