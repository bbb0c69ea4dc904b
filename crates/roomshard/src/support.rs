//! Small pieces every flow shares: time stamps, audit entries, placement moves, receipts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use roomshard_bundle::receipt_to_sign;
use roomshard_core::{
    AuditAnchor, AuditEntry, AuditRecord, Error, Parity, Placement, PlacementChange,
    PlacementState, ReceiptRecord, Result, RoomId,
};
use roomshard_verify::dsse::ReceiptPredicate;
use roomshard_verify::format::to_canonical_json;
use sha2::{Digest, Sha256};

use crate::Roomshard;

/// The current time as `YYYY-MM-DDTHH:MM:SSZ` (the bundle format's timestamp form).
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// SHA-256 (hex) of a parity report as canonical JSON: what a decentralise receipt's subject
/// digest commits to, so a later parity of the shard can be compared with the receipt.
pub fn parity_digest(parity: &Parity) -> String {
    let value = serde_json::to_value(parity).unwrap_or(serde_json::Value::Null);
    hex::encode(Sha256::digest(to_canonical_json(&value)))
}

/// A trusted key set (`{"keys":[…]}`) holding one key of `algorithm`: what the embedded default
/// publishes as `keys/trusted-keys.json` so anyone can verify its exports and receipts.
pub fn trusted_key_set_json(
    key_id: &str,
    algorithm: roomshard_core::Algorithm,
    spki_pem: &str,
) -> Vec<u8> {
    let set = serde_json::json!({
        "keys": [{
            "id": key_id,
            "alg": algorithm.as_str(),
            "public_key_pem": spki_pem,
        }]
    });
    let mut out = serde_json::to_vec_pretty(&set).unwrap_or_default();
    out.push(b'\n');
    out
}

impl Roomshard {
    /// The audit entry for `action` on `room`, stamped now by this instance's actor.
    pub(crate) fn audit_entry(
        &self,
        action: &str,
        room: Option<&RoomId>,
        detail: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            at: now_rfc3339(),
            actor: self.config.actor.clone(),
            action: action.to_string(),
            room: room.cloned(),
            detail,
        }
    }

    /// Appends one audit entry for `room` (for events that change no placement; a placement
    /// change records its entry in the same transaction, [`Self::move_placement`]).
    pub(crate) async fn audit(
        &self,
        action: &str,
        room: Option<&RoomId>,
        detail: serde_json::Value,
    ) -> Result<()> {
        self.control
            .append_audit(&self.audit_entry(action, room, detail))
            .await
            .map(|_| ())
    }

    /// The room's placement; a room roomshard has never seen is pooled (every room starts in the
    /// shared tables), and is recorded as such on first use (audit `room.registered`).
    pub(crate) async fn placement_or_pooled(&self, room: &RoomId) -> Result<Placement> {
        if let Some(p) = self.control.placement(room).await? {
            return Ok(p);
        }
        let mut p = Placement::pooled(room.clone());
        p.profile = roomshard_core::Profile::Standard;
        let entry = self.audit_entry(
            "room.registered",
            Some(room),
            serde_json::json!({ "placement": { "to": p.state.as_str(), "version": p.version } }),
        );
        match self
            .control
            .change_placement(PlacementChange::Insert(&p), &entry)
            .await
        {
            Ok(_) => Ok(p),
            // Someone else recorded it first: use theirs.
            Err(Error::AlreadyExists { .. }) => self
                .control
                .placement(room)
                .await?
                .ok_or_else(|| Error::not_found(format!("placement of room {room}"))),
            Err(e) => Err(e),
        }
    }

    /// Moves a placement to `next` (compare-and-swap on its version), applying `edit` to its
    /// fields in the same write, and records the audit entry `action` with `detail` (plus a
    /// `placement` object: `from`, `to`, `version`) in the same transaction. A move to the
    /// current state with no edit writes nothing and returns `None`.
    pub(crate) async fn move_placement(
        &self,
        placement: &mut Placement,
        next: PlacementState,
        action: &str,
        detail: serde_json::Value,
        edit: impl FnOnce(&mut Placement),
    ) -> Result<Option<AuditRecord>> {
        let expected = placement.version;
        let mut updated = placement.clone();
        let moved = updated.transition(next)?;
        edit(&mut updated);
        if !moved {
            if updated == *placement {
                return Ok(None);
            }
            updated.version += 1;
        }
        let record = self
            .update_placement(&updated, expected, action, detail, Some(placement.state))
            .await?;
        *placement = updated;
        Ok(Some(record))
    }

    /// Replaces the placement (compare-and-swap on `expected`) and records `action` in the same
    /// transaction; `detail` gains a `placement` object (`from`, `to`, `version`).
    pub(crate) async fn update_placement(
        &self,
        next: &Placement,
        expected: u64,
        action: &str,
        detail: serde_json::Value,
        from: Option<PlacementState>,
    ) -> Result<AuditRecord> {
        let mut detail = match detail {
            serde_json::Value::Object(map) => map,
            other => {
                let mut map = serde_json::Map::new();
                if !other.is_null() {
                    map.insert("detail".into(), other);
                }
                map
            }
        };
        detail.insert(
            "placement".into(),
            serde_json::json!({
                "from": from.map(|s| s.as_str()),
                "to": next.state.as_str(),
                "version": next.version,
            }),
        );
        let entry = self.audit_entry(action, Some(&next.room), detail.into());
        self.control
            .change_placement(
                PlacementChange::Update {
                    next,
                    expected_version: expected,
                },
                &entry,
            )
            .await
    }

    /// Signs and records a Sovereignty Receipt for `placement`, speaking for `digest` (a
    /// manifest's SHA-256 or a [`parity_digest`]). Returns the DSSE envelope (JSON).
    pub(crate) async fn issue_receipt(
        &self,
        placement: &Placement,
        reason: &str,
        digest: &str,
    ) -> Result<Vec<u8>> {
        // The log's head now, which includes the entry of the placement change this receipt is
        // about: whoever keeps the receipt can check later that the log was not cut back.
        let audit = self.control.audit_head().await?.map(|r| AuditAnchor {
            seq: r.seq,
            hash: r.hash,
        });
        let now = SystemTime::now();
        let expires =
            now + Duration::from_secs(u64::from(self.config.receipt_validity_days) * 86_400);
        let predicate = ReceiptPredicate {
            room: placement.room.to_string(),
            profile: placement.profile.as_str().to_string(),
            region: placement
                .region
                .clone()
                .unwrap_or_else(|| "local".to_string()),
            bucket: placement.media_bucket.clone().unwrap_or_default(),
            key_alias: placement.kms_key_ref.clone().unwrap_or_default(),
            manifest_sha256: digest.to_string(),
            issued: rfc3339(now),
            expires: rfc3339(expires),
            version: placement.version,
            audit,
        };
        let pending = receipt_to_sign(&predicate, digest)
            .map_err(|e| Error::invalid("receipt", e.to_string()))?;
        let signature = self
            .keys
            .sign(&self.config.signing_key, pending.message())
            .await?;
        let envelope = pending.into_envelope(&self.config.signing_key_id, &signature);
        self.control
            .record_receipt(&ReceiptRecord {
                room: placement.room.clone(),
                version: placement.version,
                reason: reason.to_string(),
                issued: predicate.issued.clone(),
                envelope: String::from_utf8_lossy(&envelope).into_owned(),
            })
            .await?;
        Ok(envelope)
    }
}

