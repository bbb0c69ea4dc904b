//! The one archive parser: zstd frames → ustar entries, pushed chunk by chunk.
//!
//! The verifier checks a bundle through it, and import's second pass (which re-hashes every
//! entry against the verified manifest while loading it) reads the archive through it again, so
//! there is no second tar or zstd reader whose idea of where an entry starts or ends could differ
//! from what was verified. It keeps the framing rules of docs/bundle-format.md §1: strict ustar,
//! regular files only, zero padding, nothing but zero bytes or zstd frames after the
//! end-of-archive marker, and the decompression limits of [`VerifyLimits`].
//!
//! ```
//! use roomshard_verify::archive::{ArchiveReader, EntrySink};
//! use roomshard_verify::{VerifyError, VerifyLimits};
//!
//! /// Lists entry names and sizes.
//! #[derive(Default)]
//! struct Names(Vec<(String, u64)>);
//! impl EntrySink for Names {
//!     fn begin_entry(&mut self, path: String, size: u64) -> Result<(), VerifyError> {
//!         self.0.push((path, size));
//!         Ok(())
//!     }
//!     fn entry_data(&mut self, _data: &[u8]) -> Result<(), VerifyError> { Ok(()) }
//!     fn end_entry(&mut self) -> Result<(), VerifyError> { Ok(()) }
//! }
//!
//! # fn archive() -> Vec<u8> { zstd::encode_all(&[0u8; 1024][..], 3).unwrap() }
//! let mut names = Names::default();
//! let mut reader = ArchiveReader::new(VerifyLimits::default());
//! reader.read_all(&archive()[..], &mut names)?;
//! assert!(names.0.is_empty()); // an empty archive: just the end-of-archive marker
//! # Ok::<(), VerifyError>(())
//! ```

use crate::error::{Reason, VerifyError};
use crate::tar::TarReader;
use crate::verifier::VerifyLimits;
use std::io::Read;
use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

/// Receives the entries of an archive as they stream past.
///
/// Every method may refuse with a [`VerifyError`], which stops the reader: the error comes back
/// from [`ArchiveReader::update`] unchanged. A sink that fails for its own reasons (a full disk)
/// keeps its error and returns any `VerifyError`, then reports its own.
pub trait EntrySink {
    /// A regular-file entry with a valid path (docs/bundle-format.md §2) starts; `size` data
    /// bytes follow, in one or more [`entry_data`](EntrySink::entry_data) calls.
    fn begin_entry(&mut self, path: String, size: u64) -> Result<(), VerifyError>;
    /// The next piece of the current entry's data (never empty).
    fn entry_data(&mut self, data: &[u8]) -> Result<(), VerifyError>;
    /// The current entry's data is complete.
    fn end_entry(&mut self) -> Result<(), VerifyError>;
}

/// Size of the reused decompression output buffer.
const OUTPUT_BUFFER_BYTES: usize = 128 * 1024;

/// The compressed bytes to give the decoder next, from the hint its last call returned: the
/// rest of the unit it is in. zstd's hint adds the 3-byte header of the following block to the
/// rest of a block's content (and a hint of 4 or more is never anything else but content, a
/// checksum or a header still to load, all of which this only splits); 0 (a frame ended) means
/// one byte, so the next frame header is read alone too.
fn next_input_bytes(hint: usize) -> usize {
    const BLOCK_HEADER_BYTES: usize = 3;
    if hint > BLOCK_HEADER_BYTES {
        hint - BLOCK_HEADER_BYTES
    } else {
        hint.max(1)
    }
}

/// Where the decoder is between and inside zstd frames.
#[derive(Clone, Copy, Debug, Default)]
struct FrameState {
    /// Compressed bytes consumed of the frame in progress (0 between frames).
    consumed: u64,
    /// Its first bytes, to tell a cut-off frame from non-zstd bytes at the end.
    head: [u8; 4],
    /// Whether it began after the tar end-of-archive marker.
    after_archive_end: bool,
}

