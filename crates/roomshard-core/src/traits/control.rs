//! [`ControlPlane`]: roomshard's own records in the host's global database.

use crate::error::{Error, Result};
use crate::ids::RoomId;
use crate::placement::Placement;
use crate::traits::shard::{CopyCheckpoint, IdMap};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// roomshard's bookkeeping, kept in tables of the host's global database (SQLite for the embedded
/// default, PostgreSQL later) and created by migrations the provider ships:
///
/// - **placements** — where each room lives ([`Placement`]), compare-and-swap on `version`;
/// - **copy jobs** — a running decentralise/recentralise's phase and checkpoint ([`CopyJob`]), so
///   a job killed at any point resumes instead of restarting;
/// - **imports** — each import's journal and its old→new id maps ([`ImportRecord`]), so an import
///   killed halfway is rolled back on the next start and a finished one can be traced;
/// - **audit log** — append-only, hash-chained ([`AuditRecord`]); [`verify_audit`] detects an
///   edited, inserted, reordered or deleted row (except a cut of the newest rows, which only an
///   anchor kept elsewhere — a receipt, say — can reveal);
/// - **receipts** — every Sovereignty Receipt issued ([`ReceiptRecord`]).
///
/// Flows talk only to this trait, so the same flow code runs on every host database.
///
/// # Behaviour shared by all methods
/// - [`migrate`](Self::migrate) runs before anything else; it is idempotent and forward-only.
/// - Writes are durable when the future resolves (committed, fsync'd as the backend does).
/// - Table names start with `roomshard_`, so they never collide with the host's.
///
/// [`verify_audit`]: ControlPlane::verify_audit
#[async_trait]
pub trait ControlPlane: Send + Sync {
    /// A short name for the provider (`sqlite`, `postgres`).
    fn name(&self) -> &str;

    /// Creates or upgrades roomshard's tables. Idempotent.
    async fn migrate(&self) -> Result<()>;

    /// A room's placement, or `None` for a room roomshard has never seen.
    async fn placement(&self, room: &RoomId) -> Result<Option<Placement>>;

    /// Up to `limit` placements whose room id sorts after `after` (all from the start when
    /// `None`), ordered by room id: how a host with 100k rooms lists them. An empty page is the
    /// end.
    async fn placements_page(&self, after: Option<&RoomId>, limit: u32) -> Result<Vec<Placement>>;

