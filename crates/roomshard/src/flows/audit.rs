//! Audit verification: the hash chain, and that it still holds what receipts anchored.
//!
//! A log whose newest rows were deleted is an intact, shorter chain, so the chain alone cannot
//! show a cut tail. Every receipt carries the log's head when it was issued (`audit: {seq,
//! hash}`); [`verify_audit`] checks the chain, then that every anchor of a receipt this home
//! recorded — and of every receipt its holders kept and hand in — is still in it, and optionally
//! that a head noted down earlier is. The CLI's `roomshard audit verify` is this flow.

use roomshard_core::{AuditAnchor, Error, Result, check_audit_anchor};
use roomshard_verify::TrustedKeys;
use roomshard_verify::dsse::{receipt_predicate_unverified, verify_receipt};
use serde::Serialize;

use crate::Roomshard;

/// What to check besides the chain.
#[derive(Clone, Debug, Default)]
pub struct AuditCheckOptions {
    /// A head the log had earlier: the entry with this hash must still be in the chain.
    pub expect_head: Option<String>,
    /// Receipts kept outside the home, as `(name for messages, envelope bytes)`: each is
    /// verified against the trusted key set at its issue time, and its anchor must hold.
    pub receipts: Vec<(String, Vec<u8>)>,
}

/// One receipt anchor and whether the log still holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AnchorCheck {
    /// Where the anchor came from (a recorded receipt of room R, a receipt file).
    pub source: String,
    /// The anchored entry.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
    /// What is wrong, if anything.
    pub problem: Option<String>,
}

/// The result of [`verify_audit`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditCheck {
    /// Entries in the chain.
    pub rows: u64,
    /// The newest entry's hash: note it down to detect a cut tail later (`expect_head`).
    pub head: String,
    /// Where `expect_head` is in the chain, when given and found.
    pub expected_head_seq: Option<u64>,
    /// Every anchor checked.
    pub anchors: Vec<AnchorCheck>,
    /// The first problem: the entry's `seq` and what is wrong.
    pub broken: Option<(u64, String)>,
}

impl AuditCheck {
    /// Whether the chain is intact and holds every anchor and the expected head.
    pub fn intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Verifies the audit chain, the anchors of the receipts the home recorded and of
/// `options.receipts`, and `options.expect_head`.
///
/// # Errors
/// [`Error::Invalid`] for a handed-in receipt that does not parse, does not verify against
/// `trusted`, or carries no anchor (issued before receipts had one); [`Error::Corrupt`] for a
/// recorded receipt that does not parse; what the control plane returns. A broken chain is not
/// an error: it is [`AuditCheck::broken`].
pub async fn verify_audit(
    rs: &Roomshard,
    trusted: &TrustedKeys,
    options: &AuditCheckOptions,
) -> Result<AuditCheck> {
    let held = held_anchors(trusted, &options.receipts)?;
    let control = &rs.control;
    let v = control.verify_audit().await?;
    let mut broken = v.broken;
    let log = control.audit_log(None).await?;
    let mut expected_head_seq = None;
    if let (Some(expected), None) = (&options.expect_head, &broken) {
        match log.iter().find(|r| &r.hash == expected) {
            Some(record) => expected_head_seq = Some(record.seq),
            None => {
                broken = Some((
                    v.rows + 1,
                    format!(
                        "the expected head {expected} is not in the chain: entries were removed \
                         from its end (or this is another log)"
                    ),
                ))
            }
        }
    }
    // The receipts the home recorded, then the ones held elsewhere.
    let mut anchors = Vec::new();
    for placement in control.placements().await? {
        for r in control.receipts(&placement.room).await? {
            let predicate = receipt_predicate_unverified(r.envelope.as_bytes()).map_err(|e| {
                Error::corrupt(
                    format!(
                        "recorded receipt of room {} (version {})",
                        r.room, r.version
                    ),
                    e.to_string(),
                )
            })?;
            if let Some(anchor) = predicate.audit {
                let source = format!(
                    "recorded {} receipt of room {} (version {})",
                    r.reason, r.room, r.version
                );
                anchors.push((source, anchor));
            }
        }
    }
    anchors.extend(held);
    let mut checked = Vec::new();
    for (source, anchor) in anchors {
        let problem = check_audit_anchor(&log, &anchor);
        if let (Some(p), None) = (&problem, &broken) {
            broken = Some((anchor.seq, format!("{source}: {p}")));
        }
        checked.push(AnchorCheck {
            source,
            seq: anchor.seq,
            hash: anchor.hash,
            problem,
        });
    }
    Ok(AuditCheck {
        rows: v.rows,
        head: v.head,
        expected_head_seq,
        anchors: checked,
        broken,
    })
}

/// The anchors of receipts kept outside the home, each verified against `trusted` at its issue
/// time (an expired receipt still anchors the log as it was when issued).
fn held_anchors(
    trusted: &TrustedKeys,
    receipts: &[(String, Vec<u8>)],
) -> Result<Vec<(String, AuditAnchor)>> {
    let mut out = Vec::new();
    for (name, bytes) in receipts {
        let issued = receipt_predicate_unverified(bytes)
            .map_err(|e| Error::invalid(name, format!("not a receipt: {e}")))?
            .issued;
        let verified = verify_receipt(bytes, trusted, &issued)
            .map_err(|e| Error::invalid(name, format!("not a receipt of this home: {e}")))?;
        let anchor = verified.predicate.audit.ok_or_else(|| {
            Error::invalid(
                name,
                "the receipt carries no audit anchor (issued before receipts had one)",
            )
        })?;
        out.push((format!("receipt {name}"), anchor));
    }
    Ok(out)
}
