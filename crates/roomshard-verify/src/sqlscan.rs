//! Streaming scan of `db.sql`: records the skeleton (lines outside COPY data) and per-block row
//! and field counts without buffering rows.
//!
//! The skeleton is every line that is not a COPY data row, each with its `\n`, including the
//! `COPY … FROM stdin;` header and the `\.` terminator; the verifier compares it byte for byte
//! with the text the manifest implies (docs/bundle-format.md §4). Rows are only counted: per row
//! the number of fields (tabs + 1), per block the smallest and largest of those.

use crate::copy::{self, CopyFault, LineEnd, LineScan, Utf8Check};

/// One COPY block as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CopyBlock {
    /// The table named by the `COPY "<table>"` header (unquoted).
    pub(crate) table: String,
    /// Data rows.
    pub(crate) rows: u64,
    /// Fewest fields in a row (meaningless when `rows` is 0).
    pub(crate) min_fields: u64,
    /// Most fields in a row (meaningless when `rows` is 0).
    pub(crate) max_fields: u64,
}

/// How the scan ended, when it could not record a complete skeleton.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanProblem {
    /// The skeleton grew past its limit; scanning stopped.
    SkeletonTooLarge,
    /// The input ended inside a COPY block.
    UnterminatedCopy,
    /// COPY data broke the codec's rules ([`crate::copy`]) on this 1-based line of `db.sql`;
    /// scanning stopped.
    Data(CopyFault, u64),
}

/// The streaming `db.sql` scanner.
pub(crate) struct SqlScan {
    max_skeleton: usize,
    skeleton: Vec<u8>,
    /// Start in `skeleton` of the skeleton line being collected.
    line_start: usize,
    in_copy: bool,
    /// The COPY data line being scanned.
    line: LineScan,
    /// Lines of `db.sql` ended so far.
    lines: u64,
    utf8: Utf8Check,
    blocks: Vec<CopyBlock>,
    problem: Option<ScanProblem>,
}

const COPY_PREFIX: &[u8] = b"COPY \"";
const COPY_SUFFIX: &[u8] = b" FROM stdin;\n";

impl SqlScan {
    /// A scanner keeping at most `max_skeleton` bytes of skeleton.
    pub(crate) fn new(max_skeleton: u64) -> Self {
        SqlScan {
            max_skeleton: usize::try_from(max_skeleton).unwrap_or(usize::MAX),
            skeleton: Vec::new(),
            line_start: 0,
            in_copy: false,
            line: LineScan::new(),
            lines: 0,
            utf8: Utf8Check::new(),
            blocks: Vec::new(),
            problem: None,
        }
    }

    /// Scans the next piece of `db.sql`.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.problem.is_none() {
            let line = self.lines + 1;
            let used = if self.in_copy {
                self.feed_copy(data)
            } else {
                self.feed_skeleton(data)
            };
            if self.problem.is_none() {
                if let Err(fault) = self.utf8.feed(&data[..used]) {
                    self.problem = Some(ScanProblem::Data(fault, line));
                }
            }
            data = &data[used..];
        }
    }

    /// Takes skeleton bytes up to and including the next newline; returns how many it used.
    fn feed_skeleton(&mut self, data: &[u8]) -> usize {
        let (used, line_done) = match find_newline(data) {
            Some(i) => (i + 1, true),
            None => (data.len(), false),
        };
        if self.skeleton.len() + used > self.max_skeleton {
            self.problem = Some(ScanProblem::SkeletonTooLarge);
            self.skeleton = Vec::new();
            return data.len();
        }
        self.skeleton.extend_from_slice(&data[..used]);
        if line_done {
            let line = &self.skeleton[self.line_start..];
            if line.starts_with(COPY_PREFIX) && line.ends_with(COPY_SUFFIX) {
                self.blocks.push(CopyBlock {
                    table: quoted_identifier(&line[COPY_PREFIX.len() - 1..]),
                    rows: 0,
                    min_fields: u64::MAX,
                    max_fields: 0,
                });
                self.in_copy = true;
            }
            self.line_start = self.skeleton.len();
            self.lines += 1;
        }
        used
    }

    /// Checks and counts COPY data up to and including the next newline; returns how many bytes
    /// it used.
    fn feed_copy(&mut self, data: &[u8]) -> usize {
        let newline = find_newline(data);
        let line_len = newline.unwrap_or(data.len());
        if let Err(fault) = self.line.feed(&data[..line_len]) {
            self.problem = Some(ScanProblem::Data(fault, self.lines + 1));
            return data.len();
        }
        match newline {
            Some(i) => {
                self.end_data_line();
                i + 1
            }
            None => data.len(),
        }
    }

    /// A COPY data line (or the terminator) ended.
    fn end_data_line(&mut self) {
        self.lines += 1;
        match self.line.end() {
            Err(fault) => self.problem = Some(ScanProblem::Data(fault, self.lines)),
            Ok(LineEnd::Terminator) => {
                self.in_copy = false;
                let end = copy::END_LINE.as_bytes();
                if self.skeleton.len() + end.len() > self.max_skeleton {
                    self.problem = Some(ScanProblem::SkeletonTooLarge);
                    self.skeleton = Vec::new();
                } else {
                    self.skeleton.extend_from_slice(end);
                    self.line_start = self.skeleton.len();
                }
            }
            Ok(LineEnd::Row { fields }) => {
                if let Some(block) = self.blocks.last_mut() {
                    block.rows += 1;
                    block.min_fields = block.min_fields.min(fields);
                    block.max_fields = block.max_fields.max(fields);
                }
            }
        }
    }

    /// Ends the input: the skeleton, the blocks, and the problem if the scan is incomplete.
    pub(crate) fn finish(self) -> (Vec<u8>, Vec<CopyBlock>, Option<ScanProblem>) {
        let utf8 = self
            .utf8
            .finish()
            .err()
            .map(|fault| ScanProblem::Data(fault, self.lines + 1));
        let problem = self.problem.or(utf8).or(if self.in_copy {
            Some(ScanProblem::UnterminatedCopy)
        } else {
            None
        });
        (self.skeleton, self.blocks, problem)
    }
}

