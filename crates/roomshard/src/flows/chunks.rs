//! Chunk parity of a copy job: check a room range by range while it is writable, re-check
//! inside the read-only cutover only the ranges that did not match or that a catch-up touched
//! since, and name the rows of a mismatch.
//!
//! Why it is correct to skip a range that matched: the shard is the copy job's alone until the
//! flip, so after a range matched it can only stop matching through a write to the pooled rows,
//! and every such write is logged (row triggers; `TRUNCATE` is refused while a room is tracked)
//! and applied by a `Changes` pass, which records the key it applied
//! ([`ShardStore::applied_in`]). So "pending ∪ applied since the last check" covers every range
//! that can differ. A check that is cut short (the cutover's limit, an error) leaves every range
//! it was checking pending, and a crashed job starts with a full check.

use std::collections::BTreeSet;

use roomshard_core::{ChunkParity, ChunkPlan, KeyRange, Result, RoomId, Scope, ShardStore};
use serde::Serialize;

use crate::Roomshard;

/// Mismatched ranges whose rows are named (each costs a read of the range on both sides).
const NAMED_RANGES: usize = 5;
/// Rows named at most, over all ranges.
const NAMED_ROWS: usize = 20;

/// The chunk state of one decentralise: the source's ranges and which of them are not known to
/// match.
#[derive(Debug)]
pub(crate) struct ChunkCheck {
    ranges: Vec<KeyRange>,
    pending: BTreeSet<usize>,
    checked: usize,
    /// Milliseconds of the last check's steps (applied keys, hashing, reset).
    timings: serde_json::Map<String, serde_json::Value>,
}

/// A row the two copies disagree on.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RowMismatch {
    table: String,
    key: Vec<String>,
    problem: &'static str,
}

impl std::fmt::Display for RowMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}) {}",
            self.table,
            self.key.join(", "),
            self.problem
        )
    }
}

/// The two copies a check compares: the pooled source in `rs.shards`, the shard in `target`
/// (the same store: chunk checksums compare within one store).
#[derive(Clone, Copy)]
pub(crate) struct Copies<'a> {
    pub(crate) rs: &'a Roomshard,
    pub(crate) target: &'a dyn ShardStore,
    pub(crate) room: &'a RoomId,
    pub(crate) pooled: &'a Scope,
    pub(crate) dedicated: &'a Scope,
}

impl Copies<'_> {
    async fn both(&self, plan: &ChunkPlan) -> Result<(Vec<ChunkParity>, Vec<ChunkParity>)> {
        let schema = &self.rs.schema;
        tokio::try_join!(
            self.rs.shards.chunk_parity(self.pooled, schema, plan),
            self.target.chunk_parity(self.dedicated, schema, plan),
        )
    }
}

impl ChunkCheck {
    /// The first check: cut the source into ranges, hash both copies over them, and start
    /// recording which keys catch-up applies from here on.
    pub(crate) async fn first(c: Copies<'_>) -> Result<ChunkCheck> {
        let schema = &c.rs.schema;
        c.rs.shards.reset_applied(c.room).await?;
        let split = ChunkPlan::Split {
            rows_per_chunk: c.rs.config.parity_chunk_rows.max(1),
        };
        let source = c.rs.shards.chunk_parity(c.pooled, schema, &split).await?;
        let ranges: Vec<KeyRange> = source.iter().map(|p| p.range.clone()).collect();
        let target = c
            .target
            .chunk_parity(c.dedicated, schema, &ChunkPlan::Ranges(ranges.clone()))
            .await?;
        let pending = mismatched(0..ranges.len(), &source, &target);
        Ok(ChunkCheck {
            checked: ranges.len(),
            ranges,
            pending,
            timings: serde_json::Map::new(),
        })
    }

    /// Re-checks only the ranges that did not match and those a `Changes` pass touched since
    /// the last check: a re-check resumes, it does not start over.
    pub(crate) async fn recheck(&mut self, c: Copies<'_>, resplit: bool) -> Result<()> {
        self.timings.clear();
        let mut lap = std::time::Instant::now();
        let mut step = |timings: &mut serde_json::Map<String, serde_json::Value>, name: &str| {
            let ms = u64::try_from(lap.elapsed().as_millis()).unwrap_or(u64::MAX);
            timings.insert(format!("{name}_ms"), ms.into());
            lap = std::time::Instant::now();
        };
        let applied =
            c.rs.shards
                .applied_in(c.room, &c.rs.schema, &self.ranges)
                .await?;
        step(&mut self.timings, "applied");
        let todo: Vec<usize> = self
            .pending
            .iter()
            .copied()
            .chain(applied)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Pending until proven equal: a check cut short here leaves all of them to check again.
        self.pending.extend(todo.iter().copied());
        self.checked = todo.len();
        if todo.is_empty() {
            return Ok(());
        }
        let plan = ChunkPlan::Ranges(todo.iter().map(|&i| self.ranges[i].clone()).collect());
        let (source, target) = c.both(&plan).await?;
        step(&mut self.timings, "hash");
        // Forget the applied keys only once the ranges they touched are compared.
        c.rs.shards.reset_applied(c.room).await?;
        step(&mut self.timings, "reset");
        self.pending = mismatched(todo.iter().copied(), &source, &target);
        if resplit {
            self.resplit(c, &todo, &source).await?;
            step(&mut self.timings, "resplit");
        }
        Ok(())
    }

