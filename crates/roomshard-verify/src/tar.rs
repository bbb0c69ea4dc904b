//! A push-driven, strict ustar reader (regular files only), written here because the `tar` crate
//! is pull-only (`Read`) and the browser pushes chunks.
//!
//! It accepts exactly what docs/bundle-format.md §1 allows: 512-byte blocks, valid header
//! checksums, octal sizes, regular files, and an end-of-archive marker (two zero blocks) followed
//! only by zero padding. Headers carry the POSIX magic `ustar\0` + `00`; the GNU magic
//! `ustar  \0` is accepted too so that a GNU long-name record is reported as `name_too_long`
//! rather than as a broken archive (in GNU headers the `prefix` area holds other fields, so the
//! path is the `name` field alone). Entry data is handed to an [`EntrySink`] slice by slice as it
//! arrives; nothing but the current 512-byte header is buffered.

use crate::archive::EntrySink;
use crate::error::{Reason, VerifyError};
use crate::format::validate_path;

const BLOCK: usize = 512;

/// Where the reader is in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Collecting a header block into `block`.
    Header,
    /// Inside an entry's data.
    Data { remaining: u64 },
    /// Skipping the zero padding that rounds an entry's data up to a block.
    Padding { remaining: usize },
    /// One zero block seen; the next block must be zero too.
    SecondZero { seen: usize },
    /// End-of-archive marker seen; only zero bytes may follow.
    End,
}

/// The push-driven ustar reader.
pub(crate) struct TarReader {
    state: State,
    block: [u8; BLOCK],
    block_len: usize,
    entries: u64,
    max_entries: u64,
    /// Decompressed bytes consumed so far (for error details).
    offset: u64,
}

impl TarReader {
    /// A reader refusing more than `max_entries` entries.
    pub(crate) fn new(max_entries: u64) -> Self {
        TarReader {
            state: State::Header,
            block: [0; BLOCK],
            block_len: 0,
            entries: 0,
            max_entries,
            offset: 0,
        }
    }

    /// Whether the end-of-archive marker has been seen.
    pub(crate) fn is_ended(&self) -> bool {
        self.state == State::End
    }

    /// Consumes the next piece of the tar stream, calling `sink` for entries.
    pub(crate) fn feed<S: EntrySink>(
        &mut self,
        mut data: &[u8],
        sink: &mut S,
    ) -> Result<(), VerifyError> {
        while !data.is_empty() {
            let used = match self.state {
                State::Header => {
                    let n = (BLOCK - self.block_len).min(data.len());
                    self.block[self.block_len..self.block_len + n].copy_from_slice(&data[..n]);
                    self.block_len += n;
                    if self.block_len == BLOCK {
                        self.block_len = 0;
                        self.header_complete(sink)?;
                    }
                    n
                }
                State::Data { remaining } => {
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    sink.entry_data(&data[..n])?;
                    let remaining = remaining - n as u64;
                    if remaining == 0 {
                        sink.end_entry()?;
                        self.state = padding_after(self.offset + n as u64);
                    } else {
                        self.state = State::Data { remaining };
                    }
                    n
                }
                State::Padding { remaining } => {
                    let n = remaining.min(data.len());
                    if data[..n].iter().any(|&b| b != 0) {
                        return Err(VerifyError::new(
                            Reason::NonzeroPadding,
                            format!(
                                "tar: the padding before offset {} holds non-zero bytes (nothing \
                                 signs them)",
                                self.offset + remaining as u64
                            ),
                        ));
                    }
                    self.state = if n == remaining {
                        State::Header
                    } else {
                        State::Padding {
                            remaining: remaining - n,
                        }
                    };
                    n
                }
                State::SecondZero { seen } => {
                    let n = (BLOCK - seen).min(data.len());
                    if data[..n].iter().any(|&b| b != 0) {
                        return Err(VerifyError::new(
                            Reason::MalformedArchive,
                            format!(
                                "tar: a lone zero block at offset {} is followed by data",
                                self.offset - seen as u64 - BLOCK as u64
                            ),
                        ));
                    }
                    self.state = if seen + n == BLOCK {
                        State::End
                    } else {
                        State::SecondZero { seen: seen + n }
                    };
                    n
                }
                State::End => {
                    if let Some(i) = data.iter().position(|&b| b != 0) {
                        return Err(VerifyError::new(
                            Reason::TrailingGarbage,
                            format!(
                                "tar: non-zero byte at offset {} after the end-of-archive marker",
                                self.offset + i as u64
                            ),
                        ));
                    }
                    data.len()
                }
            };
            self.offset += used as u64;
            data = &data[used..];
        }
        Ok(())
    }

    /// Ends the stream: anything but a complete archive is `truncated`.
    pub(crate) fn finish(&self) -> Result<(), VerifyError> {
        let place = match self.state {
            State::End => return Ok(()),
            State::Header if self.block_len == 0 => "before the end-of-archive marker",
            State::Header => "inside a header",
            State::Data { .. } => "inside an entry's data",
            State::Padding { .. } => "inside an entry's padding",
            State::SecondZero { .. } => "inside the end-of-archive marker",
        };
        Err(VerifyError::new(
            Reason::Truncated,
            format!("tar stream ends {place} (offset {})", self.offset),
        ))
    }

