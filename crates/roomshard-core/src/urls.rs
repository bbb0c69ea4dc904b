//! [`ProviderUrl`]: how a provider is named on the command line and in configuration.

use crate::error::{Error, Result};
use std::fmt;
use std::path::PathBuf;

/// Query parameters whose values are secrets: hidden by [`ProviderUrl::redacted`] like a password.
const SECRET_QUERY_PARTS: [&str; 6] = [
    "secret",
    "password",
    "token",
    "credential",
    "signature",
    "key_material",
];

/// A provider's URL (`sqlite:///var/lib/mesh/global.sqlite3`, `file:///srv/media`,
/// `local-keys:///etc/roomshard/keys`, later `postgres://…`, `s3://…`, `aws-kms://…`,
/// `vault://…`), in the object_store `parse_url` style: the scheme picks the provider, the rest
/// configures it.
///
/// It may carry secrets (a password, a token in the query), so `Debug` and `Display` show
/// [`redacted`](Self::redacted) and so does every error this type makes; only
/// [`expose`](Self::expose) gives the real string, for connecting.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderUrl {
    url: url::Url,
    /// Which setting it came from (`--shards`), for error messages.
    role: String,
}

impl ProviderUrl {
    /// Parses `text` given for `role` (e.g. `--shards`).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the role when `text` is not an absolute URL with a scheme; the
    /// message never repeats the text (it may hold a password).
    pub fn parse(text: &str, role: &str) -> Result<Self> {
        // `scheme:` without `//` parses too, but then nothing marks where a password would be,
        // so it could not be redacted: require the authority form.
        let scheme_len = text.find("://").unwrap_or(0);
        if scheme_len == 0
            || !text[..scheme_len]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(Error::invalid(
                role,
                "not a provider URL: expected scheme://…, e.g. sqlite:///var/lib/mesh/global.sqlite3",
            ));
        }
        let url = url::Url::parse(text).map_err(|e| {
            Error::invalid(
                role,
                format!("not a URL ({e}); expected e.g. sqlite:///var/lib/mesh/global.sqlite3"),
            )
        })?;
        Ok(ProviderUrl {
            url,
            role: role.to_string(),
        })
    }

    /// The scheme: which provider.
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    /// The setting it came from.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The URL, secrets included.
    pub fn expose(&self) -> &str {
        self.url.as_str()
    }

    /// The value of query parameter `name`, if given.
    pub fn query(&self, name: &str) -> Option<String> {
        self.url
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The local path of a path-only URL (`scheme:///absolute/path`): no host, no query.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a host, a relative path or a query.
    pub fn local_path(&self) -> Result<PathBuf> {
        self.local_path_with_query(&[])
    }

    /// [`local_path`](Self::local_path) for a URL that may carry the query parameters `known`
    /// (`local-keys:///dir?signing=ed25519`), read with [`query`](Self::query). Any other
    /// parameter is refused, so a misspelt setting is an error rather than silently ignored.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a host, a relative path or an unknown query parameter.
    pub fn local_path_with_query(&self, known: &[&str]) -> Result<PathBuf> {
        let bad = |why: &str| {
            Error::invalid(
                &self.role,
                format!(
                    "{}: {why}; write an absolute path as {}:///absolute/path",
                    self.redacted(),
                    self.scheme()
                ),
            )
        };
        if self.url.host_str().is_some_and(|h| !h.is_empty()) {
            return Err(bad("a host is not allowed (a relative path?)"));
        }
        if let Some((unknown, _)) = self
            .url
            .query_pairs()
            .find(|(k, _)| !known.contains(&k.as_ref()))
        {
            return Err(bad(&if known.is_empty() {
                "no query parameters are known for it".to_string()
            } else {
                format!(
                    "unknown query parameter `{unknown}` (known: {})",
                    known.join(", ")
                )
            }));
        }
        let path = percent_decode(self.url.path()).ok_or_else(|| bad("the path is not UTF-8"))?;
        if !path.starts_with('/') || path.len() < 2 {
            return Err(bad("the path is empty or relative"));
        }
        Ok(PathBuf::from(path))
    }

    /// The URL with its password and secret query values replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        if url.query().is_some() {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let secret = SECRET_QUERY_PARTS.iter().any(|s| lower.contains(s));
                    (
                        k.into_owned(),
                        if secret {
                            "***".to_string()
                        } else {
                            v.into_owned()
                        },
                    )
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url.to_string()
    }

    /// The error for a scheme no provider of this build handles, listing the ones it does.
    pub fn unknown_scheme(&self, known: &[&str]) -> Error {
        Error::invalid(
            &self.role,
            format!(
                "{}: no provider for scheme `{}` in this build (known: {})",
                self.redacted(),
                self.scheme(),
                known
                    .iter()
                    .map(|k| format!("{k}://"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    }
}

/// `%XX` decoding of a URL path; `None` if the result is not UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = path.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

impl fmt::Debug for ProviderUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProviderUrl")
            .field(&self.redacted())
            .finish()
    }
}

impl fmt::Display for ProviderUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_display_or_errors() {
        let u = ProviderUrl::parse(
            "postgres://mesh:hunter2@db1:5432/mesh?sslmode=require&auth_token=t0ps3cret",
            "--shards",
        )
        .unwrap();
        for shown in [
            format!("{u:?}"),
            u.to_string(),
            u.unknown_scheme(&["sqlite"]).to_string(),
            u.local_path().unwrap_err().to_string(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("t0ps3cret"), "{shown}");
            assert!(shown.contains("sslmode=require"), "{shown}");
        }
        assert!(u.expose().contains("hunter2"));
        assert_eq!(u.query("sslmode").as_deref(), Some("require"));
        let bad = ProviderUrl::parse("mesh:hunter2@db1/mesh", "--control").unwrap_err();
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
    }

    #[test]
    fn local_paths_are_absolute_and_decoded() {
        let u = ProviderUrl::parse("file:///srv/media%20store", "--media").unwrap();
        assert_eq!(u.local_path().unwrap(), PathBuf::from("/srv/media store"));
        assert_eq!(u.scheme(), "file");
        assert!(ProviderUrl::parse("sqlite:relative", "--shards").is_err());
        for relative in ["sqlite://relative/dir", "sqlite:///", "file:///x?y=1"] {
            let u = ProviderUrl::parse(relative, "--shards").unwrap();
            let err = u.local_path().unwrap_err().to_string();
            assert!(err.contains("--shards"), "{err}");
        }
        assert!(ProviderUrl::parse("/just/a/path", "--keys").is_err());
        let keys = ProviderUrl::parse("local-keys:///k?signing=ed25519", "--keys").unwrap();
        assert_eq!(
            keys.local_path_with_query(&["signing"]).unwrap(),
            PathBuf::from("/k")
        );
        let typo = ProviderUrl::parse("local-keys:///k?sigining=ed25519", "--keys").unwrap();
        let err = typo
            .local_path_with_query(&["signing"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown query parameter `sigining`"), "{err}");
    }
}
