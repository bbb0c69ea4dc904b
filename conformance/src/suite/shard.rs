//! Checks of [`ShardStore`]'s documented behaviour, on a small fixture schema of every logical
//! type ([`fixture_schema`]).

use super::{
    CheckResult, CheckSpec, Context, Failure, Kind, Report, Verdict, checks, ensure, expect_kind,
    expect_unsupported, fresh_room, run_checks,
};
use roomshard_core::{
    Bytes, CheckpointSink, ChunkParity, ChunkPlan, CopyCheckpoint, CopyPass, CopyRequest,
    CopySource, DumpSink, DumpSource, Error, IdRemap, Identifier, KeyRange, KeyRewrite, Location,
    LogicalType, NoCheckpoints, NoProgress, Parity, ProgressEvent, RemapPolicy, RoomId, RoomSchema,
    Scope, ServerUrl, ShardStore, Table, TableCount, TableDescriptor, async_trait,
};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};

/// What the shard suite needs to know beyond the trait.
#[derive(Clone, Default)]
pub struct ShardSuiteConfig {
    /// Whether the store's pooled scope has the shared tables of [`fixture_schema`] (the host
    /// creates shared tables, not `ShardStore`; a test calls the provider's own setup first).
    /// Without them, checks that need pooled rows are not applicable.
    pub pooled_tables: bool,
    /// Prefix of the room ids the suite creates (default `cf`).
    pub room_prefix: Option<String>,
    /// A second store — another instance, another server, or another provider altogether —
    /// for the two-store round trip ([`a_dump_restores_into_another_store_and_back`]): what a
    /// host relies on when it registers several shard stores and moves a room between them.
    /// Without it that check is not applicable.
    pub peer: Option<Arc<dyn ShardStore>>,
}

impl std::fmt::Debug for ShardSuiteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardSuiteConfig")
            .field("pooled_tables", &self.pooled_tables)
            .field("room_prefix", &self.room_prefix)
            .field("peer", &self.peer.as_ref().map(|p| p.name().to_string()))
            .finish()
    }
}

impl ShardSuiteConfig {
    pub(crate) fn room(&self) -> Result<RoomId, Failure> {
        fresh_room(self.room_prefix.as_deref().unwrap_or("cf"))
    }
}

/// The suite's room tables: `threads` (an `int8` id, every logical type, a media column),
/// `posts` (a `uuid` id referencing `threads.id`) and `tags` (always empty).
pub fn fixture_schema() -> Result<RoomSchema, Error> {
    let threads = Table::new("threads")
        .column("room_id", LogicalType::Text)
        .room_key()
        .column("id", LogicalType::Int8)
        .primary_key()
        .id()
        .column("title", LogicalType::Text)
        .not_null()
        .column("n4", LogicalType::Int4)
        .column("flag", LogicalType::Bool)
        .column("score", LogicalType::Float8)
        .column("created", LogicalType::Timestamptz)
        .column("blob", LogicalType::Bytea)
        .column("meta", LogicalType::Jsonb)
        .column("uid", LogicalType::Uuid)
        .column("cover", LogicalType::Text)
        .media()
        .build()?;
    let posts = Table::new("posts")
        .column("room_id", LogicalType::Text)
        .room_key()
        .column("id", LogicalType::Uuid)
        .primary_key()
        .id()
        .column("thread_id", LogicalType::Int8)
        .not_null()
        .references("threads", "id")
        .column("body", LogicalType::Text)
        .build()?;
    let tags = Table::new("tags")
        .column("room_id", LogicalType::Text)
        .room_key()
        .column("name", LogicalType::Text)
        .primary_key()
        .build()?;
    RoomSchema::new("conformance-1", vec![threads, posts, tags])
}

pub(crate) fn schema() -> Result<RoomSchema, Failure> {
    fixture_schema().map_err(|e| Failure::new(format!("fixture schema: {e}")))
}

/// The base of a room's fixture ids. Pooled tables share ids across rooms, so each room (the
/// suite's room ids are unique per run) gets its own range, derived from its id.
fn base_of(room: &RoomId) -> u64 {
    let digest = Sha256::digest(room.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 1_000_000_000_000) * 100
}

/// `threads` rows of `room` in COPY text, in primary-key order (ids base+1, +2, +10: numeric,
/// not textual, order), exercising escapes, NULLs and every type.
fn thread_rows(room: &str, base: u64) -> Vec<String> {
    let (one, two, ten) = (base + 1, base + 2, base + 10);
    vec![
        format!(
            "{room}\t{one}\thello\\tworld \\\\ \u{e9}\t-7\tt\t1.5\t2026-11-22 10:00:00+00\t\\\\x00ff10\t{{\"a\": 1}}\t0b7c7e2e-8f3e-4a57-9a53-6a1c3f1f0a01\tmedia/a.png\n"
        ),
        format!(
            "{room}\t{two}\tsecond\t\\N\tf\t-0.25\t2026-01-01 00:00:00.123456+00\t\\N\t[1, 2]\t\\N\t\\N\n"
        ),
        format!(
            "{room}\t{ten}\tline\\nbreak\t2147483647\t\\N\t3.25\t\\N\t\\\\x\t{{}}\t\\N\tmedia/b c.png\n"
        ),
    ]
}

/// `posts` rows of `room` in primary-key order, referencing threads base+2 and base+1.
fn post_rows(room: &str, base: u64) -> Vec<String> {
    vec![
        format!("{room}\t{}\t{}\t\\N\n", post_uuid(base + 1), base + 2),
        format!("{room}\t{}\t{}\treply\n", post_uuid(base + 2), base + 1),
    ]
}

fn post_uuid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// One table of a dump held in memory: its name and its rows in COPY text.
type TableRows<'a> = (&'a str, Vec<String>);

/// A [`DumpSource`] over tables held in memory.
struct MemorySource {
    tables: Vec<(String, Vec<Bytes>)>,
    next: usize,
    current: Option<std::vec::IntoIter<Bytes>>,
}

impl MemorySource {
    fn new(tables: Vec<TableRows>) -> Self {
        MemorySource {
            tables: tables
                .into_iter()
                .map(|(t, rows)| (t.to_string(), rows.into_iter().map(Bytes::from).collect()))
                .collect(),
            next: 0,
            current: None,
        }
    }
}

#[async_trait]
impl DumpSource for MemorySource {
    async fn next_table(&mut self) -> roomshard_core::Result<Option<String>> {
        let Some((name, rows)) = self.tables.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        self.current = Some(rows.clone().into_iter());
        Ok(Some(name.clone()))
    }

    async fn next_rows(&mut self) -> roomshard_core::Result<Option<Bytes>> {
        Ok(self.current.as_mut().and_then(Iterator::next))
    }
}

/// A [`DumpSink`] collecting each table's bytes, checking the call sequence.
#[derive(Default)]
struct MemorySink {
    tables: Vec<(String, Vec<u8>, Option<u64>)>,
    problem: Option<String>,
    fail_on_rows: bool,
}

#[async_trait]
impl DumpSink for MemorySink {
    async fn begin_table(&mut self, table: &TableDescriptor) -> roomshard_core::Result<()> {
        if let Some((name, _, None)) = self.tables.last() {
            self.problem = Some(format!(
                "begin_table({}) before end_table({name})",
                table.name
            ));
        }
        self.tables.push((table.name.clone(), Vec::new(), None));
        Ok(())
    }

    async fn rows(&mut self, chunk: Bytes) -> roomshard_core::Result<()> {
        if self.fail_on_rows {
            return Err(Error::conflict("conformance sink refuses rows"));
        }
        match self.tables.last_mut() {
            Some((_, bytes, None)) => bytes.extend_from_slice(&chunk),
            _ => self.problem = Some("rows outside a table".into()),
        }
        if !chunk.is_empty() && !chunk.ends_with(b"\n") {
            self.problem = Some("a rows chunk does not end with a whole row".into());
        }
        Ok(())
    }

    async fn end_table(&mut self, rows: u64) -> roomshard_core::Result<()> {
        match self.tables.last_mut() {
            Some((_, _, count @ None)) => *count = Some(rows),
            _ => self.problem = Some("end_table without begin_table".into()),
        }
        Ok(())
    }
}

/// A [`CheckpointSink`] that keeps every checkpoint and can fail the first save.
#[derive(Default)]
struct RecordingCheckpoints {
    saved: Mutex<Vec<CopyCheckpoint>>,
    fail_first: bool,
}

