//! Media entry names (docs/bundle-format.md §2.1): how a room's object keys become `media/…`
//! paths that every file system extracts faithfully, and back.
//!
//! Object stores allow keys that `tar -x` cannot reproduce on common file systems: keys that
//! differ only by case (`Readme`, `readme`: one file on macOS and Windows), only by Unicode
//! normalisation (`café` NFC and NFD: one file on APFS), or a key that is also another key's
//! directory (`a` and `a/b`). A verifier refuses such entry sets ([`PathSet`]); a writer maps
//! every key to an entry name that avoids them ([`media_paths`]) and an importer maps names back
//! ([`media_key`]):
//!
//! - the name is the key, percent-encoded where needed: `%` is always written `%25`, so decoding
//!   (`%` + two lowercase hex digits → that byte) is exact and the encoding is one-to-one;
//! - always escaped: control characters, backslash, the characters of
//!   [`crate::format::is_deceptive_char`], a `.` that starts a path component, and a `/` at
//!   the start or end of the key or before another `/` (so no empty, `.` or `..` component);
//! - keys with a case or normalisation twin in the room get every upper-case letter and non-ASCII
//!   character escaped, which leaves their names lower-case ASCII and distinct;
//! - a `/` in a key is escaped where the part before it is (up to case and normalisation)
//!   another key, so that key stays a file and no directory of the same name appears.
//!
//! Ordinary keys (`att/0001-diagram.png`) are their own names.

use std::collections::{BTreeMap, BTreeSet};

use unicode_normalization::UnicodeNormalization;

use crate::error::{Reason, VerifyError};
use crate::format::{is_deceptive_char, MEDIA_PREFIX};

/// A path as case-insensitive, normalisation-insensitive file systems see it: NFC, then lower
/// case.
pub fn fold(path: &str) -> String {
    path.nfc().collect::<String>().to_lowercase()
}

/// The entry paths of one archive, checked as they arrive for names that would extract as one
/// file, or as a file and a directory at once. Memory: one folded copy of each path.
#[derive(Clone, Debug, Default)]
pub struct PathSet {
    /// Folded path → the path as given.
    files: BTreeMap<String, String>,
    /// Folded directory prefixes of the paths so far.
    dirs: BTreeSet<String>,
}

impl PathSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `path`, or says why it cannot sit beside the paths already added:
    /// [`Reason::PathNormalizationTwin`], [`Reason::PathCaseTwin`] or
    /// [`Reason::PathFileDirConflict`]. (An exact repeat is the caller's `duplicate_entry`.)
    pub fn insert(&mut self, path: &str) -> Result<(), VerifyError> {
        let folded = fold(path);
        if let Some(other) = self.files.get(&folded) {
            if other != path {
                let (reason, how) = if other.nfc().eq(path.nfc()) {
                    (
                        Reason::PathNormalizationTwin,
                        "differs only by Unicode normalisation",
                    )
                } else {
                    (Reason::PathCaseTwin, "differs only by case")
                };
                return Err(VerifyError::new(
                    reason,
                    format!(
                        "entry path {path:?} {how} from {other:?}: they extract as one file on common file systems"
                    ),
                ));
            }
            return Ok(());
        }
        if self.dirs.contains(&folded) {
            return Err(conflict(
                path,
                "is a file where an earlier entry has a directory",
            ));
        }
        for (i, _) in folded.match_indices('/') {
            let dir = &folded[..i];
            if let Some(file) = self.files.get(dir) {
                return Err(conflict(
                    path,
                    &format!("needs a directory where {file:?} is a file"),
                ));
            }
            self.dirs.insert(dir.to_string());
        }
        self.files.insert(folded, path.to_string());
        Ok(())
    }
}

fn conflict(path: &str, why: &str) -> VerifyError {
    VerifyError::new(
        Reason::PathFileDirConflict,
        format!("entry path {path:?} {why}"),
    )
}

/// The entry path (`media/…`) of each key, in the order given, by the rules of the module docs.
/// The result extracts faithfully on any file system the rules consider; it may still be too
/// long for an archive, which the writer checks.
pub fn media_paths(keys: &[&str]) -> Vec<String> {
    let mut twins: BTreeMap<String, usize> = BTreeMap::new();
    for k in keys {
        *twins.entry(fold(k)).or_insert(0) += 1;
    }
    let files: BTreeSet<&String> = twins.keys().collect();
    keys.iter()
        .map(|key| {
            let escape_letters = twins.get(&fold(key)).map_or(false, |&n| n > 1);
            let split_at = |i: usize| files.contains(&fold(&key[..i]));
            format!("{MEDIA_PREFIX}{}", encode(key, escape_letters, split_at))
        })
        .collect()
}

