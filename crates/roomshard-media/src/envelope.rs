//! The on-disk format of a client-side encrypted object (dedicated scopes).
//!
//! ```text
//! "RSME"            4 bytes  magic
//! version           1 byte   format version (1)
//! rest_len          u32 BE   length of the rest of the header (at most 64 KiB)
//! chunk_size        u32 BE   plaintext bytes per chunk (64 KiB when written by this crate)
//! nonce_prefix      7 bytes  random, per object (STREAM-BE32 nonce prefix)
//! content_type      u16 BE length + UTF-8
//! key_id            u16 BE length + UTF-8: the room key that wrapped the data key
//! wrapped_key       u16 BE length + bytes: the data key wrapped by the KeyManager
//! chunks …          AES-256-GCM STREAM-BE32 frames of chunk_size + 16 bytes; the last one
//!                   shorter (or equal) and encrypted with the "last chunk" flag
//! ```
//!
//! Why this shape:
//!
//! - **STREAM** (`aead::stream::EncryptorBE32`): every chunk's nonce is the object's random
//!   prefix, a 32-bit chunk counter and a last-chunk flag, so reordered, dropped, duplicated or
//!   truncated chunks fail authentication, and appending after the last chunk is caught because
//!   the last chunk's position is implied by the file size.
//! - **Plaintext length from the file size**: a streamed body may not declare its length, and the
//!   header is written before the body, so the length is not stored; it follows from the file size
//!   (`n` chunks ⇒ `n × 16` tag bytes) and is authenticated by the chunks themselves. Every object
//!   has at least one chunk (an empty object is one empty last chunk), so a file cut back to its
//!   header is detected too.
//! - **Associated data** of every chunk: the header *except* `key_id` and `wrapped_key`, so a
//!   lazy re-wrap after key rotation rewrites only those two fields and leaves the body untouched.
//!   The wrapped key authenticates itself (the KeyManager binds it to the room and the object key
//!   through the encryption context); a tampered content type or chunk size fails the first chunk.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::{KeyInit, Payload};
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use roomshard_core::{Error, Result};

/// Magic of an encrypted object.
pub(crate) const MAGIC: &[u8; 4] = b"RSME";
/// Format version written and read.
pub(crate) const VERSION: u8 = 1;
/// Bytes before the variable part of the header: magic, version, rest length.
pub(crate) const PREAMBLE_LEN: usize = 9;
/// Plaintext bytes per chunk.
pub(crate) const CHUNK_SIZE: usize = 64 * 1024;
/// AES-GCM tag length.
pub(crate) const TAG_LEN: usize = 16;
/// STREAM-BE32 nonce prefix length (12-byte nonce minus 4 counter bytes minus 1 flag byte).
pub(crate) const NONCE_PREFIX_LEN: usize = 7;
/// Longest header accepted when reading (guards allocations against a corrupt length).
const MAX_REST_LEN: usize = 64 * 1024;
/// Largest chunk size accepted when reading.
const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

/// The parsed header of an encrypted object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) chunk_size: u32,
    pub(crate) nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub(crate) content_type: Option<String>,
    pub(crate) key_id: String,
    pub(crate) wrapped_key: Vec<u8>,
}

fn corrupt(detail: impl Into<String>) -> Error {
    Error::corrupt("encrypted media object", detail)
}