impl FrameState {
    /// Records `bytes` as consumed by the frame in progress.
    fn consume(&mut self, bytes: &[u8], archive_ended: bool) {
        if bytes.is_empty() {
            return;
        }
        if self.consumed == 0 {
            self.after_archive_end = archive_ended;
        }
        for (i, &b) in bytes.iter().enumerate().take(4) {
            if let Some(slot) = usize::try_from(self.consumed)
                .ok()
                .and_then(|at| at.checked_add(i))
                .and_then(|at| self.head.get_mut(at))
            {
                *slot = b;
            }
        }
        self.consumed += bytes.len() as u64;
    }

    /// Whether the frame in progress starts like a zstd or skippable frame.
    fn head_is_frame_magic(&self) -> bool {
        let n = usize::try_from(self.consumed).unwrap_or(4).min(4);
        let zstd_magic = [0x28, 0xb5, 0x2f, 0xfd];
        let skippable =
            self.head[0] & 0xf0 == 0x50 && self.head[1..n] == [0x2a, 0x4d, 0x18][..n - 1];
        self.head[..n] == zstd_magic[..n] || skippable
    }
}

/// The push-driven archive parser: feed compressed bytes with [`update`](ArchiveReader::update)
/// in any chunking (the sink sees the same calls whatever the chunking), then
/// [`finish`](ArchiveReader::finish). Memory is bounded by one output buffer and one tar header,
/// whatever the archive's size.
pub struct ArchiveReader {
    limits: VerifyLimits,
    /// `None` only if the zstd context could not be created ([`ArchiveReader::setup_error`]).
    decoder: Option<Decoder<'static>>,
    setup_error: Option<VerifyError>,
    output: Vec<u8>,
    /// Compressed bytes consumed by the decoder.
    compressed: u64,
    /// Decompressed bytes handed to the tar reader.
    decompressed: u64,
    frame: FrameState,
    /// Most compressed bytes to give the decoder in its next call (see `decompress`).
    next_input: usize,
    /// The last call filled the output buffer, so the decoder may hold more output.
    flush_pending: bool,
    tar: TarReader,
}

impl ArchiveReader {
    /// A reader enforcing `limits` (window size, total and ratio of decompressed bytes, entries).
    pub fn new(limits: VerifyLimits) -> Self {
        let mut setup_error = None;
        let decoder = match Decoder::new().and_then(|mut d| {
            d.set_parameter(DParameter::WindowLogMax(limits.max_window_log))?;
            Ok(d)
        }) {
            Ok(d) => Some(d),
            Err(e) => {
                setup_error = Some(VerifyError::new(
                    Reason::MalformedArchive,
                    format!("zstd: cannot set up a decoder: {e}"),
                ));
                None
            }
        };
        ArchiveReader {
            limits,
            decoder,
            setup_error,
            output: vec![0; OUTPUT_BUFFER_BYTES],
            compressed: 0,
            decompressed: 0,
            frame: FrameState::default(),
            next_input: 1,
            flush_pending: false,
            tar: TarReader::new(limits.max_entries),
        }
    }

    /// Why the reader cannot work at all (the zstd context could not be created), if so.
    pub fn setup_error(&self) -> Option<&VerifyError> {
        self.setup_error.as_ref()
    }

    /// Compressed bytes consumed so far.
    pub fn compressed_bytes(&self) -> u64 {
        self.compressed
    }

    /// Decompressed (tar) bytes processed so far.
    pub fn decompressed_bytes(&self) -> u64 {
        self.decompressed
    }

    /// Consumes the next chunk of the compressed archive, calling `sink` for the entries it
    /// completes. After an error the reader's state is undefined: stop feeding it.
    pub fn update<S: EntrySink>(&mut self, chunk: &[u8], sink: &mut S) -> Result<(), VerifyError> {
        if let Some(e) = &self.setup_error {
            return Err(e.clone());
        }
        self.decompress(chunk, sink)
    }

