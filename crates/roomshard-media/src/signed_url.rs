//! HMAC-SHA256 signed GET URLs for the local store.
//!
//! A URL reads `<base>/media/<shared|rooms>/<room>/<key>?exp=<unix secs>&sig=<hex>`; the key's
//! segments are percent-encoded (everything but `A-Z a-z 0-9 - . _ ~`). The signature covers a
//! canonical message naming the scope kind, the room, the *decoded* key and the expiry, one per
//! line (none of them can contain a newline: room ids and object keys are validated), under a
//! 32-byte secret that never leaves the store.

use hmac::{Hmac, Mac};
use roomshard_core::{Error, Location, ObjectKey, Result, RoomId, Scope};
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// Length of the URL-signing secret.
pub(crate) const SECRET_LEN: usize = 32;

/// Path prefix of every signed URL.
const MEDIA_PREFIX: &str = "/media/";

/// The URL-signing secret. `Debug` never shows it.
pub(crate) struct UrlSigner {
    secret: Zeroizing<[u8; SECRET_LEN]>,
}

impl fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UrlSigner(<secret redacted>)")
    }
}

fn scope_kind(scope: &Scope) -> &'static str {
    match scope {
        Scope::Pooled(_) => "shared",
        Scope::Dedicated(..) => "rooms",
    }
}

/// What a valid signed URL grants a GET of ([`LocalMediaStore::verify_signed_url`]).
///
/// [`LocalMediaStore::verify_signed_url`]: crate::LocalMediaStore::verify_signed_url
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedObject {
    /// The room.
    pub room: RoomId,
    /// Its dedicated bucket (`true`) or its prefix of the shared bucket.
    pub dedicated: bool,
    /// The object.
    pub key: ObjectKey,
}

impl SignedObject {
    /// The scope to read from: the shared prefix, or the dedicated bucket at `location` (the
    /// room's placement's); `None` for a dedicated grant without a location.
    pub fn scope(&self, location: Option<Location>) -> Option<Scope> {
        match (self.dedicated, location) {
            (false, _) => Some(Scope::Pooled(self.room.clone())),
            (true, Some(at)) => Some(Scope::Dedicated(self.room.clone(), at)),
            (true, None) => None,
        }
    }
}

fn refused(why: impl fmt::Display) -> Error {
    Error::PermissionDenied {
        what: format!("signed URL refused: {why}"),
    }
}

impl UrlSigner {
    pub(crate) fn new(secret: Zeroizing<[u8; SECRET_LEN]>) -> Self {
        UrlSigner { secret }
    }

    fn mac(&self, scope: &Scope, key: &ObjectKey, exp: u64) -> Result<HmacSha256> {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(self.secret.as_ref())
            .map_err(|_| Error::corrupt("URL secret", "unusable as an HMAC key"))?;
        let message = format!(
            "roomshard-media-url-v1\n{}\n{}\n{}\n{exp}",
            scope_kind(scope),
            scope.room(),
            key
        );
        mac.update(message.as_bytes());
        Ok(mac)
    }

    /// The path and query of a URL for `key` in `scope` expiring at `exp` (Unix seconds).
    pub(crate) fn sign(&self, scope: &Scope, key: &ObjectKey, exp: u64) -> Result<String> {
        let sig = hex::encode(self.mac(scope, key, exp)?.finalize().into_bytes());
        let encoded_key: Vec<String> = key.as_str().split('/').map(encode_segment).collect();
        Ok(format!(
            "{MEDIA_PREFIX}{}/{}/{}?exp={exp}&sig={sig}",
            scope_kind(scope),
            scope.room(),
            encoded_key.join("/")
        ))
    }

    /// Checks a path-and-query issued by [`sign`](Self::sign) at `now_unix`.
    pub(crate) fn verify(&self, path_and_query: &str, now_unix: u64) -> Result<SignedObject> {
        let (path, query) = path_and_query
            .split_once('?')
            .ok_or_else(|| refused("no exp/sig query"))?;
        let rest = path
            .strip_prefix(MEDIA_PREFIX)
            .ok_or_else(|| refused("path does not start with /media/"))?;
        let (kind, rest) = rest
            .split_once('/')
            .ok_or_else(|| refused("no room in path"))?;
        let (room, key) = rest
            .split_once('/')
            .ok_or_else(|| refused("no object key in path"))?;
        let room = RoomId::new(room).map_err(|_| refused("malformed room"))?;
        // The MAC covers kind and room only; any dedicated location signs alike.
        let scope = match kind {
            "shared" => Scope::Pooled(room),
            "rooms" => Scope::Dedicated(room, Location::default()),
            _ => return Err(refused("unknown scope (use shared or rooms)")),
        };
        let segments: Option<Vec<String>> = key.split('/').map(decode_segment).collect();
        let key = segments
            .and_then(|s| ObjectKey::new(s.join("/")).ok())
            .ok_or_else(|| refused("malformed object key"))?;
        let (mut exp, mut sig) = (None, None);
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "exp" => &mut exp,
                "sig" => &mut sig,
                _ => return Err(refused(format!("unexpected query parameter {name:?}"))),
            };
            if slot.replace(value).is_some() {
                return Err(refused(format!("query parameter {name:?} given twice")));
            }
        }
        let exp_text = exp.ok_or_else(|| refused("no exp"))?;
        let sig = sig.ok_or_else(|| refused("no sig"))?;
        let exp: u64 = exp_text
            .parse()
            .ok()
            .filter(|_| exp_text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| refused("malformed exp"))?;
        let sig = hex::decode(sig).map_err(|_| refused("malformed sig"))?;
        self.mac(&scope, &key, exp)?
            .verify_slice(&sig)
            .map_err(|_| {
                refused("signature does not match (tampered scope, room, key or expiry)")
            })?;
        if now_unix >= exp {
            return Err(refused(format!("expired at {exp} (now {now_unix})")));
        }
        Ok(SignedObject {
            dedicated: matches!(scope, Scope::Dedicated(..)),
            room: scope.room().clone(),
            key,
        })
    }
}

/// Percent-encodes one key segment (everything but RFC 3986 unreserved characters).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes one percent-encoded segment; `None` if malformed or not UTF-8.
pub(crate) fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip() {
        for s in ["a", "a b", "ü%#?&=", "x.y-z_~"] {
            assert_eq!(decode_segment(&encode_segment(s)).as_deref(), Some(s));
        }
        assert_eq!(decode_segment("%4"), None);
        assert_eq!(decode_segment("%zz"), None);
    }

    #[test]
    fn sign_then_verify() {
        let signer = UrlSigner::new(Zeroizing::new([9; SECRET_LEN]));
        let room = RoomId::new("general").expect("room");
        let key = ObjectKey::new("att/a b?.png").expect("key");
        let url = signer
            .sign(
                &Scope::Dedicated(room.clone(), Location::default()),
                &key,
                100,
            )
            .expect("signs");
        let granted = signer.verify(&url, 50).expect("valid");
        assert_eq!(
            granted,
            SignedObject {
                room,
                dedicated: true,
                key
            }
        );
        assert!(matches!(
            signer.verify(&url, 100),
            Err(Error::PermissionDenied { .. })
        ));
        assert!(!format!("{signer:?}").contains("09"));
    }
}