    /// Every placement, ordered by room id (pages through
    /// [`placements_page`](Self::placements_page)).
    async fn placements(&self) -> Result<Vec<Placement>> {
        let mut all: Vec<Placement> = Vec::new();
        loop {
            let after = all.last().map(|p| p.room.clone());
            let page = self.placements_page(after.as_ref(), PAGE).await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// Applies `change` to a room's placement and appends `audit` to the audit log **in one
    /// transaction**: both are stored or neither is, so the log never misses a placement change
    /// and never records one that did not happen. Returns the appended record (as
    /// [`append_audit`](Self::append_audit) does).
    ///
    /// # Behaviour
    /// - [`PlacementChange::Insert`]: [`Error::AlreadyExists`] if the room has a placement.
    /// - [`PlacementChange::Update`]: compare-and-swap: [`Error::Conflict`] if the stored version
    ///   is no longer `expected_version`, [`Error::NotFound`] if the room has none, and
    ///   [`Error::Invalid`] if `next.version` is not greater than `expected_version` (a write
    ///   that kept the version would let a second writer holding it overwrite this one).
    /// - [`PlacementChange::Delete`]: [`Error::Conflict`] on a version mismatch; a missing
    ///   placement is `Ok` (idempotent) and the entry is still appended.
    /// - On any error, nothing was written: no placement change and no audit entry.
    async fn change_placement(
        &self,
        change: PlacementChange<'_>,
        audit: &AuditEntry,
    ) -> Result<AuditRecord>;

    /// Stores a job's state, replacing the previous state of the same `(room, kind)`.
    async fn save_job(&self, job: &CopyJob) -> Result<()>;

    /// A job's last saved state.
    async fn job(&self, room: &RoomId, kind: JobKind) -> Result<Option<CopyJob>>;

    /// Every saved job, ordered by room and kind.
    async fn jobs(&self) -> Result<Vec<CopyJob>>;

    /// Forgets a finished or abandoned job. Idempotent.
    async fn delete_job(&self, room: &RoomId, kind: JobKind) -> Result<()>;

    /// Opens an import's journal entry (state [`ImportState::Staging`]) **before** anything is
    /// written, so a crash leaves a record that [`imports`](Self::imports) finds and recovery
    /// rolls back.
    ///
    /// # Behaviour
    /// - [`Error::AlreadyExists`] if the id is taken.
    /// - Atomically with the insert, so two concurrent imports cannot both pass: unless
    ///   `allow_duplicate`, [`Error::Conflict`] when another import of the same
    ///   `manifest_sha256` is staging or done; always [`Error::Conflict`] when another staging
    ///   import targets the same `new_room`. The message names the other import.
    async fn begin_import(&self, import: &ImportRecord, allow_duplicate: bool) -> Result<()>;

    /// Claims import `id` for this process until the returned [`ImportHold`] is dropped (or the
    /// process dies): what lets recovery tell an import a crash left behind from one another
    /// live process is running. `None` when another live holder has it.
    ///
    /// # Behaviour
    /// - The claim outlives nothing: a process killed with `kill -9` releases it (an OS file
    ///   lock for SQLite; a session advisory lock for PostgreSQL).
    /// - Within one process a second claim of a held id is `None` too.
    async fn hold_import(&self, id: &str) -> Result<Option<ImportHold>>;

    /// Marks an import done and stores its id maps, in one transaction.
    async fn finish_import(&self, id: &str, id_maps: &[IdMap]) -> Result<()>;

    /// Up to `limit` imports after `after` (a `(started_at_unix_ms, id)` cursor: the last
    /// record of the previous page), oldest first — ordered by start time, then id —
    /// optionally only those in `state`. An empty page is the end.
    async fn imports_page(
        &self,
        state: Option<ImportState>,
        after: Option<(u64, &str)>,
        limit: u32,
    ) -> Result<Vec<ImportRecord>>;

    /// Imports, oldest first, optionally only those in `state` (pages through
    /// [`imports_page`](Self::imports_page)).
    async fn imports(&self, state: Option<ImportState>) -> Result<Vec<ImportRecord>> {
        let mut all: Vec<ImportRecord> = Vec::new();
        loop {
            let after = all.last().map(|r| (r.started_at_unix_ms, r.id.clone()));
            let page = self
                .imports_page(state, after.as_ref().map(|(t, id)| (*t, id.as_str())), PAGE)
                .await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// The id maps of a finished import (empty when no id changed).
    async fn import_id_maps(&self, id: &str) -> Result<Vec<IdMap>>;

    /// Deletes an import's journal entry and its maps (after rolling a staging import back).
    /// Idempotent.
    async fn delete_import(&self, id: &str) -> Result<()>;

    /// Appends one entry to the audit log, chaining it to the current last row:
    /// `prev_hash` is that row's `hash` ([`GENESIS_HASH`] for the first), `seq` is its `seq + 1`,
    /// `hash` is [`AuditRecord::compute_hash`]. Serialised: concurrent appends never fork the
    /// chain. Returns the stored record.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord>;

    /// Up to `limit` audit records with `seq` greater than `after_seq`, in `seq` order,
    /// optionally only one room's. An empty page is the end.
    async fn audit_page(
        &self,
        room: Option<&RoomId>,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>>;

    /// Audit records in `seq` order, optionally only one room's (pages through
    /// [`audit_page`](Self::audit_page)).
    async fn audit_log(&self, room: Option<&RoomId>) -> Result<Vec<AuditRecord>> {
        let mut all: Vec<AuditRecord> = Vec::new();
        loop {
            let after = all.last().map_or(0, |r| r.seq);
            let page = self.audit_page(room, after, PAGE).await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// The newest audit record (`None` for an empty log): the anchor a receipt carries
    /// ([`AuditAnchor`]), read without loading the log.
    async fn audit_head(&self) -> Result<Option<AuditRecord>>;

    /// Checks the whole audit chain (see [`verify_audit_chain`]), a page at a time, so memory
    /// stays bounded however long the log is.
    async fn verify_audit(&self) -> Result<AuditVerification> {
        let mut check = AuditChainCheck::default();
        let mut after = 0;
        loop {
            let page = self.audit_page(None, after, PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(check.finish());
            };
            after = last.seq;
            check.feed(&page);
        }
    }

    /// Records an issued receipt. Recording the same receipt twice (a retry) is `Ok`; a
    /// different envelope for the same room, version and reason is [`Error::AlreadyExists`].
    async fn record_receipt(&self, receipt: &ReceiptRecord) -> Result<()>;

    /// A room's receipts, oldest first.
    async fn receipts(&self, room: &RoomId) -> Result<Vec<ReceiptRecord>>;
}

/// A change to one room's placement, applied together with its audit entry by
/// [`ControlPlane::change_placement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementChange<'a> {
    /// Records a new placement.
    Insert(&'a Placement),
    /// Replaces the placement if its stored version is still `expected_version`.
    Update {
        /// The new placement (its `version` greater than `expected_version`).
        next: &'a Placement,
        /// The version the caller read.
        expected_version: u64,
    },
    /// Deletes the placement if its version is `expected_version`.
    Delete {
        /// The room.
        room: &'a RoomId,
        /// The version the caller read.
        expected_version: u64,
    },
}

impl PlacementChange<'_> {
    /// The room the change is about.
    pub fn room(&self) -> &RoomId {
        match self {
            PlacementChange::Insert(p) => &p.room,
            PlacementChange::Update { next, .. } => &next.room,
            PlacementChange::Delete { room, .. } => room,
        }
    }
}

/// A claim on a running import ([`ControlPlane::hold_import`]), released on drop.
pub struct ImportHold(
    // Never read: it is held only so that its Drop (the provider's unlock) runs with this one's.
    #[allow(dead_code)] Box<dyn std::any::Any + Send + Sync>,
);

impl ImportHold {
    /// A hold keeping `guard` (the provider's lock) alive until it is dropped.
    pub fn new(guard: impl std::any::Any + Send + Sync) -> Self {
        ImportHold(Box::new(guard))
    }
}

impl std::fmt::Debug for ImportHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImportHold")
    }
}

/// Which long-running job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Pooled → dedicated.
    Decentralise,
    /// Dedicated → pooled.
    Recentralise,
}

impl JobKind {
    /// The kind as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Decentralise => "decentralise",
            JobKind::Recentralise => "recentralise",
        }
    }
}

impl std::str::FromStr for JobKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "decentralise" => Ok(JobKind::Decentralise),
            "recentralise" => Ok(JobKind::Recentralise),
            other => Err(Error::invalid(
                "job kind",
                format!("{other:?} is not a job kind"),
            )),
        }
    }
}

