//! The one error type every roomshard contract returns.
//!
//! Providers wrap whatever their backend reports (a `sqlx::Error`, an AWS SDK error, a Redis
//! error) into one of these kinds, so callers decide what to do from the kind alone — retry,
//! report bad input, refuse a sealed room — without knowing which backend is configured. Backend
//! errors only ever appear boxed as a [`std::error::Error::source`], never in a signature, so
//! changing a backend's version never changes this crate's API.

use crate::ids::RoomId;

/// A boxed error from a backend, kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with roomshard's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong, by kind.
///
/// `#[non_exhaustive]`: new kinds may be added in a minor release, so a `match` needs a `_` arm.
/// Each kind says what the caller can do about it; the conformance suite checks that providers
/// return the kind their trait documentation names.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The thing asked for does not exist (room shard, bucket, object, key, grant, job).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `object media/a.png in room general`.
        what: String,
    },

    /// Creating something that must not exist yet, and does. Operations documented as
    /// idempotent ("ensure …") never return this for an equal existing thing.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What exists, e.g. `bucket roomshard-general`.
        what: String,
    },

    /// The operation collides with the current state: a forbidden placement transition, a stale
    /// version, an existing table whose shape differs from its descriptor, an id collision on
    /// restore with [`RemapPolicy::Keep`](crate::RemapPolicy::Keep). Re-read the state before
    /// trying again; retrying blindly will fail the same way.
    #[error("conflict: {what}")]
    Conflict {
        /// What collided and with what.
        what: String,
    },

    /// The provider lacks the capability the operation needs. Every operation guarded by a
    /// capability flag returns exactly this when the flag is `false`, so callers may probe.
    #[error("{provider} does not support {operation}")]
    Unsupported {
        /// The trait method (or method plus option, e.g. `ensure_bucket.versioning`).
        operation: &'static str,
        /// The provider's [`name`](crate::ShardStore::name).
        provider: String,
    },

    /// The backend refused the caller's credentials or grants.
    #[error("permission denied: {what}")]
    PermissionDenied {
        /// What was refused.
        what: String,
    },

    /// The room is sealed: its key grant was revoked ("Revoke Mesh"), so its data can no longer
    /// be decrypted or served. Not retryable until the room owner restores the grant.
    #[error("room {room} is sealed (its key grant was revoked)")]
    Sealed {
        /// The sealed room.
        room: RoomId,
    },

    /// Bad input from the caller: says what was wrong and where, so the message is actionable.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// What was invalid, e.g. `room id`, `table messages`, `object key`.
        what: String,
        /// Why, and where if it is a position in a larger input.
        detail: String,
    },

    /// Stored or received data failed an integrity check: a checksum mismatch, a wrapped key that
    /// does not decrypt under its context, a dump whose rows do not fit their table.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// What failed the check.
        what: String,
        /// How it failed.
        detail: String,
    },

    /// A quota or a provider limit would be exceeded.
    #[error("quota exceeded for {what}: limit {limit}, used {used}")]
    QuotaExceeded {
        /// What is limited, e.g. `room general media bytes`.
        what: String,
        /// The limit.
        limit: u64,
        /// The amount in use (or that the operation would reach).
        used: u64,
    },

    /// The backend could not be reached or gave up (network, timeout, throttling, shutdown).
    /// `retryable` says whether the same call may succeed later unchanged.
    #[error("{what} unavailable{}", if *.retryable { " (retryable)" } else { "" })]
    Unavailable {
        /// What was unavailable, e.g. `postgres db1.example.org`.
        what: String,
        /// Whether retrying the same call later may succeed.
        retryable: bool,
        /// The backend's own error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// Whether retrying the same call later, unchanged, may succeed. Only
    /// [`Error::Unavailable`] with `retryable: true` is; every other kind needs a change first.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable {
                retryable: true,
                ..
            }
        )
    }

    /// [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// [`Error::Conflict`].
    pub fn conflict(what: impl Into<String>) -> Self {
        Error::Conflict { what: what.into() }
    }

    /// [`Error::Unsupported`]; providers pass their own [`name`](crate::ShardStore::name).
    pub fn unsupported(operation: &'static str, provider: impl Into<String>) -> Self {
        Error::Unsupported {
            operation,
            provider: provider.into(),
        }
    }

    /// [`Error::Invalid`].
    pub fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// [`Error::Unavailable`] with a backend error as its source.
    pub fn unavailable(
        what: impl Into<String>,
        retryable: bool,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Unavailable {
            what: what.into(),
            retryable,
            source: Some(source.into()),
        }
    }
}

/// Turns a format-rule violation from `roomshard-verify` into [`Error::Invalid`]: inside this
/// crate those rules only ever check caller input (ids, identifiers, descriptors, object keys).
pub(crate) fn invalid_input(what: &str, e: roomshard_verify::VerifyError) -> Error {
    Error::invalid(what, e.detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn only_retryable_unavailable_is_retryable() {
        assert!(Error::unavailable("db", true, "timeout").is_retryable());
        assert!(!Error::unavailable("db", false, "gone").is_retryable());
        assert!(!Error::conflict("x").is_retryable());
        assert!(!Error::unsupported("dump", "memory").is_retryable());
    }

    #[test]
    fn messages_say_what_and_why() {
        let e = Error::invalid("room id", "too long");
        assert_eq!(e.to_string(), "invalid room id: too long");
        let e = Error::unsupported("presign_get", "local");
        assert_eq!(e.to_string(), "local does not support presign_get");
        let e = Error::QuotaExceeded {
            what: "room general media bytes".into(),
            limit: 10,
            used: 12,
        };
        assert_eq!(
            e.to_string(),
            "quota exceeded for room general media bytes: limit 10, used 12"
        );
    }

    #[test]
    fn unavailable_keeps_its_source() {
        let e = Error::unavailable("redis", true, "connection reset");
        assert_eq!(e.to_string(), "redis unavailable (retryable)");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("connection reset")
        );
    }

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Error>();
    }
}