fn encode(key: &str, escape_letters: bool, is_file_before: impl Fn(usize) -> bool) -> String {
    let bytes = key.as_bytes();
    let mut out = String::with_capacity(key.len());
    let mut component_start = true;
    for (i, c) in key.char_indices() {
        let escape = match c {
            '/' => {
                let literal =
                    i > 0 && i + 1 < bytes.len() && bytes[i + 1] != b'/' && !is_file_before(i);
                !literal
            }
            '.' => component_start,
            '%' | '\\' => true,
            c if c.is_control() || is_deceptive_char(c) => true,
            c if escape_letters => c.is_ascii_uppercase() || !c.is_ascii(),
            _ => false,
        };
        if escape {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push('%');
                out.push_str(&crate::format::hex(&[b]));
            }
        } else {
            out.push(c);
        }
        component_start = c == '/' && !escape;
    }
    out
}

/// The object key of a `media/…` entry path: the name after the prefix, percent-decoded. Refuses
/// (`invalid_path`) a `%` not followed by two lowercase hex digits, or bytes that decode to no
/// UTF-8 key.
pub fn media_key(path: &str) -> Result<String, VerifyError> {
    let bad =
        |why: &str| VerifyError::new(Reason::InvalidPath, format!("entry path {path:?}: {why}"));
    let name = path
        .strip_prefix(MEDIA_PREFIX)
        .ok_or_else(|| bad("is not under media/"))?;
    let raw = name.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'%' {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let hex = |b: Option<&u8>| match b {
            Some(&d @ b'0'..=b'9') => Some(d - b'0'),
            Some(&d @ b'a'..=b'f') => Some(d - b'a' + 10),
            _ => None,
        };
        match (hex(raw.get(i + 1)), hex(raw.get(i + 2))) {
            (Some(hi), Some(lo)) => out.push(hi * 16 + lo),
            _ => return Err(bad("has a % not followed by two lowercase hex digits")),
        }
        i += 3;
    }
    String::from_utf8(out).map_err(|_| bad("decodes to bytes that are not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(keys: &[&str]) -> Vec<String> {
        let out = media_paths(keys);
        let mut set = PathSet::new();
        for (key, path) in keys.iter().zip(&out) {
            crate::format::validate_path(path).expect("valid entry path");
            set.insert(path).expect("no twins, no file/dir conflicts");
            assert_eq!(media_key(path).expect("decodes"), *key, "{path}");
        }
        out
    }

    #[test]
    fn ordinary_keys_are_their_own_names() {
        assert_eq!(
            paths(&["att/0001-diagram.png", "Photo 1.JPG", "Grüße/写真.jpg"]),
            [
                "media/att/0001-diagram.png",
                "media/Photo 1.JPG",
                "media/Grüße/写真.jpg"
            ]
        );
    }

    #[test]
    fn twins_and_conflicts_get_distinct_portable_names() {
        let nfc = "caf\u{e9}";
        let nfd = "cafe\u{301}";
        assert_eq!(
            paths(&["Readme", "readme", "README"]),
            ["media/%52eadme", "media/readme", "media/%52%45%41%44%4d%45"]
        );
        assert_eq!(paths(&[nfc, nfd]), ["media/caf%c3%a9", "media/cafe%cc%81"]);
        assert_eq!(paths(&["a", "a/b"]), ["media/a", "media/a%2fb"]);
        assert_eq!(
            paths(&["A", "a/b", "a/b/c"]),
            ["media/A", "media/a%2fb", "media/a%2fb%2fc"]
        );
    }

    #[test]
    fn hostile_keys_are_escaped_not_refused() {
        assert_eq!(
            paths(&[
                "/abs",
                "a//b/",
                "./x/../y",
                "100%",
                "evil\u{202e}gnp.exe",
                "tab\there\\",
                ".hidden"
            ]),
            [
                "media/%2fabs",
                "media/a%2f/b%2f",
                "media/%2e/x/%2e./y",
                "media/100%25",
                "media/evil%e2%80%aegnp.exe",
                "media/tab%09here%5c",
                "media/%2ehidden"
            ]
        );
    }

    #[test]
    fn the_set_refuses_twins_and_conflicts_in_either_order() {
        let cases: [(&str, &str, Reason); 4] = [
            ("media/Readme", "media/readme", Reason::PathCaseTwin),
            (
                "media/caf\u{e9}",
                "media/cafe\u{301}",
                Reason::PathNormalizationTwin,
            ),
            ("media/a", "media/a/b", Reason::PathFileDirConflict),
            ("media/A", "media/a/b", Reason::PathFileDirConflict),
        ];
        for (a, b, reason) in cases {
            for (first, second) in [(a, b), (b, a)] {
                let mut set = PathSet::new();
                set.insert(first).expect("first is fine alone");
                assert_eq!(set.insert(second).map_err(|e| e.reason), Err(reason));
            }
        }
        let mut set = PathSet::new();
        for p in ["media/A/x", "media/a/y", "media/b"] {
            set.insert(p).expect("directories may share a folded name");
        }
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for p in [
            "media/50%",
            "media/%4",
            "media/%4A",
            "media/%zz",
            "media/%ff",
        ] {
            assert_eq!(
                media_key(p).map_err(|e| e.reason),
                Err(Reason::InvalidPath),
                "{p}"
            );
        }
    }
}