/// A copy job's resumable state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyJob {
    /// The room.
    pub room: RoomId,
    /// Which job.
    pub kind: JobKind,
    /// The last row-copy checkpoint saved (pass and position), if any.
    pub checkpoint: Option<CopyCheckpoint>,
    /// The last media object key copied (objects are copied in ascending key order).
    pub media_after: Option<String>,
    /// Media objects and bytes copied so far.
    pub media_done: (u64, u64),
    /// Milliseconds since the Unix epoch of the last save.
    pub updated_at_unix_ms: u64,
}

/// Where an import is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportState {
    /// Writing: rows and objects under `new_room` may exist and are rolled back on recovery.
    Staging,
    /// Committed: the room is live under `new_room`.
    Done,
}

impl ImportState {
    /// The state as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportState::Staging => "staging",
            ImportState::Done => "done",
        }
    }
}

impl std::str::FromStr for ImportState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "staging" => Ok(ImportState::Staging),
            "done" => Ok(ImportState::Done),
            other => Err(Error::invalid(
                "import state",
                format!("{other:?} is not a state"),
            )),
        }
    }
}

/// One import's journal entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRecord {
    /// Unique id of the import (a UUID).
    pub id: String,
    /// The room id in the bundle.
    pub source_room: String,
    /// The room id it was imported as.
    pub new_room: RoomId,
    /// SHA-256 (hex) of the bundle's `manifest.json`.
    pub manifest_sha256: String,
    /// The key id that signed the bundle.
    pub signer_key_id: String,
    /// Staging or done.
    pub state: ImportState,
    /// Milliseconds since the Unix epoch when the import began.
    pub started_at_unix_ms: u64,
}