#[async_trait]
impl CheckpointSink for RecordingCheckpoints {
    async fn save(&self, checkpoint: &CopyCheckpoint) -> roomshard_core::Result<()> {
        let mut saved = self
            .saved
            .lock()
            .map_err(|_| Error::conflict("checkpoint lock poisoned"))?;
        saved.push(checkpoint.clone());
        if self.fail_first && saved.len() == 1 {
            return Err(Error::unavailable(
                "conformance job table",
                true,
                "save failed",
            ));
        }
        Ok(())
    }
}

impl RecordingCheckpoints {
    fn all(&self) -> Vec<CopyCheckpoint> {
        self.saved.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// The checks of the shard suite, in the order [`run_shard_suite`] runs them.
pub fn shard_checks() -> Vec<CheckSpec<dyn ShardStore, ShardSuiteConfig>> {
    checks!(dyn ShardStore, ShardSuiteConfig;
        locate_shard_is_pure_and_ensure_shard_goes_there, an_adopted_shard_is_never_created_or_dropped, a_pinned_region_is_refused_without_regions, ensure_shard_is_idempotent_and_refuses_a_different_table, restore_then_dump_round_trips_every_type, restore_refuses_bad_dumps_all_or_nothing, restore_keep_collision_is_a_conflict, restore_on_collision_remaps_and_rewrites_references, restore_rewrites_media_keys, dump_stops_on_a_sink_error, parity_counts_and_checksums_match_the_dump, bulk_copy_is_checkpointed_and_converges, copy_refuses_bad_requests, catch_up_makes_the_target_equal, a_changes_pass_applies_what_the_log_recorded, chunk_parity_ranges_compare_name_rows_and_follow_applied_keys, a_write_fence_is_held_alone_and_dies_with_its_holder, copy_resumes_after_a_failed_checkpoint, cross_server_copy, a_dump_restores_into_another_store_and_back, drop_room_is_idempotent_and_room_scoped, size_bytes_of_a_shard, route_names_tables, outbox_reads_and_trims,
    )
}

/// Runs every shard-store check against `store` and reports each.
pub async fn run_shard_suite(
    store: &(dyn ShardStore + 'static),
    config: &ShardSuiteConfig,
) -> Report {
    run_checks("shard", store.name(), &shard_checks(), store, config).await
}

/// A [`MemorySource`] replaying what a [`MemorySink`] collected.
fn replay(sink: &MemorySink) -> MemorySource {
    MemorySource {
        tables: sink
            .tables
            .iter()
            .map(|(name, bytes, _)| (name.clone(), vec![Bytes::from(bytes.clone())]))
            .collect(),
        next: 0,
        current: None,
    }
}

/// Two stores agree on rows (the contract's "byte-for-byte comparable across providers"): a
/// dedicated shard's dump, restored by `config.peer` into its own shard for the same room, has
/// equal parity (counts, and checksums where both compute them); dumped back from the peer
/// into a fresh shard here, equal again. A host moving a room between two registered stores
/// (`roomshard::registry`) does exactly this.
pub async fn a_dump_restores_into_another_store_and_back(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let Some(peer) = config.peer.as_deref() else {
        return Ok(Verdict::NotApplicable(
            "no peer store configured (ShardSuiteConfig::peer)".into(),
        ));
    };
    for s in [store, peer] {
        let caps = s.capabilities();
        if !(caps.dump && caps.restore) {
            return Ok(Verdict::NotApplicable(format!(
                "{} lacks `dump` or `restore`",
                s.name()
            )));
        }
    }
    let schema = schema()?;
    let room = new_shard(store, config).await?;
    let here = dedicated(store, &room)?;
    seed(
        store,
        &here,
        room.as_str(),
        base_of(&room),
        &IdRemap::default(),
    )
    .await
    .context("seeding the shard")?;
    let original = parity(store, &here).await?;
    let (_, dumped) = dump_tables(store, &here).await?;

    let there = dedicated(peer, &room)?;
    let Scope::Dedicated(_, there_at) = &there else {
        return Err(Failure::new("dedicated() gave a pooled scope"));
    };
    peer.ensure_shard(&room, there_at, &schema)
        .await
        .context("ensure_shard on the peer")?;
    peer.restore(&there, &schema, &mut replay(&dumped), &IdRemap::default())
        .await
        .context("restoring the dump on the peer")?;
    let on_peer = parity(peer, &there).await?;
    let both_hash = store.capabilities().parity_checksums && peer.capabilities().parity_checksums;
    let compare = |a: &Parity, b: &Parity, what: &str| -> Result<(), Failure> {
        ensure(rows_of(a) == rows_of(b), || {
            format!("{what}: row counts {:?} vs {:?}", rows_of(a), rows_of(b))
        })?;
        if both_hash {
            ensure(a.mismatched_tables(b).is_empty(), || {
                format!("{what}: checksums differ in {:?}", a.mismatched_tables(b))
            })?;
        }
        Ok(())
    };
    compare(&original, &on_peer, "restored on the peer")?;

    let (_, back) = dump_tables(peer, &there).await?;
    store
        .drop_room(&here, &schema)
        .await
        .context("drop_room of the original")?;
    store
        .ensure_shard(&room, &located(store, &room)?, &schema)
        .await
        .context("ensure_shard again")?;
    store
        .restore(&here, &schema, &mut replay(&back), &IdRemap::default())
        .await
        .context("restoring the peer's dump back")?;
    compare(
        &original,
        &parity(store, &here).await?,
        "back from the peer",
    )?;
    peer.drop_room(&there, &schema)
        .await
        .context("drop_room on the peer")?;
    store.drop_room(&here, &schema).await.context("drop_room")?;
    Ok(Verdict::Passed)
}

/// Where `store` puts `room`'s shard (its own `locate_shard`, no region): what a placement would
/// record before `ensure_shard`.
fn located(store: &dyn ShardStore, room: &RoomId) -> Result<Location, Failure> {
    Ok(Location {
        shard: Some(store.locate_shard(room, None).context("locate_shard")?),
        ..Location::default()
    })
}

/// `room`'s dedicated scope at the location `store` gives it.
pub(crate) fn dedicated(store: &dyn ShardStore, room: &RoomId) -> Result<Scope, Failure> {
    Ok(Scope::Dedicated(room.clone(), located(store, room)?))
}

pub(crate) async fn new_shard(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> Result<RoomId, Failure> {
    let room = config.room()?;
    store
        .ensure_shard(&room, &located(store, &room)?, &schema()?)
        .await
        .context("ensure_shard")?;
    Ok(room)
}

/// Restores the fixture rows (written with room id `written_as`) into `scope`.
async fn seed(
    store: &dyn ShardStore,
    scope: &Scope,
    written_as: &str,
    base: u64,
    remap: &IdRemap,
) -> roomshard_core::Result<roomshard_core::RestoreOutcome> {
    let schema = fixture_schema()?;
    let mut threads = thread_rows(written_as, base);
    threads.reverse();
    let mut source = MemorySource::new(vec![
        ("posts", post_rows(written_as, base)),
        ("threads", threads),
    ]);
    store.restore(scope, &schema, &mut source, remap).await
}

async fn dump_tables(
    store: &dyn ShardStore,
    scope: &Scope,
) -> Result<(Vec<TableCount>, MemorySink), Failure> {
    let mut sink = MemorySink::default();
    let counts = store
        .dump(scope, &schema()?, &mut sink)
        .await
        .context(&format!("dump of {scope}"))?;
    if let Some(p) = &sink.problem {
        return Err(Failure::new(format!(
            "dump called the sink out of order: {p}"
        )));
    }
    Ok((counts, sink))
}

async fn parity(store: &dyn ShardStore, scope: &Scope) -> Result<Parity, Failure> {
    store
        .parity(scope, &schema()?)
        .await
        .context(&format!("parity of {scope}"))
}

fn rows_of(p: &Parity) -> Vec<(String, u64)> {
    p.tables.iter().map(|t| (t.table.clone(), t.rows)).collect()
}

fn expected_counts(threads: u64, posts: u64) -> Vec<(String, u64)> {
    vec![
        ("threads".to_string(), threads),
        ("posts".to_string(), posts),
        ("tags".to_string(), 0),
    ]
}

fn needs_restore(store: &dyn ShardStore) -> Option<Verdict> {
    (!store.capabilities().restore).then(|| {
        Verdict::NotApplicable("capability `restore` is off: the suite cannot seed rows".into())
    })
}

/// `locate_shard`: "No side effect; the same answer for the same room and region";
/// `ensure_shard`: "Returns the shard's reference, whose `url` equals `at.shard`".
pub async fn locate_shard_is_pure_and_ensure_shard_goes_there(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let schema = schema()?;
    let room = config.room()?;
    let first = store.locate_shard(&room, None).context("locate_shard")?;
    let again = store
        .locate_shard(&room, None)
        .context("locate_shard again")?;
    ensure(first == again, || {
        format!("locate_shard answered {first:?}, then {again:?}")
    })?;
    expect_kind(
        store.parity(&dedicated(store, &room)?, &schema).await,
        Kind::NotFound,
        "parity of a located shard before ensure_shard (locate must create nothing)",
    )?;
    let made = store
        .ensure_shard(&room, &located(store, &room)?, &schema)
        .await
        .context("ensure_shard at the located URL")?;
    ensure(made.url == first, || {
        format!(
            "ensure_shard made {:?}, not the location it was given ({first:?})",
            made.url
        )
    })?;
    expect_kind(
        store
            .ensure_shard(&room, &Location::default(), &schema)
            .await,
        Kind::Invalid,
        "ensure_shard with a location that names no shard",
    )?;
    Ok(Verdict::Passed)
}

/// `ensure_shard`: "an adopted one must exist (`NotFound` otherwise) and is never created";
/// `drop_room`: "An adopted shard … is left as it is, with its tables and rows".
pub async fn an_adopted_shard_is_never_created_or_dropped(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let schema = schema()?;
    let room = config.room()?;
    let mut adopted = located(store, &room)?;
    adopted.adopted.shard = true;
    expect_kind(
        store.ensure_shard(&room, &adopted, &schema).await,
        Kind::NotFound,
        "ensure_shard of an adopted shard that does not exist",
    )?;
    expect_kind(
        store.parity(&dedicated(store, &room)?, &schema).await,
        Kind::NotFound,
        "parity after a refused adoption (nothing may be created)",
    )?;
    // The customer's shard exists (made here the ordinary way, standing in for theirs): adopted,
    // it is prepared, and a drop leaves it with its rows.
    store
        .ensure_shard(&room, &located(store, &room)?, &schema)
        .await
        .context("making the shard that stands in for the customer's")?;
    store
        .ensure_shard(&room, &adopted, &schema)
        .await
        .context("ensure_shard of an existing adopted shard")?;
    let scope = Scope::Dedicated(room.clone(), adopted);
    if store.capabilities().restore {
        seed(
            store,
            &scope,
            room.as_str(),
            base_of(&room),
            &IdRemap::default(),
        )
        .await
        .context("restoring rows into the adopted shard")?;
    }
    let before = parity(store, &scope).await?;
    store
        .drop_room(&scope, &schema)
        .await
        .context("drop_room of an adopted shard")?;
    let after = parity(store, &scope)
        .await
        .map_err(|f| Failure::new(format!("the adopted shard is gone after drop_room: {f}")))?;
    ensure(after == before, || {
        format!("drop_room of an adopted shard changed it: {before:?} → {after:?}")
    })?;
    Ok(Verdict::Passed)
}

/// `locate_shard` / `ensure_shard`: "A region the store cannot place a shard in is
/// `Error::Unsupported` (`ensure_shard.region`)" — without `regions`, any pinned region.
pub async fn a_pinned_region_is_refused_without_regions(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    if store.capabilities().regions {
        return Ok(Verdict::NotApplicable(
            "the store places shards in regions; which ones is deployment-specific".into(),
        ));
    }
    let room = config.room()?;
    let result = store.locate_shard(&room, Some("eu-central-1"));
    expect_unsupported(result, "ensure_shard.region", "regions")?;
    let mut pinned = located(store, &room)?;
    pinned.region = Some("eu-central-1".into());
    let verdict = expect_unsupported(
        store.ensure_shard(&room, &pinned, &schema()?).await,
        "ensure_shard.region",
        "regions",
    )?;
    expect_kind(
        store.parity(&dedicated(store, &room)?, &schema()?).await,
        Kind::NotFound,
        "parity after a refused region (nothing may be created)",
    )?;
    Ok(verdict)
}

/// `ensure_shard`: "Idempotent: on an existing, matching shard it changes nothing and returns
/// `Ok`"; "An existing table whose columns differ from the descriptor is `Error::Conflict`".
pub async fn ensure_shard_is_idempotent_and_refuses_a_different_table(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let room = config.room()?;
    let first = store
        .ensure_shard(&room, &located(store, &room)?, &schema()?)
        .await
        .context("ensure_shard")?;
    let again = store
        .ensure_shard(&room, &located(store, &room)?, &schema()?)
        .await
        .context("ensure_shard again")?;
    ensure(first == again, || {
        format!("ensure_shard returned {first:?}, then {again:?}: one room, one location")
    })?;
    ensure(
        !first.namespace.is_empty() && first.url.expose().contains(&first.namespace),
        || format!("the shard ref {first:?} must name its namespace in its URL"),
    )?;
    let other = new_shard(store, config).await?;
    let other_ref = store
        .ensure_shard(&other, &located(store, &other)?, &schema()?)
        .await
        .context("ensure_shard of another room")?;
    ensure(other_ref.url != first.url, || {
        format!("two rooms got the same shard location {:?}", first.url)
    })?;
    let changed = Table::new("threads")
        .column("room_id", LogicalType::Text)
        .room_key()
        .column("id", LogicalType::Int8)
        .primary_key()
        .id()
        .column("title", LogicalType::Int8)
        .build()
        .and_then(|t| RoomSchema::new("conformance-2", vec![t]))
        .map_err(|e| Failure::new(format!("changed schema: {e}")))?;
    expect_kind(
        store
            .ensure_shard(&room, &located(store, &room)?, &changed)
            .await,
        Kind::Conflict,
        "ensure_shard with a table whose columns differ from the existing one",
    )?;
    let p = parity(store, &dedicated(store, &room)?).await?;
    ensure(rows_of(&p) == expected_counts(0, 0), || {
        format!("a fresh shard should have empty tables in schema order, parity says {p:?}")
    })?;
    Ok(Verdict::Passed)
}

/// `restore` then `dump`: tables in any order in, schema order out (empty ones included), rows
/// in primary-key order, byte-for-byte COPY text, and every row's `room_key_column` set to the
/// scope's room "whatever the dump said".
pub async fn restore_then_dump_round_trips_every_type(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let caps = store.capabilities();
    let room = new_shard(store, config).await?;
    let scope = dedicated(store, &room)?;
    if !caps.restore {
        let mut source = MemorySource::new(vec![]);
        return expect_unsupported(
            store
                .restore(&scope, &schema()?, &mut source, &IdRemap::default())
                .await,
            "restore",
            "restore",
        );
    }
    let outcome = seed(
        store,
        &scope,
        "someone-else",
        base_of(scope.room()),
        &IdRemap::default(),
    )
    .await
    .context("restore")?;
    let counts: Vec<(String, u64)> = outcome
        .tables
        .iter()
        .map(|t| (t.table.clone(), t.rows))
        .collect();
    ensure(counts == expected_counts(3, 2), || {
        format!("restore reported {counts:?}")
    })?;
    ensure(outcome.id_maps.iter().all(|m| m.changes.is_empty()), || {
        format!(
            "a restore with RemapPolicy::Keep changed ids: {:?}",
            outcome.id_maps
        )
    })?;
    if !caps.dump {
        return expect_unsupported(
            store
                .dump(&scope, &schema()?, &mut MemorySink::default())
                .await,
            "dump",
            "dump",
        );
    }
    let (counts, sink) = dump_tables(store, &scope).await?;
    let counts: Vec<(String, u64)> = counts.into_iter().map(|t| (t.table, t.rows)).collect();
    ensure(counts == expected_counts(3, 2), || {
        format!("dump returned {counts:?}")
    })?;
    let names: Vec<&str> = sink.tables.iter().map(|t| t.0.as_str()).collect();
    ensure(names == ["threads", "posts", "tags"], || {
        format!("dump gave tables {names:?}, expected schema order with the empty one")
    })?;
    let expected = [
        thread_rows(room.as_str(), base_of(&room)).concat(),
        post_rows(room.as_str(), base_of(&room)).concat(),
        String::new(),
    ];
    for ((name, bytes, count), want) in sink.tables.iter().zip(expected.iter()) {
        let got = String::from_utf8_lossy(bytes);
        ensure(got == want.as_str(), || {
            format!("dump of {name}:\n{got}\nexpected:\n{want}")
        })?;
        let lines = want.lines().count() as u64;
        ensure(*count == Some(lines), || {
            format!("end_table({count:?}) for {name}, which has {lines} rows")
        })?;
    }
    Ok(Verdict::Passed)
}

/// `restore`: "a table not in `schema` or given twice is `Error::Invalid`; a row with the wrong
/// number of fields or a value that does not parse as its column's type is `Error::Corrupt`";
/// "All or nothing: on any error no row of the dump remains".
pub async fn restore_refuses_bad_dumps_all_or_nothing(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    if let Some(v) = needs_restore(store) {
        return Ok(v);
    }
    let room = new_shard(store, config).await?;
    let scope = dedicated(store, &room)?;
    let r = room.as_str();
    let good = thread_rows(r, base_of(&room));
    let cases: Vec<(&str, Kind, Vec<TableRows>)> = vec![
        (
            "a table not in the schema",
            Kind::Invalid,
            vec![("threads", good.clone()), ("no_such_table", vec![])],
        ),
        (
            "a table given twice",
            Kind::Invalid,
            vec![("threads", good.clone()), ("threads", vec![])],
        ),
        (
            "a row with too few fields",
            Kind::Corrupt,
            vec![
                ("threads", good.clone()),
                (
                    "posts",
                    vec![format!("{r}\t00000000-0000-4000-8000-000000000009\n")],
                ),
            ],
        ),
        (
            "an int8 that does not parse",
            Kind::Corrupt,
            vec![
                (
                    "posts",
                    vec![format!(
                        "{r}\t00000000-0000-4000-8000-000000000009\tnot-a-number\t\\N\n"
                    )],
                ),
                ("threads", good.clone()),
            ],
        ),
        (
            "a uuid that does not parse",
            Kind::Corrupt,
            vec![
                ("threads", good.clone()),
                ("posts", vec![format!("{r}\tnot-a-uuid\t1\t\\N\n")]),
            ],
        ),
    ];
    for (label, kind, tables) in cases {
        let mut source = MemorySource::new(tables);
        expect_kind(
            store
                .restore(&scope, &schema()?, &mut source, &IdRemap::default())
                .await,
            kind,
            &format!("restore of a dump with {label}"),
        )?;
        let p = parity(store, &scope).await?;
        ensure(rows_of(&p) == expected_counts(0, 0), || {
            format!("after the failed restore ({label}) rows remain: {p:?}")
        })?;
    }
    Ok(Verdict::Passed)
}

/// "with `RemapPolicy::Keep` an id that collides with an existing row is `Error::Conflict`";
/// "Not idempotent: restoring the same dump twice collides".
pub async fn restore_keep_collision_is_a_conflict(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    if let Some(v) = needs_restore(store) {
        return Ok(v);
    }
    let room = new_shard(store, config).await?;
    let scope = dedicated(store, &room)?;
    seed(
        store,
        &scope,
        room.as_str(),
        base_of(scope.room()),
        &IdRemap::default(),
    )
    .await
    .context("restore")?;
    expect_kind(
        seed(
            store,
            &scope,
            room.as_str(),
            base_of(scope.room()),
            &IdRemap::default(),
        )
        .await,
        Kind::Conflict,
        "restoring the same dump twice with RemapPolicy::Keep",
    )?;
    let p = parity(store, &scope).await?;
    ensure(rows_of(&p) == expected_counts(3, 2), || {
        format!("after the refused second restore, parity says {p:?}")
    })?;
    Ok(Verdict::Passed)
}

/// `id_remap`: "with `RemapPolicy::OnCollision` a colliding id gets a new value … and every
/// column `references`-ing it is rewritten … The changes are returned in
/// `RestoreOutcome::id_maps`." Run in the pooled scope, where ids are shared by rooms.
pub async fn restore_on_collision_remaps_and_rewrites_references(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let caps = store.capabilities();
    if let Some(v) = needs_restore(store) {
        return Ok(v);
    }
    if !config.pooled_tables {
        return Ok(Verdict::NotApplicable(
            "no pooled tables (ShardSuiteConfig::pooled_tables is false)".into(),
        ));
    }
    let a = config.room()?;
    let b = config.room()?;
    seed(
        store,
        &Scope::Pooled(a.clone()),
        a.as_str(),
        base_of(&a),
        &IdRemap::default(),
    )
    .await
    .context("restore into pooled room a")?;
    let remap = IdRemap {
        ids: RemapPolicy::OnCollision,
        media_keys: None,
    };
    if !caps.id_remap {
        return match seed(
            store,
            &Scope::Pooled(b.clone()),
            b.as_str(),
            base_of(&a),
            &remap,
        )
        .await
        {
            Err(Error::Unsupported { operation, .. }) if operation.starts_with("restore") => {
                Ok(Verdict::Skipped(
                    "capability `id_remap` is off; restore with OnCollision returned Unsupported"
                        .into(),
                ))
            }
            other => Err(Failure::new(format!(
                "capability `id_remap` is off, so restore with OnCollision must be Unsupported; got {other:?}"
            ))),
        };
    }
    let outcome = seed(
        store,
        &Scope::Pooled(b.clone()),
        b.as_str(),
        base_of(&a),
        &remap,
    )
    .await
    .context("restore into pooled room b with OnCollision")?;
    let thread_map = outcome
        .id_maps
        .iter()
        .find(|m| m.table == "threads" && m.column == "id")
        .ok_or_else(|| {
            Failure::new(format!("no id map for threads.id in {:?}", outcome.id_maps))
        })?;
    let mut olds: Vec<&str> = thread_map.changes.iter().map(|c| c.0.as_str()).collect();
    olds.sort_unstable();
    let base = base_of(&a);
    let mut want = vec![
        (base + 1).to_string(),
        (base + 2).to_string(),
        (base + 10).to_string(),
    ];
    want.sort_unstable();
    ensure(olds == want, || {
        format!(
            "every colliding thread id should be remapped, got {:?}",
            thread_map.changes
        )
    })?;
    let posts_map = outcome
        .id_maps
        .iter()
        .find(|m| m.table == "posts" && m.column == "id");
    ensure(posts_map.is_some_and(|m| m.changes.len() == 2), || {
        format!(
            "both colliding post uuids should be remapped: {:?}",
            outcome.id_maps
        )
    })?;
    if caps.dump {
        let (_, sink) = dump_tables(store, &Scope::Pooled(b.clone())).await?;
        let posts = sink
            .tables
            .iter()
            .find(|t| t.0 == "posts")
            .map(|t| String::from_utf8_lossy(&t.1).to_string())
            .unwrap_or_default();
        for line in posts.lines() {
            let thread = line.split('\t').nth(2).unwrap_or("");
            ensure(
                thread_map.changes.iter().any(|(_, new)| new == thread),
                || format!("post row {line:?} references thread {thread}, not a remapped id"),
            )?;
        }
    }
    let pa = parity(store, &Scope::Pooled(a.clone())).await?;
    ensure(rows_of(&pa) == expected_counts(3, 2), || {
        format!("restoring room b changed room a: {pa:?}")
    })?;
    Ok(Verdict::Passed)
}

/// `restore`: "media columns are rewritten by `remap.media_keys`" — keys with the prefix get the
/// new prefix, others stay as they are, NULLs stay NULL.
pub async fn restore_rewrites_media_keys(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    if let Some(v) = needs_restore(store) {
        return Ok(v);
    }
    if !store.capabilities().dump {
        return Ok(Verdict::NotApplicable(
            "capability `dump` is off: the suite cannot read the rewritten keys back".into(),
        ));
    }
    let room = new_shard(store, config).await?;
    let scope = dedicated(store, &room)?;
    let base = base_of(&room);
    let remap = IdRemap {
        ids: RemapPolicy::Keep,
        media_keys: Some(KeyRewrite {
            from_prefix: "media/a".into(),
            to_prefix: "imported/z".into(),
        }),
    };
    seed(store, &scope, room.as_str(), base, &remap)
        .await
        .context("restore with a media key rewrite")?;
    let (_, sink) = dump_tables(store, &scope).await?;
    let threads = String::from_utf8_lossy(&sink.tables[0].1).to_string();
    let covers: Vec<&str> = threads
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap_or(""))
        .collect();
    ensure(covers == ["imported/z.png", "\\N", "media/b c.png"], || {
        format!("after rewriting media/a -> imported/z the media column holds {covers:?}")
    })?;
    Ok(Verdict::Passed)
}

/// `dump`: "A sink error stops the dump and is returned unchanged."
pub async fn dump_stops_on_a_sink_error(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let room = new_shard(store, config).await?;
    let scope = dedicated(store, &room)?;
    if !store.capabilities().dump {
        return expect_unsupported(
            store
                .dump(&scope, &schema()?, &mut MemorySink::default())
                .await,
            "dump",
            "dump",
        );
    }
    if let Some(v) = needs_restore(store) {
        return Ok(v);
    }
    seed(
        store,
        &scope,
        room.as_str(),
        base_of(scope.room()),
        &IdRemap::default(),
    )
    .await
    .context("restore")?;
    let mut sink = MemorySink {
        fail_on_rows: true,
        ..MemorySink::default()
    };
    let err = expect_kind(
        store.dump(&scope, &schema()?, &mut sink).await,
        Kind::Conflict,
        "dump into a sink that fails",
    )?;
    ensure(
        err.to_string().contains("conformance sink refuses rows"),
        || format!("the sink's error came back changed: {err}"),
    )?;
    Ok(Verdict::Passed)
}

/// `parity`: "One `TableParity` per schema table, in schema order"; "`checksum` is the lowercase
/// hex SHA-256 of the table's rows in COPY text format … exactly the bytes `dump` would write",
/// or `None` without `parity_checksums`.
pub async fn parity_counts_and_checksums_match_the_dump(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let caps = store.capabilities();
    if let Some(v) = needs_restore(store) {
        return Ok(v);
    }
    let room = new_shard(store, config).await?;
    let scope = dedicated(store, &room)?;
    seed(
        store,
        &scope,
        room.as_str(),
        base_of(scope.room()),
        &IdRemap::default(),
    )
    .await
    .context("restore")?;
    let p = parity(store, &scope).await?;
    ensure(rows_of(&p) == expected_counts(3, 2), || {
        format!("parity says {p:?}")
    })?;
    // `row_counts`: "equal to parity's rows", for the dedicated scope and the pooled one.
    for scope in [&scope, &Scope::Pooled(room.clone())] {
        let counts = store
            .row_counts(scope, &schema()?)
            .await
            .context("row_counts")?;
        let from_parity: Vec<(String, u64)> = parity(store, scope)
            .await?
            .tables
            .into_iter()
            .map(|t| (t.table, t.rows))
            .collect();
        let counted: Vec<(String, u64)> = counts.into_iter().map(|c| (c.table, c.rows)).collect();
        ensure(counted == from_parity, || {
            format!("row_counts of {scope} say {counted:?}, parity {from_parity:?}")
        })?;
    }
    let expected = [
        thread_rows(room.as_str(), base_of(&room)).concat(),
        post_rows(room.as_str(), base_of(&room)).concat(),
        String::new(),
    ];
    for (t, rows) in p.tables.iter().zip(expected.iter()) {
        match (&t.checksum, caps.parity_checksums) {
            (Some(sum), true) => {
                let want = hex_sha256(rows.as_bytes());
                ensure(*sum == want, || {
                    format!(
                        "checksum of {} is {sum}, the SHA-256 of its COPY text is {want}",
                        t.table
                    )
                })?;
            }
            (None, false) => {}
            (got, declared) => {
                return Err(Failure::new(format!(
                    "parity_checksums is {declared} but {} has checksum {got:?}",
                    t.table
                )));
            }
        }
    }
    Ok(Verdict::Passed)
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Seeds a pooled room with the fixture rows and gives it an empty dedicated shard.
async fn pooled_room_with_shard(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> Result<Result<RoomId, Verdict>, Failure> {
    if let Some(v) = needs_restore(store) {
        return Ok(Err(v));
    }
    if !config.pooled_tables {
        return Ok(Err(Verdict::NotApplicable(
            "no pooled tables (ShardSuiteConfig::pooled_tables is false)".into(),
        )));
    }
    let room = new_shard(store, config).await?;
    seed(
        store,
        &Scope::Pooled(room.clone()),
        room.as_str(),
        base_of(&room),
        &IdRemap::default(),
    )
    .await
    .context("restore into the pooled scope")?;
    Ok(Ok(room))
}

fn request<'a>(
    store: &dyn ShardStore,
    schema: &'a RoomSchema,
    room: &RoomId,
    pass: CopyPass,
    resume_from: Option<CopyCheckpoint>,
    checkpoints: &'a dyn CheckpointSink,
    progress: &'a dyn roomshard_core::ProgressSink,
) -> CopyRequest<'a> {
    CopyRequest {
        schema,
        source: CopySource {
            scope: Scope::Pooled(room.clone()),
            server: None,
        },
        // A store that cannot locate the shard fails the check at the copy (no shard location).
        target: Scope::Dedicated(room.clone(), located(store, room).unwrap_or_default()),
        pass,
        resume_from,
        checkpoints,
        progress,
    }
}

async fn same_parity(store: &dyn ShardStore, room: &RoomId, doing: &str) -> Result<(), Failure> {
    let source = parity(store, &Scope::Pooled(room.clone())).await?;
    let target = parity(store, &dedicated(store, room)?).await?;
    let mismatched = source.mismatched_tables(&target);
    ensure(mismatched.is_empty(), || {
        format!("after {doing}, tables {mismatched:?} differ: source {source:?}, target {target:?}")
    })
}

/// Changes a pooled room's rows (through `drop_room` and `restore`, the only writes the trait
/// offers): thread 2 edited, thread 10 gone, thread 11 new, posts unchanged.
async fn change_the_source(
    store: &dyn ShardStore,
    schema: &RoomSchema,
    room: &RoomId,
) -> Result<(), Failure> {
    let pooled = Scope::Pooled(room.clone());
    store
        .drop_room(&pooled, schema)
        .await
        .context("drop_room of the pooled rows")?;
    let r = room.as_str();
    let mut threads = thread_rows(r, base_of(room));
    threads[1] = threads[1].replace("\tsecond\t", "\tsecond, edited\t");
    threads[2] = format!(
        "{r}\t{}\tnew\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n",
        base_of(room) + 11
    );
    let mut source = MemorySource::new(vec![
        ("threads", threads),
        ("posts", post_rows(r, base_of(room))),
    ]);
    store
        .restore(&pooled, schema, &mut source, &IdRemap::default())
        .await
        .context("restore of the changed source")?;
    Ok(())
}

/// `copy_room` Bulk: "after each committed batch it awaits `request.checkpoints.save(..)` … and
/// emits `ProgressEvent::Rows`"; "Writes are upserts by primary key, so re-running a pass …
/// converges"; "The source is only read".
pub async fn bulk_copy_is_checkpointed_and_converges(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let room = match pooled_room_with_shard(store, config).await? {
        Ok(room) => room,
        Err(v) => return Ok(v),
    };
    let schema = schema()?;
    let checkpoints = RecordingCheckpoints::default();
    let events = Mutex::new(Vec::new());
    let progress = |e: ProgressEvent| {
        if let Ok(mut v) = events.lock() {
            v.push(e);
        }
    };
    let outcome = store
        .copy_room(request(
            store,
            &schema,
            &room,
            CopyPass::Bulk,
            None,
            &checkpoints,
            &progress,
        ))
        .await
        .context("bulk copy_room")?;
    ensure(outcome.rows_written >= 5, || {
        format!("a bulk copy of 5 rows reported {outcome:?}")
    })?;
    let counts: Vec<(String, u64)> = outcome
        .tables
        .iter()
        .map(|t| (t.table.clone(), t.rows))
        .collect();
    ensure(counts == expected_counts(3, 2), || {
        format!("copy_room reported tables {counts:?}")
    })?;
    ensure(!checkpoints.all().is_empty(), || {
        "a bulk copy saved no checkpoint".into()
    })?;
    ensure(
        checkpoints.all().iter().all(|c| c.pass == CopyPass::Bulk),
        || "a bulk copy saved a checkpoint of another pass".into(),
    )?;
    let saw_rows = events
        .lock()
        .map(|v| v.iter().any(|e| matches!(e, ProgressEvent::Rows { .. })))
        .unwrap_or(false);
    ensure(saw_rows, || {
        "a bulk copy emitted no ProgressEvent::Rows".into()
    })?;
    same_parity(store, &room, "a bulk copy").await?;
    store
        .copy_room(request(
            store,
            &schema,
            &room,
            CopyPass::Bulk,
            None,
            &NoCheckpoints,
            &NoProgress,
        ))
        .await
        .context("bulk copy_room again")?;
    same_parity(store, &room, "a second bulk copy").await?;
    let source = parity(store, &Scope::Pooled(room)).await?;
    ensure(rows_of(&source) == expected_counts(3, 2), || {
        format!("the copy changed its source: {source:?}")
    })?;
    Ok(Verdict::Passed)
}

/// `copy_room`: "Calls `CopyRequest::validate` first (same room, distinct places)"; "Returns
/// `Error::NotFound` if the target shard does not exist".
pub async fn copy_refuses_bad_requests(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let schema = schema()?;
    let room = config.room()?;
    let other = config.room()?;
    let mut onto_itself = request(
        store,
        &schema,
        &room,
        CopyPass::Bulk,
        None,
        &NoCheckpoints,
        &NoProgress,
    );
    onto_itself.target = Scope::Pooled(room.clone());
    expect_kind(
        store.copy_room(onto_itself).await,
        Kind::Invalid,
        "copy_room onto its own source",
    )?;
    let mut renaming = request(
        store,
        &schema,
        &room,
        CopyPass::Bulk,
        None,
        &NoCheckpoints,
        &NoProgress,
    );
    renaming.target = dedicated(store, &other)?;
    expect_kind(
        store.copy_room(renaming).await,
        Kind::Invalid,
        "copy_room into another room",
    )?;
    if config.pooled_tables {
        expect_kind(
            store
                .copy_room(request(
                    store,
                    &schema,
                    &room,
                    CopyPass::Bulk,
                    None,
                    &NoCheckpoints,
                    &NoProgress,
                ))
                .await,
            Kind::NotFound,
            "copy_room into a dedicated shard that does not exist",
        )?;
    }
    Ok(Verdict::Passed)
}

/// `catch_up`: "makes the target equal the source: inserts missing rows, updates changed rows,
/// deletes rows gone from the source".
pub async fn catch_up_makes_the_target_equal(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let schema = schema()?;
    if !store.capabilities().catch_up {
        let room = config.room()?;
        return expect_unsupported(
            store
                .copy_room(request(
                    store,
                    &schema,
                    &room,
                    CopyPass::CatchUp,
                    None,
                    &NoCheckpoints,
                    &NoProgress,
                ))
                .await,
            "copy_room",
            "catch_up",
        );
    }
    let room = match pooled_room_with_shard(store, config).await? {
        Ok(room) => room,
        Err(v) => return Ok(v),
    };
    store
        .copy_room(request(
            store,
            &schema,
            &room,
            CopyPass::Bulk,
            None,
            &NoCheckpoints,
            &NoProgress,
        ))
        .await
        .context("bulk copy_room")?;
    // Change the source: thread 2 edited, thread 10 gone, thread 11 new, posts unchanged.
    change_the_source(store, &schema, &room).await?;
    let outcome = store
        .copy_room(request(
            store,
            &schema,
            &room,
            CopyPass::CatchUp,
            None,
            &NoCheckpoints,
            &NoProgress,
        ))
        .await
        .context("catch-up copy_room")?;
    ensure(
        outcome.rows_written >= 2 && outcome.rows_deleted >= 1,
        || format!("one row changed, one added and one deleted, catch-up reported {outcome:?}"),
    )?;
    same_parity(store, &room, "catch-up").await?;
    if store.capabilities().dump {
        let (_, sink) = dump_tables(store, &dedicated(store, &room)?).await?;
        let threads = String::from_utf8_lossy(&sink.tables[0].1).to_string();
        ensure(
            threads.contains("second, edited")
                && !threads.contains(&format!("\t{}\t", base_of(&room) + 10)),
            || format!("after catch-up the target's threads are:\n{threads}"),
        )?;
    }
    Ok(Verdict::Passed)
}

/// `track_changes` and `CopyPass::Changes`: "a source that is not tracked is Error::Conflict";
/// "every committed insert, update and delete of the room's rows … by the host or by roomshard
/// — is recorded"; "the applied log entries are removed …, so … a repeated pass does nothing
/// twice"; on/off are idempotent and report the previous state.
pub async fn a_changes_pass_applies_what_the_log_recorded(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let schema = schema()?;
    if !store.capabilities().change_log {
        let room = config.room()?;
        return expect_unsupported(
            store.track_changes(&room, &schema, true).await,
            "track_changes",
            "change_log",
        );
    }
    let room = match pooled_room_with_shard(store, config).await? {
        Ok(room) => room,
        Err(v) => return Ok(v),
    };
    async fn changes(
        store: &dyn ShardStore,
        schema: &RoomSchema,
        room: &RoomId,
    ) -> roomshard_core::Result<roomshard_core::CopyOutcome> {
        one_pass(store, schema, room, CopyPass::Changes).await
    }
    let untracked = changes(store, &schema, &room).await;
    ensure(matches!(untracked, Err(Error::Conflict { .. })), || {
        format!("a changes pass of an untracked room must be Conflict, got {untracked:?}")
    })?;
    let was = store
        .track_changes(&room, &schema, true)
        .await
        .context("track_changes on")?;
    ensure(!was, || {
        "track_changes(on) of a new room said it was on".into()
    })?;
    let again = store
        .track_changes(&room, &schema, true)
        .await
        .context("track_changes on, again")?;
    ensure(again, || {
        "track_changes(on) twice: the second must say it was on".into()
    })?;
    store
        .copy_room(request(
            store,
            &schema,
            &room,
            CopyPass::Bulk,
            None,
            &NoCheckpoints,
            &NoProgress,
        ))
        .await
        .context("bulk copy_room")?;
    // The source changes through roomshard's own operations, which are recorded too.
    change_the_source(store, &schema, &room).await?;
    let outcome = changes(store, &schema, &room)
        .await
        .context("changes pass")?;
    ensure(
        outcome.rows_written >= 2 && outcome.rows_deleted >= 1,
        || {
            format!(
                "one row changed, one added and one deleted; the changes pass reported {outcome:?}"
            )
        },
    )?;
    same_parity(store, &room, "a changes pass").await?;
    let repeat = changes(store, &schema, &room)
        .await
        .context("second changes pass")?;
    ensure(repeat.rows_written + repeat.rows_deleted == 0, || {
        format!("a repeated changes pass with no new writes must do nothing, did {repeat:?}")
    })?;
    let off = store
        .track_changes(&room, &schema, false)
        .await
        .context("track_changes off")?;
    let off_again = store
        .track_changes(&room, &schema, false)
        .await
        .context("track_changes off, again")?;
    ensure(off && !off_again, || {
        format!("track_changes(off) twice must say on, then off; said {off}, {off_again}")
    })?;
    let after = changes(store, &schema, &room).await;
    ensure(matches!(after, Err(Error::Conflict { .. })), || {
        format!("a changes pass after tracking stopped must be Conflict, got {after:?}")
    })?;
    Ok(Verdict::Passed)
}

/// One pass of pooled `room` into its shard, without checkpoints or progress.
async fn one_pass(
    store: &dyn ShardStore,
    schema: &RoomSchema,
    room: &RoomId,
    pass: CopyPass,
) -> roomshard_core::Result<roomshard_core::CopyOutcome> {
    store
        .copy_room(request(
            store,
            schema,
            room,
            pass,
            None,
            &NoCheckpoints,
            &NoProgress,
        ))
        .await
}

/// `chunk_parity`, `row_digests`, `reset_applied` and `applied_in`: a split chains its ranges
/// (the first from the start, each after the previous, the last to the end) with
/// `rows_per_chunk` rows each and every row counted once, and a resplit of a range chains the
/// same way inside it; the same ranges on a faithful copy
/// match; a row only one copy has mismatches exactly its range and is named by `row_digests`;
/// with `change_log`, `applied_in` returns exactly the ranges holding keys a `Changes` pass
/// applied, and nothing after `reset_applied`; a range of a table not in the schema is
/// `Invalid`.
pub async fn chunk_parity_ranges_compare_name_rows_and_follow_applied_keys(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let schema = schema()?;
    let caps = store.capabilities();
    if !caps.chunk_parity {
        let room = config.room()?;
        return expect_unsupported(
            store
                .chunk_parity(
                    &Scope::Pooled(room),
                    &schema,
                    &ChunkPlan::Split { rows_per_chunk: 1 },
                )
                .await,
            "chunk_parity",
            "chunk_parity",
        );
    }
    let room = match pooled_room_with_shard(store, config).await? {
        Ok(room) => room,
        Err(v) => return Ok(v),
    };
    let pooled = Scope::Pooled(room.clone());
    let target = dedicated(store, &room)?;
    if caps.change_log {
        store
            .track_changes(&room, &schema, true)
            .await
            .context("track_changes on")?;
    }
    one_pass(store, &schema, &room, CopyPass::Bulk)
        .await
        .context("bulk copy_room")?;
    let split = store
        .chunk_parity(&pooled, &schema, &ChunkPlan::Split { rows_per_chunk: 1 })
        .await
        .context("chunk_parity split")?;
    // threads: 3 rows -> 3 ranges of 1 and an empty last one; posts: 2 + 1; tags: 1 empty.
    let shape: Vec<(String, u64)> = split
        .iter()
        .map(|c| (c.range.table.clone(), c.rows))
        .collect();
    let want: Vec<(String, u64)> = [
        ("threads", 1),
        ("threads", 1),
        ("threads", 1),
        ("threads", 0),
        ("posts", 1),
        ("posts", 1),
        ("posts", 0),
        ("tags", 0),
    ]
    .iter()
    .map(|(t, n)| ((*t).to_string(), *n))
    .collect();
    ensure(shape == want, || {
        format!("a split of 1 row per chunk must give {want:?}, gave {shape:?}")
    })?;
    for pair in split.windows(2) {
        let (a, b) = (&pair[0].range, &pair[1].range);
        let chained = if a.table == b.table {
            b.after.is_some() && b.after == a.up_to
        } else {
            a.up_to.is_none() && b.after.is_none()
        };
        ensure(chained, || {
            format!(
                "ranges must chain (each after the previous, the last to the end): {a} then {b}"
            )
        })?;
    }
    let b = base_of(&room);
    ensure(
        split[1].range.after == Some(vec![(b + 1).to_string()])
            && split[2].range.up_to == Some(vec![(b + 10).to_string()]),
        || {
            format!(
                "range bounds are the keys in COPY text form; got {} and {}",
                split[1].range, split[2].range
            )
        },
    )?;
    let ranges: Vec<KeyRange> = split.iter().map(|c| c.range.clone()).collect();
    // Cutting the rest of threads again gives the split's own ranges there.
    let resplit = store
        .chunk_parity(
            &pooled,
            &schema,
            &ChunkPlan::Resplit {
                range: KeyRange {
                    table: "threads".into(),
                    after: split[0].range.up_to.clone(),
                    up_to: None,
                },
                rows_per_chunk: 1,
            },
        )
        .await
        .context("chunk_parity resplit")?;
    let again: Vec<&KeyRange> = resplit.iter().map(|c| &c.range).collect();
    let want: Vec<&KeyRange> = ranges[1..4].iter().collect();
    ensure(again == want, || {
        format!("a resplit of threads after its first key must give {want:?}, gave {again:?}")
    })?;
    let plan = ChunkPlan::Ranges(ranges.clone());
    let on_copy = store
        .chunk_parity(&target, &schema, &plan)
        .await
        .context("chunk_parity of the copy over the source's ranges")?;
    let differing = |a: &[ChunkParity], b: &[ChunkParity]| -> Vec<usize> {
        (0..a.len().max(b.len()))
            .filter(|&i| match (a.get(i), b.get(i)) {
                (Some(x), Some(y)) => !x.matches(y),
                _ => true,
            })
            .collect()
    };
    let d = differing(&split, &on_copy);
    ensure(d.is_empty(), || {
        format!("a faithful copy must match on every range; ranges {d:?} differ: {on_copy:?}")
    })?;
    let bogus = store
        .chunk_parity(
            &target,
            &schema,
            &ChunkPlan::Ranges(vec![KeyRange {
                table: "no_such_table".into(),
                after: None,
                up_to: None,
            }]),
        )
        .await;
    expect_kind(bogus, Kind::Invalid, "a range of a table not in the schema")?;

    if caps.change_log {
        store.reset_applied(&room).await.context("reset_applied")?;
        // Every row of the room is deleted and written again (thread 2 edited, 10 gone, 11 new).
        change_the_source(store, &schema, &room).await?;
        one_pass(store, &schema, &room, CopyPass::Changes)
            .await
            .context("changes pass")?;
        let applied = store
            .applied_in(&room, &schema, &ranges)
            .await
            .context("applied_in")?;
        // threads b+1, b+2, b+10, b+11 fall in ranges 0..=3; posts 1 and 2 in 4 and 5; the
        // empty last range of posts and tags hold no applied key.
        ensure(applied == vec![0, 1, 2, 3, 4, 5], || {
            format!("applied_in must name exactly the ranges holding applied keys: {applied:?}")
        })?;
        store
            .reset_applied(&room)
            .await
            .context("reset_applied, again")?;
        let none = store
            .applied_in(&room, &schema, &ranges)
            .await
            .context("applied_in after reset")?;
        ensure(none.is_empty(), || {
            format!("after reset_applied, applied_in must return nothing, got {none:?}")
        })?;
    } else {
        change_the_source(store, &schema, &room).await?;
        one_pass(store, &schema, &room, CopyPass::CatchUp)
            .await
            .context("catch-up pass")?;
    }
    // One row only the source has: exactly its range differs, and row_digests names it.
    let extra = b + 12;
    let mut source = MemorySource::new(vec![(
        "threads",
        vec![format!(
            "{r}\t{extra}\textra\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n",
            r = room.as_str()
        )],
    )]);
    store
        .restore(&pooled, &schema, &mut source, &IdRemap::default())
        .await
        .context("restore of one more pooled row")?;
    let (src, dst) = (
        store
            .chunk_parity(&pooled, &schema, &plan)
            .await
            .context("chunk_parity of the source")?,
        store
            .chunk_parity(&target, &schema, &plan)
            .await
            .context("chunk_parity of the copy")?,
    );
    let d = differing(&src, &dst);
    ensure(d == vec![3], || {
        format!(
            "a row only the source has (threads {extra}) must mismatch exactly the last threads \
             range (3); ranges {d:?} differ"
        )
    })?;
    let key = vec![extra.to_string()];
    let (a, b2) = (
        store
            .row_digests(&pooled, &schema, &ranges[3], 100)
            .await
            .context("row_digests of the source")?,
        store
            .row_digests(&target, &schema, &ranges[3], 100)
            .await
            .context("row_digests of the copy")?,
    );
    let only: Vec<&Vec<String>> = a
        .iter()
        .filter(|r| !b2.iter().any(|o| o.key == r.key))
        .map(|r| &r.key)
        .collect();
    ensure(only == vec![&key], || {
        format!(
            "row_digests must name the one row the copy lacks ({key:?}); source {a:?}, copy {b2:?}"
        )
    })?;
    ensure(
        a.iter()
            .filter(|r| r.key != key)
            .all(|r| b2.iter().any(|o| o.key == r.key && o.digest == r.digest)),
        || format!("equal rows must have equal digests: source {a:?}, copy {b2:?}"),
    )?;
    if caps.change_log {
        store
            .track_changes(&room, &schema, false)
            .await
            .context("track_changes off")?;
    }
    Ok(Verdict::Passed)
}

/// `fence_writes`: "One fence per room at a time: a second fence_writes waits for the first (up
/// to wait)" and gives up retryable; "roomshard's own copies, restores and drops are not
/// fenced"; "lift reopens writes; dropping the fence … reopens them too"; other rooms are never
/// affected; `retire_pooled` is idempotent both ways.
pub async fn a_write_fence_is_held_alone_and_dies_with_its_holder(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let schema = schema()?;
    let short = std::time::Duration::from_millis(300);
    let long = std::time::Duration::from_secs(10);
    if !store.capabilities().write_fence {
        let room = config.room()?;
        return expect_unsupported(
            store.fence_writes(&room, &schema, short).await.map(|_| ()),
            "fence_writes",
            "write_fence",
        );
    }
    let room = match pooled_room_with_shard(store, config).await? {
        Ok(room) => room,
        Err(v) => return Ok(v),
    };
    let fence = store
        .fence_writes(&room, &schema, long)
        .await
        .context("fence_writes")?;
    match store.fence_writes(&room, &schema, short).await {
        Err(e) if e.is_retryable() => {}
        Err(e) => {
            return Err(Failure::new(format!(
                "a second fence while the first is held must give up retryable after its wait, got {e:?}"
            )));
        }
        Ok(_) => return Err(Failure::new("two fences on one room were held at once")),
    }
    let other = config.room()?;
    store
        .fence_writes(&other, &schema, short)
        .await
        .context("a fence on another room while the first is held")?
        .lift()
        .await
        .context("lifting the other room's fence")?;
    // roomshard's own work goes on under the fence.
    store
        .copy_room(request(
            store,
            &schema,
            &room,
            CopyPass::Bulk,
            None,
            &NoCheckpoints,
            &NoProgress,
        ))
        .await
        .context("bulk copy_room while fenced")?;
    same_parity(store, &room, "a bulk copy under the fence").await?;
    fence.lift().await.context("lift")?;
    let next = store
        .fence_writes(&room, &schema, short)
        .await
        .context("fence_writes right after lift")?;
    drop(next);
    // Dropped unlifted: the fence goes with its holder (allow the backend a moment).
    store
        .fence_writes(&room, &schema, long)
        .await
        .context("fence_writes after the previous fence was dropped")?
        .lift()
        .await
        .context("lift")?;
    for retired in [true, true, false, false] {
        store
            .retire_pooled(&room, &schema, retired)
            .await
            .context(if retired {
                "retire_pooled(true)"
            } else {
                "retire_pooled(false)"
            })?;
    }
    store
        .drop_room(&Scope::Pooled(room.clone()), &schema)
        .await
        .context("drop_room of the pooled rows")?;
    Ok(Verdict::Passed)
}

/// "a failed save fails the copy"; "With `resume_from`, continues after the checkpoint; a store
/// without `copy_resumable` ignores it and starts over" — either way the result converges.
pub async fn copy_resumes_after_a_failed_checkpoint(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let room = match pooled_room_with_shard(store, config).await? {
        Ok(room) => room,
        Err(v) => return Ok(v),
    };
    let schema = schema()?;
    let failing = RecordingCheckpoints {
        fail_first: true,
        ..RecordingCheckpoints::default()
    };
    let first = store
        .copy_room(request(
            store,
            &schema,
            &room,
            CopyPass::Bulk,
            None,
            &failing,
            &NoProgress,
        ))
        .await;
    ensure(first.is_err(), || {
        format!("the checkpoint save failed but copy_room returned {first:?}")
    })?;
    let resume_from = failing.all().into_iter().next();
    ensure(resume_from.is_some(), || {
        "no checkpoint was offered before failing".into()
    })?;
    store
        .copy_room(request(
            store,
            &schema,
            &room,
            CopyPass::Bulk,
            resume_from,
            &NoCheckpoints,
            &NoProgress,
        ))
        .await
        .context("resumed copy_room")?;
    same_parity(store, &room, "a resumed bulk copy").await?;
    Ok(Verdict::Passed)
}

/// `cross_server_copy`: a source on another server; off, `copy_room` returns `Unsupported`.
pub async fn cross_server_copy(store: &dyn ShardStore, config: &ShardSuiteConfig) -> CheckResult {
    if store.capabilities().cross_server_copy {
        return Ok(Verdict::NotApplicable(
            "checking a cross-server copy needs a second server, which the suite is not given"
                .into(),
        ));
    }
    let schema = schema()?;
    let room = config.room()?;
    let mut req = request(
        store,
        &schema,
        &room,
        CopyPass::Bulk,
        None,
        &NoCheckpoints,
        &NoProgress,
    );
    req.source.server = Some(ServerUrl::new("conformance://elsewhere"));
    expect_unsupported(store.copy_room(req).await, "copy_room", "cross_server_copy")
}

/// `drop_room`: "Idempotent: a missing shard or a room with no pooled rows is `Ok`"; "Pooled
/// deletes … never touch another room".
pub async fn drop_room_is_idempotent_and_room_scoped(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let schema = schema()?;
    let room = new_shard(store, config).await?;
    let shard_scope = dedicated(store, &room)?;
    store
        .drop_room(&shard_scope, &schema)
        .await
        .context("drop_room of a shard")?;
    store
        .drop_room(&shard_scope, &schema)
        .await
        .context("drop_room of a dropped shard")?;
    store
        .drop_room(&dedicated(store, &config.room()?)?, &schema)
        .await
        .context("drop_room of a shard that never existed")?;
    if store.capabilities().size_bytes {
        expect_kind(
            store.size_bytes(&shard_scope, &schema).await,
            Kind::NotFound,
            "size_bytes of a dropped shard",
        )?;
    }
    if !config.pooled_tables || !store.capabilities().restore {
        return Ok(Verdict::Passed);
    }
    let (a, b) = (config.room()?, config.room()?);
    for r in [&a, &b] {
        seed(
            store,
            &Scope::Pooled(r.clone()),
            r.as_str(),
            base_of(r),
            &IdRemap {
                ids: RemapPolicy::Keep,
                media_keys: None,
            },
        )
        .await
        .context(&format!("restore into pooled room {r}"))?;
    }
    store
        .drop_room(&Scope::Pooled(a.clone()), &schema)
        .await
        .context("drop_room of pooled rows")?;
    store
        .drop_room(&Scope::Pooled(a.clone()), &schema)
        .await
        .context("drop_room of pooled rows again")?;
    let pa = parity(store, &Scope::Pooled(a)).await?;
    ensure(rows_of(&pa) == expected_counts(0, 0), || {
        format!("dropped pooled room still has {pa:?}")
    })?;
    let pb = parity(store, &Scope::Pooled(b)).await?;
    ensure(rows_of(&pb) == expected_counts(3, 2), || {
        format!("dropping room a's pooled rows changed room b: {pb:?}")
    })?;
    Ok(Verdict::Passed)
}

/// `size_bytes`: storage of a shard; "A missing dedicated shard is `Error::NotFound`".
pub async fn size_bytes_of_a_shard(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let schema = schema()?;
    let room = new_shard(store, config).await?;
    let scope = dedicated(store, &room)?;
    if !store.capabilities().size_bytes {
        return expect_unsupported(
            store.size_bytes(&scope, &schema).await,
            "size_bytes",
            "size_bytes",
        );
    }
    let size = store
        .size_bytes(&scope, &schema)
        .await
        .context("size_bytes")?;
    ensure(size > 0, || "a shard with tables uses 0 bytes".into())?;
    expect_kind(
        store
            .size_bytes(&dedicated(store, &config.room()?)?, &schema)
            .await,
        Kind::NotFound,
        "size_bytes of a missing shard",
    )?;
    Ok(Verdict::Passed)
}

/// `route`: a handle whose `qualify` names the room's table.
pub async fn route_names_tables(store: &dyn ShardStore, config: &ShardSuiteConfig) -> CheckResult {
    let room = new_shard(store, config).await?;
    let scope = dedicated(store, &room)?;
    if !store.capabilities().route {
        return expect_unsupported(store.route(&scope).await, "route", "route");
    }
    let handle = store.route(&scope).await.context("route")?;
    let table = Identifier::new("threads").map_err(|e| Failure::new(e.to_string()))?;
    let name = handle.qualify(&table);
    ensure(name.ends_with("\"threads\""), || {
        format!("qualify gave {name}")
    })?;
    let again = store.route(&scope).await.context("route again")?;
    ensure(again.pool == handle.pool, || {
        "route of one room gave two pools".into()
    })?;
    Ok(Verdict::Passed)
}

/// `transactional_outbox`: restored rows write outbox entries, read in sequence order; trimming
/// removes them (idempotently).
pub async fn outbox_reads_and_trims(
    store: &dyn ShardStore,
    config: &ShardSuiteConfig,
) -> CheckResult {
    let room = new_shard(store, config).await?;
    if !store.capabilities().transactional_outbox {
        expect_unsupported(
            store.read_outbox(&room, 0, 10).await,
            "read_outbox",
            "transactional_outbox",
        )?;
        return expect_unsupported(
            store.trim_outbox(&room, 0).await,
            "trim_outbox",
            "transactional_outbox",
        );
    }
    if let Some(v) = needs_restore(store) {
        return Ok(v);
    }
    seed(
        store,
        &dedicated(store, &room)?,
        room.as_str(),
        base_of(&room),
        &IdRemap::default(),
    )
    .await
    .context("restore")?;
    let entries = store
        .read_outbox(&room, 0, 100)
        .await
        .context("read_outbox")?;
    ensure(entries.len() >= 5, || {
        format!("5 rows written, {} outbox entries", entries.len())
    })?;
    ensure(entries.windows(2).all(|w| w[0].seq < w[1].seq), || {
        "outbox entries out of order".into()
    })?;
    let first = entries[0].seq;
    store
        .trim_outbox(&room, first)
        .await
        .context("trim_outbox")?;
    store
        .trim_outbox(&room, first)
        .await
        .context("trim_outbox again")?;
    let rest = store
        .read_outbox(&room, 0, 100)
        .await
        .context("read_outbox after trim")?;
    ensure(
        rest.len() == entries.len() - 1 && rest.iter().all(|e| e.seq > first),
        || format!("after trimming through {first}, the outbox holds {rest:?}"),
    )?;
    Ok(Verdict::Passed)
}