    /// Handles a complete header block in `self.block`.
    fn header_complete<S: EntrySink>(&mut self, sink: &mut S) -> Result<(), VerifyError> {
        if self.block.iter().all(|&b| b == 0) {
            self.state = State::SecondZero { seen: 0 };
            return Ok(());
        }
        let header = parse_header(&self.block)?;
        self.entries += 1;
        if self.entries > self.max_entries {
            return Err(VerifyError::new(
                Reason::TooManyEntries,
                format!("tar: more than {} entries", self.max_entries),
            ));
        }
        sink.begin_entry(header.path, header.size)?;
        if header.size == 0 {
            sink.end_entry()?;
            self.state = State::Header;
        } else {
            self.state = State::Data {
                remaining: header.size,
            };
        }
        Ok(())
    }
}

/// The padding state after an entry's data ended at stream offset `end`.
fn padding_after(end: u64) -> State {
    let rest = (end % BLOCK as u64) as usize;
    if rest == 0 {
        State::Header
    } else {
        State::Padding {
            remaining: BLOCK - rest,
        }
    }
}

/// What the verifier needs from a header.
#[derive(Debug)]
struct Header {
    path: String,
    size: u64,
}

fn malformed(detail: impl Into<String>) -> VerifyError {
    VerifyError::new(Reason::MalformedArchive, detail)
}

/// Parses and checks one header block: checksum, magic, type, size, path.
fn parse_header(block: &[u8; BLOCK]) -> Result<Header, VerifyError> {
    let stored = parse_octal(&block[148..156])
        .ok_or_else(|| malformed("tar: header checksum field is not octal"))?;
    let computed: u64 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|&b| u64::from(b))
        .sum::<u64>()
        + 8 * u64::from(b' ');
    if stored != computed {
        return Err(malformed(format!(
            "tar: header checksum {stored:o} does not match the header ({computed:o})"
        )));
    }
    let gnu = &block[257..265] == b"ustar  \0";
    let posix = &block[257..263] == b"ustar\0" && &block[263..265] == b"00";
    if !(gnu || posix) {
        return Err(malformed("tar: header lacks the ustar magic"));
    }
    let name = field(&block[..100]);
    let typeflag = block[156];
    let kind = |what: &str| format!("tar: entry {:?} is a {what}", String::from_utf8_lossy(name));
    match typeflag {
        b'0' | 0 => {}
        b'1' => return Err(VerifyError::new(Reason::Hardlink, kind("hard link"))),
        b'2' => return Err(VerifyError::new(Reason::Symlink, kind("symbolic link"))),
        b'3' | b'4' | b'6' => {
            return Err(VerifyError::new(
                Reason::SpecialFile,
                kind("device or FIFO"),
            ))
        }
        b'L' | b'K' => {
            return Err(VerifyError::new(
                Reason::NameTooLong,
                kind("GNU long-name record"),
            ))
        }
        other => {
            return Err(VerifyError::new(
                Reason::UnsupportedEntryType,
                kind(&format!("non-regular entry (typeflag {:?})", other as char)),
            ))
        }
    }
    // Set-user-ID, set-group-ID and sticky bits: `tar -x` as root restores them (and the
    // owner), so a media file could become a set-uid program. Writers use 0644.
    let mode_field = &block[100..108];
    let mode = if mode_field.iter().all(|&b| b == 0) {
        Some(0)
    } else {
        parse_octal(mode_field)
    };
    let mode = mode.ok_or_else(|| {
        malformed(format!(
            "tar: entry {:?} has a mode field that is not octal",
            String::from_utf8_lossy(name)
        ))
    })?;
    if mode & !0o777 != 0 {
        return Err(VerifyError::new(
            Reason::UnsafeMode,
            format!(
                "tar: entry {:?} has mode {mode:o} (set-uid, set-gid or sticky)",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    if block[124] & 0x80 != 0 {
        return Err(malformed(format!(
            "tar: entry {:?} has a base-256 size",
            String::from_utf8_lossy(name)
        )));
    }
    let size = parse_octal(&block[124..136]).ok_or_else(|| {
        malformed(format!(
            "tar: entry {:?} has a size field that is not octal",
            String::from_utf8_lossy(name)
        ))
    })?;
    let prefix = if gnu {
        &[][..]
    } else {
        field(&block[345..500])
    };
    let mut raw = Vec::with_capacity(prefix.len() + 1 + name.len());
    if !prefix.is_empty() {
        raw.extend_from_slice(prefix);
        raw.push(b'/');
    }
    raw.extend_from_slice(name);
    let path = String::from_utf8(raw).map_err(|e| {
        VerifyError::new(
            Reason::NonUtf8Name,
            format!(
                "tar: entry path {:?} is not UTF-8",
                String::from_utf8_lossy(e.as_bytes())
            ),
        )
    })?;
    validate_path(&path)?;
    Ok(Header { path, size })
}

/// A NUL-terminated (or full-width) header string field.
fn field(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(end) => &bytes[..end],
        None => bytes,
    }
}

/// An octal numeric field: optional leading spaces, at least one octal digit, then only NULs or
/// spaces.
fn parse_octal(bytes: &[u8]) -> Option<u64> {
    let start = bytes.iter().position(|&b| b != b' ')?;
    let digits = &bytes[start..];
    let end = digits
        .iter()
        .position(|&b| !(b'0'..=b'7').contains(&b))
        .unwrap_or(digits.len());
    if end == 0 || digits[end..].iter().any(|&b| b != 0 && b != b' ') {
        return None;
    }
    digits[..end].iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(8)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields() {
        assert_eq!(parse_octal(b"00000000012\0"), Some(10));
        assert_eq!(parse_octal(b"     12 \0"), Some(10));
        assert_eq!(parse_octal(b"777777777777"), Some(0o777777777777));
        assert_eq!(parse_octal(b"\0\0\0"), None);
        assert_eq!(parse_octal(b"0000008\0"), None);
        assert_eq!(parse_octal(b"12 3\0"), None);
    }
}