/// The hash a chain starts from: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What to append to the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, RFC 3339 UTC (`2026-11-22T10:00:00Z`).
    pub at: String,
    /// Who acted (the CLI user, a service principal).
    pub actor: String,
    /// What happened, e.g. `decentralise.finished`, `room.revoked`.
    pub action: String,
    /// The room concerned, if any.
    pub room: Option<RoomId>,
    /// Details as JSON (kept small: ids and counts, never secrets).
    pub detail: serde_json::Value,
}

/// A stored audit row: the entry plus its place in the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position, from 1, without gaps.
    pub seq: u64,
    /// The entry.
    pub entry: AuditEntry,
    /// The previous row's `hash` ([`GENESIS_HASH`] for `seq` 1).
    pub prev_hash: String,
    /// [`AuditRecord::compute_hash`] of this row.
    pub hash: String,
}

impl AuditRecord {
    /// SHA-256 (lowercase hex) over `prev_hash`, `seq` and the entry, each length-prefixed so no
    /// two different rows hash the same input. The detail is hashed as serde_json writes it
    /// (keys sorted, since `serde_json::Value` maps are ordered), so a store that keeps detail as
    /// text must keep those bytes.
    pub fn compute_hash(seq: u64, prev_hash: &str, entry: &AuditEntry) -> String {
        let detail = entry.detail.to_string();
        let room = entry.room.as_ref().map(|r| r.as_str()).unwrap_or("");
        let mut h = Sha256::new();
        for field in [
            prev_hash.as_bytes(),
            seq.to_string().as_bytes(),
            entry.at.as_bytes(),
            entry.actor.as_bytes(),
            entry.action.as_bytes(),
            room.as_bytes(),
            detail.as_bytes(),
        ] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field);
        }
        hex::encode(h.finalize())
    }

    /// The record that follows `prev` (or starts the chain) for `entry`.
    pub fn next(prev: Option<&AuditRecord>, entry: AuditEntry) -> AuditRecord {
        let (seq, prev_hash) = match prev {
            Some(p) => (p.seq + 1, p.hash.clone()),
            None => (1, GENESIS_HASH.to_string()),
        };
        let hash = AuditRecord::compute_hash(seq, &prev_hash, &entry);
        AuditRecord {
            seq,
            entry,
            prev_hash,
            hash,
        }
    }
}

/// A point in the audit chain that a receipt carries (its `audit` field): the record with this
/// `seq` had this `hash` when the receipt was issued. The chain detects edits, insertions and
/// deletions inside it, but a cut of its newest rows leaves an intact shorter chain; a receipt
/// held by the room's owner outside the host is what reveals such a cut
/// ([`check_audit_anchor`]).
pub use roomshard_verify::dsse::AuditAnchor;

