//! Why a bundle was refused: one stable reason code per rule of `docs/bundle-format.md`.

use std::fmt;

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident => $code:literal,)*) => {
        /// The rule a bundle broke. The code (`as_str`) is stable: it is what golden vectors
        /// (`expect: fail_<code>`), the CLI's JSON report and the WASM API print, so scripts and
        /// other implementations can compare verdicts exactly.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in declaration order (for documentation and exhaustive tests).
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The stable snake_case code of this reason.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)*
                }
            }

            /// Parses a code produced by [`Reason::as_str`].
            pub fn from_code(code: &str) -> Option<Reason> {
                match code {
                    $($code => Some(Reason::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    /// The zstd or tar framing is broken (bad frame, bad header checksum, base-256 size, window too large).
    MalformedArchive => "malformed_archive",
    /// The input ended inside a frame, a header or an entry.
    Truncated => "truncated",
    /// Non-zero bytes after the tar end-of-archive marker, or non-zstd bytes after the last frame.
    TrailingGarbage => "trailing_garbage",
    /// An entry path starts with `/`.
    AbsolutePath => "absolute_path",
    /// An entry path has a `..` component.
    PathTraversal => "path_traversal",
    /// An entry path has an empty or `.` component, a backslash or a control character.
    InvalidPath => "invalid_path",
    /// An entry path is not UTF-8.
    NonUtf8Name => "non_utf8_name",
    /// An entry path is longer than allowed, or uses a GNU long-name record.
    NameTooLong => "name_too_long",
    /// A symbolic link entry.
    Symlink => "symlink",
    /// A hard link entry.
    Hardlink => "hardlink",
    /// A device or FIFO entry.
    SpecialFile => "special_file",
    /// Any other non-regular entry type (directory, PAX header, ...).
    UnsupportedEntryType => "unsupported_entry_type",
    /// A path outside `db.sql`, `media/…`, `manifest.json`, `export.signature`.
    UnexpectedEntry => "unexpected_entry",
    /// The same path twice.
    DuplicateEntry => "duplicate_entry",
    /// Entries out of the order the format fixes.
    EntryOrder => "entry_order",
    /// An entry after `export.signature`.
    EntryAfterSignature => "entry_after_signature",
    /// No `manifest.json`.
    MissingManifest => "missing_manifest",
    /// No `export.signature`.
    MissingSignature => "missing_signature",
    /// More decompressed bytes than the limit.
    TooLarge => "too_large",
    /// Decompressed-to-compressed ratio over the limit.
    CompressionRatio => "compression_ratio",
    /// More entries than the limit.
    TooManyEntries => "too_many_entries",
    /// `manifest.json` larger than the limit.
    ManifestTooLarge => "manifest_too_large",
    /// `manifest.json` is not valid JSON or breaks the schema.
    ManifestInvalid => "manifest_invalid",
    /// `manifest.json` is not in canonical form.
    ManifestNotCanonical => "manifest_not_canonical",
    /// `format_version` newer than this verifier supports (or not this format at all).
    UnsupportedVersion => "unsupported_version",
    /// `export.signature` is not base64 or is too long.
    SignatureMalformed => "signature_malformed",
    /// The signature does not verify over `manifest.json` with the named key.
    SignatureInvalid => "signature_invalid",
    /// The named key is not in the trusted key set.
    UnknownKey => "unknown_key",
    /// The key was revoked.
    KeyRevoked => "key_revoked",
    /// The key's `not_after` is before the signing time.
    KeyExpired => "key_expired",
    /// The key's `not_before` is after the signing time.
    KeyNotYetValid => "key_not_yet_valid",
    /// The manifest's algorithm differs from the key's.
    KeyAlgorithmMismatch => "key_algorithm_mismatch",
    /// A file listed in the manifest is absent.
    MissingEntry => "missing_entry",
    /// A content entry is present that the manifest does not list.
    ExtraEntry => "extra_entry",
    /// An entry's size differs from the manifest.
    SizeMismatch => "size_mismatch",
    /// An entry's SHA-256 differs from the manifest.
    DigestMismatch => "digest_mismatch",
    /// A COPY block's row count differs from the manifest.
    RowCountMismatch => "row_count_mismatch",
    /// A `db.sql` line outside COPY data differs from what the manifest implies.
    SqlUnexpectedStatement => "sql_unexpected_statement",
    /// A COPY row has the wrong number of fields.
    SqlFieldCount => "sql_field_count",
    /// A COPY block without its `\.` terminator.
    SqlUnterminatedCopy => "sql_unterminated_copy",
    /// A raw carriage return in `db.sql` (PostgreSQL would end a row or the block there).
    SqlCarriageReturn => "sql_carriage_return",
    /// A backslash in COPY data not followed by `\ t n r`, or a `\N` that is not a whole field.
    SqlBadEscape => "sql_bad_escape",
    /// `\.` in COPY data other than as the whole terminator line.
    SqlEndMarker => "sql_end_marker",
    /// `db.sql` is not UTF-8, or holds a NUL byte.
    SqlInvalidText => "sql_invalid_text",
    /// A timestamp of the right shape that names no real instant (`2026-02-31`, `23:59:60`).
    InvalidTimestamp => "invalid_timestamp",
    /// An entry path with a bidirectional control or a line/paragraph separator, which can make
    /// a name display as another (`evil\u{202E}gnp.exe`).
    DeceptivePath => "deceptive_path",
    /// Two entry paths that differ only by case (`Readme`, `readme`): one file on common file
    /// systems.
    PathCaseTwin => "path_case_twin",
    /// Two entry paths that differ only by Unicode normalisation (`café` NFC and NFD).
    PathNormalizationTwin => "path_normalization_twin",
    /// An entry path that is a file where another entry needs a directory (`media/a`,
    /// `media/a/b`).
    PathFileDirConflict => "path_file_dir_conflict",
    /// Non-zero bytes in the padding that rounds an entry's data up to a tar block.
    NonzeroPadding => "nonzero_padding",
    /// A tar entry with the set-user-ID, set-group-ID or sticky bit (`tar -x` as root keeps them).
    UnsafeMode => "unsafe_mode",
    /// The sidecar is not a well-formed Sigstore bundle / DSSE / in-toto statement.
    SidecarInvalid => "sidecar_invalid",
    /// The sidecar's DSSE signature does not verify.
    SidecarSignatureInvalid => "sidecar_signature_invalid",
    /// The sidecar's subject digest is not the archive's SHA-256.
    SidecarDigestMismatch => "sidecar_digest_mismatch",
    /// A receipt is malformed.
    ReceiptInvalid => "receipt_invalid",
    /// A receipt's signature does not verify.
    ReceiptSignatureInvalid => "receipt_signature_invalid",
    /// A receipt is past its `expires`.
    ReceiptExpired => "receipt_expired",
    /// The trusted key set itself is malformed.
    KeySetInvalid => "key_set_invalid",
    /// Reading the input failed (only from the `Read` API).
    Io => "io",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the rule broken ([`Reason`]) and a human sentence saying where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The rule broken.
    pub reason: Reason,
    /// What and where, for people (not stable; compare `reason`, not this).
    pub detail: String,
}

impl VerifyError {
    /// Builds an error from a reason and a detail message.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        VerifyError {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for VerifyError {}