    /// Ends the input: anything but a complete archive (a frame or the tar stream cut off) is an
    /// error; bytes after the last frame that are not zstd are `trailing_garbage`.
    pub fn finish(&self) -> Result<(), VerifyError> {
        if let Some(e) = &self.setup_error {
            return Err(e.clone());
        }
        if self.frame.consumed > 0 {
            return Err(
                if self.frame.after_archive_end && !self.frame.head_is_frame_magic() {
                    VerifyError::new(
                        Reason::TrailingGarbage,
                        "bytes after the last zstd frame are not zstd",
                    )
                } else {
                    VerifyError::new(Reason::Truncated, "input ends inside a zstd frame")
                },
            );
        }
        self.tar.finish()
    }

    /// Feeds everything `reader` gives, then [`finish`](ArchiveReader::finish)es. A read error
    /// is reason `io`.
    pub fn read_all<R: Read, S: EntrySink>(
        &mut self,
        mut reader: R,
        sink: &mut S,
    ) -> Result<(), VerifyError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return self.finish(),
                Ok(n) => self.update(&buf[..n], sink)?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(VerifyError::new(
                        Reason::Io,
                        format!("reading archive: {e}"),
                    ))
                }
            }
        }
    }

    /// Runs `chunk` through the decoder and the decompressed bytes through the tar reader.
    ///
    /// The decoder is given at most the rest of the zstd unit (frame header, block header, block
    /// content, checksum) it is in, never the start of the next one, and a full output buffer is
    /// drained before more input goes in. `ZSTD_decompressStream` drops the output of units it
    /// decoded in a call that then fails, so without this a bundle with a tar defect in one block
    /// and a corrupt next block would be refused for the tar defect when fed in small chunks and
    /// for the corrupt block when fed whole: the reason would depend on the chunking (found by the
    /// `verify_archive` fuzz target). This way every chunking hands the tar reader the same bytes
    /// before each decoding step, and the first defect in stream order is the one reported.
    fn decompress<S: EntrySink>(&mut self, chunk: &[u8], sink: &mut S) -> Result<(), VerifyError> {
        let decoder = match &mut self.decoder {
            Some(d) => d,
            None => return Ok(()),
        };
        let limits = self.limits;
        let mut pos = 0;
        loop {
            let take = if self.flush_pending {
                0
            } else {
                self.next_input.min(chunk.len() - pos)
            };
            if take == 0 && !self.flush_pending {
                return Ok(());
            }
            let slice = &chunk[pos..pos + take];
            let mut input = InBuffer::around(slice);
            let mut output = OutBuffer::around(&mut self.output[..]);
            let run = decoder.run(&mut input, &mut output);
            let produced = output.pos();
            let consumed = &slice[..input.pos()];
            let hint = match run {
                Ok(hint) => hint,
                Err(e) => {
                    let after_end = if self.frame.consumed == 0 {
                        self.tar.is_ended()
                    } else {
                        self.frame.after_archive_end
                    };
                    return Err(if after_end {
                        VerifyError::new(
                            Reason::TrailingGarbage,
                            format!(
                                "bytes after the end of the archive at compressed offset {} are not zstd: {e}",
                                self.compressed
                            ),
                        )
                    } else {
                        VerifyError::new(
                            Reason::MalformedArchive,
                            format!("zstd: {e} (compressed offset {})", self.compressed),
                        )
                    });
                }
            };
            pos += consumed.len();
            self.frame.consume(consumed, self.tar.is_ended());
            self.compressed += consumed.len() as u64;
            self.next_input = next_input_bytes(hint);
            if hint == 0 {
                self.frame = FrameState::default();
            }
            self.flush_pending = produced == self.output.len();
            if produced > 0 {
                let total = self.decompressed + produced as u64;
                if total > limits.max_total_bytes {
                    return Err(VerifyError::new(
                        Reason::TooLarge,
                        format!("more than {} decompressed bytes", limits.max_total_bytes),
                    ));
                }
                if total > limits.ratio_grace_bytes
                    && total > self.compressed.saturating_mul(limits.max_ratio)
                {
                    return Err(VerifyError::new(
                        Reason::CompressionRatio,
                        format!(
                            "{total} decompressed bytes from {} compressed exceed the ratio {}",
                            self.compressed, limits.max_ratio
                        ),
                    ));
                }
                self.decompressed = total;
                self.tar.feed(&self.output[..produced], sink)?;
            }
        }
    }
}
