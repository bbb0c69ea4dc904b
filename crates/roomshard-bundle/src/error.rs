//! Why writing a bundle, a sidecar or a receipt failed.

/// A failure while writing. Callers mostly need to tell *their* mistakes ([`BundleError::Invalid`]:
/// fix the input) from the environment's ([`BundleError::Io`], [`BundleError::Signing`]: retry
/// or report), so those are separate variants; the message says what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The input breaks the bundle format or the writer's contract (entry order, sizes, value
    /// types, identifiers…). Writing it would produce a bundle the verifier refuses, so nothing
    /// is written for it.
    #[error("invalid bundle input: {what}")]
    Invalid {
        /// What was wrong, for people.
        what: String,
    },
    /// Reading an entry's source or writing the output failed.
    #[error("bundle I/O failed: {0}")]
    Io(#[source] Box<std::io::Error>),
    /// A key could not be parsed, generated or encoded.
    #[error("key error: {what}")]
    Key {
        /// What was wrong with the key, for people.
        what: String,
    },
    /// The signer could not sign (for example a KMS call failed) or returned a signature of the
    /// wrong shape.
    #[error("signing failed: {what}")]
    Signing {
        /// What failed, for people.
        what: String,
        /// The signer's own error, if it has one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// An earlier call failed part-way through writing an entry, so the output is incomplete
    /// and must be discarded; the writer refuses to continue rather than emit a broken archive.
    #[error("the writer failed earlier and its output is incomplete; discard it")]
    Poisoned,
}

impl BundleError {
    /// Builds [`BundleError::Invalid`]; the common case, so it gets a short constructor.
    pub fn invalid(what: impl Into<String>) -> Self {
        BundleError::Invalid { what: what.into() }
    }

    /// Builds [`BundleError::Signing`], for [`crate::Signer`] implementations outside this
    /// crate (e.g. a KMS client) that want to keep their own error as the source.
    pub fn signing(
        what: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        BundleError::Signing {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn key(what: impl Into<String>) -> Self {
        BundleError::Key { what: what.into() }
    }
}

impl From<std::io::Error> for BundleError {
    fn from(e: std::io::Error) -> Self {
        BundleError::Io(Box::new(e))
    }
}