/// A scope as audit entries record it: kind, room and, for a dedicated scope, its shard (URL
/// redacted: a PostgreSQL shard URL may carry a password, and the audit log is printed) and
/// bucket. `Scope`'s own serialisation keeps the URL whole, for the control plane only.
pub(crate) fn scope_detail(scope: &roomshard_core::Scope) -> serde_json::Value {
    match scope {
        roomshard_core::Scope::Pooled(room) => {
            serde_json::json!({ "scope": "pooled", "room": room.as_str() })
        }
        roomshard_core::Scope::Dedicated(room, at) => serde_json::json!({
            "scope": "dedicated",
            "room": room.as_str(),
            "shard": at.shard.as_ref().map(|u| u.redacted()),
            "bucket": at.bucket,
            "adopted": at.adopted,
        }),
    }
}

#[cfg(test)]
mod scope_detail_tests {
    use super::scope_detail;
    use roomshard_core::{Location, RoomId, Scope, ServerUrl};

    #[test]
    fn an_audit_detail_never_carries_a_shard_password() {
        let at = Location {
            shard: Some(ServerUrl::new(
                "postgres://mesh:hunter2@db1/mesh?schema=room_general",
            )),
            bucket: Some("mesh-room-general".into()),
            ..Location::default()
        };
        let room = RoomId::new("general").expect("room");
        let detail = scope_detail(&Scope::Dedicated(room.clone(), at)).to_string();
        assert!(!detail.contains("hunter2"), "{detail}");
        assert!(detail.contains("postgres://mesh:***@db1/mesh"), "{detail}");
        assert!(detail.contains("mesh-room-general"), "{detail}");
        assert_eq!(
            scope_detail(&Scope::Pooled(room)).to_string(),
            r#"{"room":"general","scope":"pooled"}"#
        );
    }
}