/// The position of the first `\n` in `data`.
///
/// This is the hot loop of the `db.sql` scan (rows are long). It tests 64-byte blocks with a
/// branch-free fold the compiler vectorises, and looks at single bytes only in the one block that
/// holds the newline.
fn find_newline(data: &[u8]) -> Option<usize> {
    const BLOCK: usize = 64;
    let mut offset = 0;
    for block in data.chunks_exact(BLOCK) {
        if block.iter().fold(false, |found, &b| found | (b == b'\n')) {
            break;
        }
        offset += BLOCK;
    }
    data[offset..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| offset + i)
}

/// The identifier of a `"…"`-quoted name at the start of `s` (`""` stands for `"`); what follows
/// the closing quote is ignored, and an unclosed name yields what was read.
fn quoted_identifier(s: &[u8]) -> String {
    let mut out = Vec::new();
    let mut i = 1;
    while i < s.len() {
        if s[i] == b'"' {
            if s.get(i + 1) == Some(&b'"') {
                out.push(b'"');
                i += 2;
                continue;
            }
            break;
        }
        out.push(s[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQL: &[u8] = b"-- c\nCOPY \"t\" (\"a\", \"b\") FROM stdin;\n1\tx\n2\t\\N\n\\.\nCOPY \"u\" (\"a\") FROM stdin;\n\\.\n";

    fn scan(chunk: usize, sql: &[u8]) -> (Vec<u8>, Vec<CopyBlock>, Option<ScanProblem>) {
        let mut s = SqlScan::new(1 << 20);
        for c in sql.chunks(chunk) {
            s.feed(c);
        }
        s.finish()
    }

    #[test]
    fn counts_rows_and_fields_in_any_chunking() {
        for chunk in [1, 2, 3, 5, 1000] {
            let (skeleton, blocks, problem) = scan(chunk, SQL);
            assert_eq!(problem, None);
            assert_eq!(
                skeleton,
                b"-- c\nCOPY \"t\" (\"a\", \"b\") FROM stdin;\n\\.\nCOPY \"u\" (\"a\") FROM stdin;\n\\.\n"
            );
            assert_eq!(blocks.len(), 2);
            assert_eq!(
                (
                    blocks[0].table.as_str(),
                    blocks[0].rows,
                    blocks[0].min_fields,
                    blocks[0].max_fields
                ),
                ("t", 2, 2, 2)
            );
            assert_eq!((blocks[1].table.as_str(), blocks[1].rows), ("u", 0));
        }
    }

    #[test]
    fn unterminated_and_oversized() {
        let (_, _, problem) = scan(4, b"COPY \"t\" (\"a\") FROM stdin;\n1\n");
        assert_eq!(problem, Some(ScanProblem::UnterminatedCopy));
        let (_, _, problem) = scan(4, b"COPY \"t\" (\"a\") FROM stdin;\n1");
        assert_eq!(problem, Some(ScanProblem::UnterminatedCopy));
        let mut s = SqlScan::new(8);
        s.feed(b"0123456789\n");
        assert_eq!(s.finish().2, Some(ScanProblem::SkeletonTooLarge));
    }

    #[test]
    fn finds_newlines_anywhere() {
        let mut data = vec![b'x'; 300];
        assert_eq!(find_newline(&data), None);
        for at in [0, 5, 63, 64, 65, 127, 128, 200, 299] {
            data[at] = b'\n';
            assert_eq!(find_newline(&data), Some(at));
            assert_eq!(find_newline(&data[..at]), None);
            data[at] = b'x';
        }
    }

    #[test]
    fn copy_data_outside_the_codec_subset_stops_the_scan_with_its_line() {
        let cases: [(&[u8], CopyFault); 5] = [
            (b"\\.\r\nDROP TABLE x;\n\\.\n", CopyFault::CarriageReturn),
            (b"a\\.\n\\.\n", CopyFault::EndMarker),
            (b"a\\\nb\n\\.\n", CopyFault::BadEscape),
            (b"\xff\n\\.\n", CopyFault::NotUtf8),
            (b"a\0\n\\.\n", CopyFault::Nul),
        ];
        for (data, fault) in cases {
            let mut sql = b"-- c\nCOPY \"t\" (\"a\") FROM stdin;\n".to_vec();
            sql.extend_from_slice(data);
            for chunk in [1, 3, 1000] {
                assert_eq!(
                    scan(chunk, &sql).2,
                    Some(ScanProblem::Data(fault, 3)),
                    "{data:?}"
                );
            }
        }
    }

    #[test]
    fn a_line_starting_with_the_terminator_and_more_text_is_refused_not_counted() {
        // psql and the server disagree on such a line, so it is neither a row nor the end.
        let (_, _, problem) = scan(1, b"COPY \"t\" (\"a\") FROM stdin;\n\\.x\n\\.\n");
        assert_eq!(problem, Some(ScanProblem::Data(CopyFault::EndMarker, 2)));
    }
}