/// Checks that `log` (the whole chain, in `seq` order) still holds `anchor`: a record with its
/// `seq` and `hash`. Returns the problem in words, or `None`.
pub fn check_audit_anchor(log: &[AuditRecord], anchor: &AuditAnchor) -> Option<String> {
    let found = usize::try_from(anchor.seq)
        .ok()
        .and_then(|seq| seq.checked_sub(1))
        .and_then(|i| log.get(i))
        .filter(|r| r.seq == anchor.seq);
    match found {
        None => Some(format!(
            "entry {} ({}) is not in the chain, which has {} entries: entries were removed from its end (or this is another log)",
            anchor.seq,
            anchor.hash,
            log.len()
        )),
        Some(r) if r.hash != anchor.hash => Some(format!(
            "entry {} has hash {}, not {} as anchored: the log was rewritten from there on (or this is another log)",
            anchor.seq, r.hash, anchor.hash
        )),
        Some(_) => None,
    }
}

/// The result of checking an audit chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    /// Rows checked.
    pub rows: u64,
    /// The last row's hash: keep it elsewhere (a receipt, a log) to detect a cut of the tail.
    pub head: String,
    /// The first broken row, if any: its `seq` and what is wrong with it.
    pub broken: Option<(u64, String)>,
}

impl AuditVerification {
    /// Whether the chain is intact.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Page size of the provided whole-list methods.
const PAGE: u32 = 1000;

/// Checks a chain read in `seq` order: `seq` runs 1, 2, 3…, each `prev_hash` equals the previous
/// row's `hash`, and each `hash` matches its contents.
pub fn verify_audit_chain(records: &[AuditRecord]) -> AuditVerification {
    let mut check = AuditChainCheck::default();
    check.feed(records);
    check.finish()
}

/// [`verify_audit_chain`] fed in pieces: what lets a log of any length be checked a page at a
/// time.
#[derive(Clone, Debug)]
pub struct AuditChainCheck {
    rows: u64,
    prev_hash: String,
    last_hash: String,
    broken: Option<(u64, String)>,
}

impl Default for AuditChainCheck {
    fn default() -> Self {
        AuditChainCheck {
            rows: 0,
            prev_hash: GENESIS_HASH.to_string(),
            last_hash: String::new(),
            broken: None,
        }
    }
}

impl AuditChainCheck {
    /// Checks the next records of the chain, in `seq` order.
    pub fn feed(&mut self, records: &[AuditRecord]) {
        for r in records {
            self.rows += 1;
            self.last_hash.clone_from(&r.hash);
            if self.broken.is_some() {
                continue;
            }
            let expected_seq = self.rows;
            let problem = if r.seq != expected_seq {
                Some(format!(
                    "sequence {} where {expected_seq} was expected (a row was removed or inserted)",
                    r.seq
                ))
            } else if r.prev_hash != self.prev_hash {
                Some("prev_hash does not match the previous row's hash".to_string())
            } else if r.hash != AuditRecord::compute_hash(r.seq, &r.prev_hash, &r.entry) {
                Some("hash does not match the row's contents (the row was edited)".to_string())
            } else {
                None
            };
            match problem {
                Some(p) => self.broken = Some((r.seq, p)),
                None => self.prev_hash.clone_from(&r.hash),
            }
        }
    }