    /// Cuts every range just checked equal that has grown past the chunk size (the open
    /// end of a table the host appends to, typically) into chunk-sized ranges, so the
    /// cutover's re-check of the next writes hashes a chunk, not everything written since the
    /// first check. Sound because the new ranges cover exactly the keys of one that matched,
    /// and keys applied from here on are recorded against whichever of them holds them.
    async fn resplit(
        &mut self,
        c: Copies<'_>,
        checked: &[usize],
        source: &[ChunkParity],
    ) -> Result<()> {
        let rows_per_chunk = c.rs.config.parity_chunk_rows.max(1);
        // From the highest index down, so the indexes still to visit do not move.
        for (&i, parity) in checked.iter().zip(source).rev() {
            if self.pending.contains(&i) || parity.rows <= rows_per_chunk {
                continue;
            }
            let plan = ChunkPlan::Resplit {
                range: self.ranges[i].clone(),
                rows_per_chunk,
            };
            let parts: Vec<KeyRange> =
                c.rs.shards
                    .chunk_parity(c.pooled, &c.rs.schema, &plan)
                    .await?
                    .into_iter()
                    .map(|p| p.range)
                    .collect();
            let extra = parts.len().saturating_sub(1);
            if extra == 0 {
                continue;
            }
            self.ranges.splice(i..=i, parts);
            self.pending = self
                .pending
                .iter()
                .map(|&p| if p > i { p + extra } else { p })
                .collect();
        }
        Ok(())
    }

    /// Whether every range matched at the last check.
    pub(crate) fn matches(&self) -> bool {
        self.pending.is_empty()
    }

    /// The tables with a mismatched range, in range order.
    pub(crate) fn tables(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for &i in &self.pending {
            let t = &self.ranges[i].table;
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }

    /// The rows of the first mismatched ranges that differ, by key: what a person needs to see
    /// which rows the copies disagree on.
    pub(crate) async fn name_rows(&self, c: Copies<'_>) -> Result<Vec<RowMismatch>> {
        let schema = &c.rs.schema;
        let limit = usize::try_from(c.rs.config.parity_chunk_rows.saturating_mul(4))
            .unwrap_or(usize::MAX)
            .max(1_000);
        let mut out = Vec::new();
        for &i in self.pending.iter().take(NAMED_RANGES) {
            let range = &self.ranges[i];
            let (source, target) = tokio::try_join!(
                c.rs.shards.row_digests(c.pooled, schema, range, limit),
                c.target.row_digests(c.dedicated, schema, range, limit),
            )?;
            let theirs: std::collections::HashMap<&Vec<String>, &String> =
                target.iter().map(|r| (&r.key, &r.digest)).collect();
            let ours: std::collections::HashSet<&Vec<String>> =
                source.iter().map(|r| &r.key).collect();
            for row in &source {
                let problem = match theirs.get(&row.key) {
                    None => "missing in the shard",
                    Some(d) if **d != row.digest => "differs in the shard",
                    Some(_) => continue,
                };
                out.push(RowMismatch {
                    table: range.table.clone(),
                    key: row.key.clone(),
                    problem,
                });
            }
            for row in target.iter().filter(|r| !ours.contains(&r.key)) {
                out.push(RowMismatch {
                    table: range.table.clone(),
                    key: row.key.clone(),
                    problem: "only in the shard",
                });
            }
            if out.len() >= NAMED_ROWS {
                break;
            }
        }
        out.truncate(NAMED_ROWS);
        Ok(out)
    }

    /// The audit detail of a check: ranges checked and total, the mismatched ranges and rows.
    pub(crate) fn detail(&self, rows: &[RowMismatch]) -> serde_json::Value {
        serde_json::json!({
            "chunks_total": self.ranges.len(),
            "chunks_checked": self.checked,
            "chunks_mismatched": self.pending.len(),
            "timings": self.timings,
            "chunks": self
                .pending
                .iter()
                .take(NAMED_RANGES)
                .map(|&i| self.ranges[i].to_string())
                .collect::<Vec<_>>(),
            "rows": rows,
        })
    }
}

/// The indexes (from `at`, in step with the two lists) whose ranges do not match.
fn mismatched(
    at: impl Iterator<Item = usize>,
    source: &[ChunkParity],
    target: &[ChunkParity],
) -> BTreeSet<usize> {
    let at: Vec<usize> = at.collect();
    if source.len() != at.len() || target.len() != at.len() {
        // A store that answered for other ranges than asked proves nothing: all pending.
        return at.into_iter().collect();
    }
    at.into_iter()
        .zip(source.iter().zip(target))
        .filter(|(_, (s, t))| !s.matches(t))
        .map(|(i, _)| i)
        .collect()
}