fn push_field(out: &mut Vec<u8>, field: &[u8], what: &str) -> Result<()> {
    let len = u16::try_from(field.len())
        .map_err(|_| Error::invalid(what, format!("{} bytes; at most 65535", field.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

impl Header {
    /// The header's bytes, preamble included.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let mut rest = Vec::with_capacity(64 + self.wrapped_key.len());
        rest.extend_from_slice(&self.chunk_size.to_be_bytes());
        rest.extend_from_slice(&self.nonce_prefix);
        push_field(
            &mut rest,
            self.content_type.as_deref().unwrap_or("").as_bytes(),
            "content type",
        )?;
        push_field(&mut rest, self.key_id.as_bytes(), "key id")?;
        push_field(&mut rest, &self.wrapped_key, "wrapped data key")?;
        let mut out = Vec::with_capacity(PREAMBLE_LEN + rest.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(rest.len() as u32).to_be_bytes());
        out.extend_from_slice(&rest);
        Ok(out)
    }

    /// The associated data of every chunk: everything but the key id and the wrapped key.
    pub(crate) fn associated_data(&self) -> Vec<u8> {
        let ct = self.content_type.as_deref().unwrap_or("").as_bytes();
        let mut aad = Vec::with_capacity(32 + ct.len());
        aad.extend_from_slice(MAGIC);
        aad.push(VERSION);
        aad.extend_from_slice(&self.chunk_size.to_be_bytes());
        aad.extend_from_slice(&self.nonce_prefix);
        aad.extend_from_slice(&(ct.len() as u64).to_be_bytes());
        aad.extend_from_slice(ct);
        aad
    }

    /// Total header length (preamble + rest) given the preamble bytes, or `Corrupt`.
    pub(crate) fn total_len(preamble: &[u8]) -> Result<usize> {
        if preamble.len() < PREAMBLE_LEN || &preamble[..4] != MAGIC {
            return Err(corrupt("not an encrypted media object (bad magic)"));
        }
        if preamble[4] != VERSION {
            return Err(corrupt(format!("unknown format version {}", preamble[4])));
        }
        let rest = u32::from_be_bytes([preamble[5], preamble[6], preamble[7], preamble[8]]);
        let rest = rest as usize;
        if rest > MAX_REST_LEN {
            return Err(corrupt(format!("header of {rest} bytes is too long")));
        }
        Ok(PREAMBLE_LEN + rest)
    }

    /// Parses a whole header (`bytes` holds exactly [`total_len`](Self::total_len) bytes).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Header> {
        let total = Header::total_len(bytes)?;
        if bytes.len() != total {
            return Err(corrupt("header cut short"));
        }
        let mut rest = &bytes[PREAMBLE_LEN..];
        let need = |rest: &&[u8], n: usize| -> Result<()> {
            if rest.len() < n {
                Err(corrupt("header cut short"))
            } else {
                Ok(())
            }
        };
        need(&rest, 4 + NONCE_PREFIX_LEN)?;
        let chunk_size = rest.get_u32();
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(corrupt(format!("chunk size {chunk_size}")));
        }
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        rest.copy_to_slice(&mut nonce_prefix);
        let field = |rest: &mut &[u8]| -> Result<Vec<u8>> {
            need(rest, 2)?;
            let len = usize::from(rest.get_u16());
            need(rest, len)?;
            let value = rest[..len].to_vec();
            rest.advance(len);
            Ok(value)
        };
        let content_type = field(&mut rest)?;
        let key_id = field(&mut rest)?;
        let wrapped_key = field(&mut rest)?;
        if !rest.is_empty() {
            return Err(corrupt("trailing bytes in header"));
        }
        let text = |v: Vec<u8>, what: &str| {
            String::from_utf8(v).map_err(|_| corrupt(format!("{what} is not UTF-8")))
        };
        let content_type = text(content_type, "content type")?;
        Ok(Header {
            chunk_size,
            nonce_prefix,
            content_type: (!content_type.is_empty()).then_some(content_type),
            key_id: text(key_id, "key id")?,
            wrapped_key,
        })
    }
}

/// The chunk layout implied by the size of the encrypted body (file size minus header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Number of chunks (at least one).
    pub(crate) chunks: u64,
    /// Ciphertext length of the last chunk (tag included).
    pub(crate) last_frame_len: u64,
    /// Plaintext length of the object.
    pub(crate) plaintext_len: u64,
}

impl Layout {
    /// Derives the layout from the body's size, or `Corrupt` if no layout produces it.
    pub(crate) fn from_body_len(body_len: u64, chunk_size: u32) -> Result<Layout> {
        let frame = u64::from(chunk_size) + TAG_LEN as u64;
        let full = body_len / frame;
        let rem = body_len % frame;
        let (chunks, last_frame_len) = if rem == 0 {
            if full == 0 {
                return Err(corrupt("no chunks after the header (truncated)"));
            }
            (full, frame)
        } else if rem < TAG_LEN as u64 {
            return Err(corrupt(format!(
                "last chunk of {rem} bytes is shorter than a tag (truncated)"
            )));
        } else {
            (full + 1, rem)
        };
        Ok(Layout {
            chunks,
            last_frame_len,
            plaintext_len: body_len - chunks * TAG_LEN as u64,
        })
    }
}

/// Builds the AES-256-GCM cipher for a data key.
fn cipher(data_key: &[u8]) -> Result<Aes256Gcm> {
    Aes256Gcm::new_from_slice(data_key).map_err(|_| {
        Error::corrupt(
            "data key",
            format!("{} bytes; AES-256 needs 32", data_key.len()),
        )
    })
}

/// Encrypts a stream chunk by chunk. Feed plaintext with [`push`](Self::push); it returns the
/// ciphertext frames that became complete. [`finish`](Self::finish) encrypts the last chunk.
pub(crate) struct ChunkEncryptor {
    inner: EncryptorBE32<Aes256Gcm>,
    aad: Vec<u8>,
    pending: BytesMut,
    chunk_size: usize,
    plaintext_len: u64,
}

impl ChunkEncryptor {
    pub(crate) fn new(data_key: &[u8], header: &Header) -> Result<Self> {
        let inner = EncryptorBE32::from_aead(
            cipher(data_key)?,
            GenericArray::from_slice(&header.nonce_prefix),
        );
        Ok(ChunkEncryptor {
            inner,
            aad: header.associated_data(),
            pending: BytesMut::with_capacity(header.chunk_size as usize),
            chunk_size: header.chunk_size as usize,
            plaintext_len: 0,
        })
    }