    /// The result over everything fed.
    pub fn finish(self) -> AuditVerification {
        AuditVerification {
            rows: self.rows,
            head: if self.broken.is_some() {
                self.last_hash
            } else {
                self.prev_hash
            },
            broken: self.broken,
        }
    }
}

/// An issued Sovereignty Receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    /// The room.
    pub room: RoomId,
    /// The receipt's monotonic version (the placement version it was issued at).
    pub version: u64,
    /// Why it was issued: `decentralise`, `import`, `rotate`, `regrant`.
    pub reason: String,
    /// Issue time, RFC 3339 UTC.
    pub issued: String,
    /// The DSSE envelope (JSON) as issued.
    pub envelope: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32) -> AuditEntry {
        AuditEntry {
            at: "2026-11-22T10:00:00Z".into(),
            actor: "test".into(),
            action: format!("act.{n}"),
            room: RoomId::new("general").ok(),
            detail: serde_json::json!({ "n": n }),
        }
    }

    fn chain(n: u32) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let r = AuditRecord::next(out.last(), entry(i));
            out.push(r);
        }
        out
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(5);
        let v = verify_audit_chain(&c);
        assert!(v.is_intact(), "{v:?}");
        assert_eq!(v.rows, 5);
        assert_eq!(v.head, c[4].hash);
        assert!(verify_audit_chain(&[]).is_intact());
    }

    #[test]
    fn edits_deletions_insertions_and_reorders_are_detected() {
        let mut edited = chain(5);
        edited[2].entry.detail = serde_json::json!({ "n": 99 });
        assert_eq!(verify_audit_chain(&edited).broken.map(|b| b.0), Some(3));

        let mut deleted = chain(5);
        deleted.remove(1);
        assert_eq!(verify_audit_chain(&deleted).broken.map(|b| b.0), Some(3));

        let mut rehashed = chain(5);
        rehashed[1].entry.actor = "mallory".into();
        rehashed[1].hash = AuditRecord::compute_hash(2, &rehashed[1].prev_hash, &rehashed[1].entry);
        assert_eq!(verify_audit_chain(&rehashed).broken.map(|b| b.0), Some(3));

        let mut swapped = chain(5);
        swapped.swap(1, 2);
        assert!(!verify_audit_chain(&swapped).is_intact());
    }

    #[test]
    fn the_chain_checked_in_pages_equals_the_chain_checked_whole() {
        let mut c = chain(7);
        for broken_at in [None, Some(4usize)] {
            if let Some(i) = broken_at {
                c[i].entry.actor = "mallory".into();
            }
            let whole = verify_audit_chain(&c);
            for size in 1..=7 {
                let mut check = AuditChainCheck::default();
                for page in c.chunks(size) {
                    check.feed(page);
                }
                assert_eq!(check.finish(), whole, "pages of {size}");
            }
        }
        assert_eq!(verify_audit_chain(&c).broken.map(|b| b.0), Some(5));
    }

    #[test]
    fn anchors_reveal_a_cut_tail_and_a_rewritten_log() {
        let c = chain(5);
        let anchor = |r: &AuditRecord| AuditAnchor {
            seq: r.seq,
            hash: r.hash.clone(),
        };
        assert_eq!(check_audit_anchor(&c, &anchor(&c[4])), None);
        assert_eq!(check_audit_anchor(&c, &anchor(&c[1])), None);
        // The newest two rows cut off: the shorter chain is intact, the anchor is not in it.
        let cut = &c[..3];
        assert!(verify_audit_chain(cut).is_intact());
        let problem = check_audit_anchor(cut, &anchor(&c[4])).expect("cut detected");
        assert!(problem.contains("removed from its end"), "{problem}");
        // Rewritten from row 2 on (re-hashed, so the chain itself is intact).
        let mut rewritten: Vec<AuditRecord> = c[..1].to_vec();
        for i in 1..5 {
            let r = AuditRecord::next(rewritten.last(), entry(100 + i));
            rewritten.push(r);
        }
        assert!(verify_audit_chain(&rewritten).is_intact());
        let problem = check_audit_anchor(&rewritten, &anchor(&c[3])).expect("rewrite detected");
        assert!(problem.contains("rewritten"), "{problem}");
        assert!(
            check_audit_anchor(
                &[],
                &AuditAnchor {
                    seq: 0,
                    hash: String::new()
                }
            )
            .is_some()
        );
    }

    #[test]
    fn length_prefixes_keep_fields_apart() {
        let mut a = entry(1);
        let mut b = entry(1);
        a.actor = "ab".into();
        a.action = "c".into();
        b.actor = "a".into();
        b.action = "bc".into();
        assert_ne!(
            AuditRecord::compute_hash(1, GENESIS_HASH, &a),
            AuditRecord::compute_hash(1, GENESIS_HASH, &b)
        );
    }
}