    /// Adds plaintext; returns the frames completed by it (each `chunk_size + 16` bytes). A full
    /// chunk is only encrypted once more data arrives, because the last chunk is flagged.
    pub(crate) fn push(&mut self, mut data: Bytes) -> Result<Vec<Bytes>> {
        let mut frames = Vec::new();
        self.plaintext_len += data.len() as u64;
        while !data.is_empty() {
            if self.pending.len() == self.chunk_size {
                let frame = self
                    .inner
                    .encrypt_next(Payload {
                        msg: &self.pending,
                        aad: &self.aad,
                    })
                    .map_err(|_| corrupt("chunk encryption failed (too many chunks)"))?;
                frames.push(Bytes::from(frame));
                self.pending.clear();
            }
            let take = (self.chunk_size - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data.split_to(take));
        }
        Ok(frames)
    }

    /// Encrypts the last chunk (possibly empty); returns it and the plaintext length.
    pub(crate) fn finish(self) -> Result<(Bytes, u64)> {
        let frame = self
            .inner
            .encrypt_last(Payload {
                msg: &self.pending,
                aad: &self.aad,
            })
            .map_err(|_| corrupt("chunk encryption failed"))?;
        Ok((Bytes::from(frame), self.plaintext_len))
    }
}

/// A ciphertext source: the object's byte stream after the header.
type CipherStream = BoxStream<'static, Result<Bytes>>;

/// Decrypts an object's chunks as the caller pulls them.
pub(crate) struct ChunkDecryptor {
    inner: Option<DecryptorBE32<Aes256Gcm>>,
    aad: Vec<u8>,
    source: CipherStream,
    buf: BytesMut,
    layout: Layout,
    frame_len: usize,
    next_chunk: u64,
}

impl ChunkDecryptor {
    /// `leftover` holds ciphertext already read past the header; `source` yields the rest.
    pub(crate) fn new(
        data_key: &[u8],
        header: &Header,
        layout: Layout,
        leftover: BytesMut,
        source: CipherStream,
    ) -> Result<Self> {
        let inner = DecryptorBE32::from_aead(
            cipher(data_key)?,
            GenericArray::from_slice(&header.nonce_prefix),
        );
        Ok(ChunkDecryptor {
            inner: Some(inner),
            aad: header.associated_data(),
            source,
            buf: leftover,
            layout,
            frame_len: header.chunk_size as usize + TAG_LEN,
            next_chunk: 0,
        })
    }

    /// The next plaintext chunk, `None` after the last; tampering is [`Error::Corrupt`].
    pub(crate) async fn next_plain(&mut self) -> Result<Option<Bytes>> {
        if self.next_chunk >= self.layout.chunks {
            return Ok(None);
        }
        let last = self.next_chunk + 1 == self.layout.chunks;
        let want = if last {
            self.layout.last_frame_len as usize
        } else {
            self.frame_len
        };
        while self.buf.len() < want {
            match self.source.next().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk?),
                None => return Err(corrupt("object ends before its last chunk (truncated)")),
            }
        }
        let frame = self.buf.split_to(want);
        let payload = Payload {
            msg: &frame,
            aad: &self.aad,
        };
        let failed = || {
            corrupt(
                "a chunk does not authenticate (tampered, truncated, reordered or another \
                 object's data)",
            )
        };
        let plain = if last {
            let inner = self.inner.take().ok_or_else(failed)?;
            inner.decrypt_last(payload).map_err(|_| failed())?
        } else {
            let inner = self.inner.as_mut().ok_or_else(failed)?;
            inner.decrypt_next(payload).map_err(|_| failed())?
        };
        self.next_chunk += 1;
        if last {
            if !self.buf.is_empty() {
                return Err(corrupt("bytes after the last chunk"));
            }
            while let Some(extra) = self.source.next().await {
                if !extra?.is_empty() {
                    return Err(corrupt("bytes after the last chunk"));
                }
            }
        }
        Ok(Some(Bytes::from(plain)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            chunk_size: 4,
            nonce_prefix: [7; NONCE_PREFIX_LEN],
            content_type: Some("image/png".into()),
            key_id: "local:room/general".into(),
            wrapped_key: vec![1, 2, 3],
        }
    }

    #[test]
    fn header_round_trips_and_refuses_garbage() {
        let h = header();
        let bytes = h.encode().expect("encodes");
        assert_eq!(Header::total_len(&bytes).expect("len"), bytes.len());
        assert_eq!(Header::decode(&bytes).expect("decodes"), h);
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(Header::decode(&bad), Err(Error::Corrupt { .. })));
        assert!(matches!(
            Header::decode(&bytes[..bytes.len() - 1]),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn layout_follows_the_body_size() {
        let l = Layout::from_body_len(16, 4).expect("empty object");
        assert_eq!((l.chunks, l.plaintext_len), (1, 0));
        let l = Layout::from_body_len(20, 4).expect("one full chunk");
        assert_eq!((l.chunks, l.plaintext_len, l.last_frame_len), (1, 4, 20));
        let l = Layout::from_body_len(37, 4).expect("chunk + 1");
        assert_eq!((l.chunks, l.plaintext_len, l.last_frame_len), (2, 5, 17));
        assert!(Layout::from_body_len(0, 4).is_err());
        assert!(Layout::from_body_len(25, 4).is_err());
    }
}
