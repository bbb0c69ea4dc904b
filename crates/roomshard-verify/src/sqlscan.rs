//! Streaming scan of `db.sql`: records the skeleton (lines outside COPY data) and per-block row
//! and field counts without buffering rows.
//!
//! The skeleton is every line that is not a COPY data row, each with its `\n`, including the
//! `COPY … FROM stdin;` header and the `\.` terminator; the verifier compares it byte for byte
//! with the text the manifest implies (docs/bundle-format.md §4). Rows are only counted: per row
//! the number of fields (tabs + 1), per block the smallest and largest of those.

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
}

/// The streaming `db.sql` scanner.
pub(crate) struct SqlScan {
    max_skeleton: usize,
    skeleton: Vec<u8>,
    /// Start in `skeleton` of the skeleton line being collected.
    line_start: usize,
    in_copy: bool,
    /// Tabs so far in the current data line.
    tabs: u64,
    /// Length so far of the current data line (saturating; only `2` matters).
    line_len: usize,
    /// First two bytes of the current data line.
    head: [u8; 2],
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
            tabs: 0,
            line_len: 0,
            head: [0; 2],
            blocks: Vec::new(),
            problem: None,
        }
    }

    /// Scans the next piece of `db.sql`.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.problem.is_none() {
            let used = if self.in_copy {
                self.feed_copy(data)
            } else {
                self.feed_skeleton(data)
            };
            data = &data[used..];
        }
    }

    /// Takes skeleton bytes up to and including the next newline; returns how many it used.
    fn feed_skeleton(&mut self, data: &[u8]) -> usize {
        let (used, line_done) = match scan_line(data).0 {
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
        }
        used
    }

    /// Counts COPY data up to and including the next newline; returns how many bytes it used.
    fn feed_copy(&mut self, data: &[u8]) -> usize {
        let (newline, tabs) = scan_line(data);
        let line_len = newline.unwrap_or(data.len());
        for (k, &b) in data[..line_len]
            .iter()
            .take(2usize.saturating_sub(self.line_len))
            .enumerate()
        {
            self.head[self.line_len + k] = b;
        }
        self.line_len = self.line_len.saturating_add(line_len);
        self.tabs += tabs;
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
        if self.line_len == 2 && &self.head == b"\\." {
            self.in_copy = false;
            let end = crate::sql::COPY_END_LINE.as_bytes();
            if self.skeleton.len() + end.len() > self.max_skeleton {
                self.problem = Some(ScanProblem::SkeletonTooLarge);
                self.skeleton = Vec::new();
            } else {
                self.skeleton.extend_from_slice(end);
                self.line_start = self.skeleton.len();
            }
        } else if let Some(block) = self.blocks.last_mut() {
            let fields = self.tabs + 1;
            block.rows += 1;
            block.min_fields = block.min_fields.min(fields);
            block.max_fields = block.max_fields.max(fields);
        }
        self.tabs = 0;
        self.line_len = 0;
    }

    /// Ends the input: the skeleton, the blocks, and the problem if the scan is incomplete.
    pub(crate) fn finish(self) -> (Vec<u8>, Vec<CopyBlock>, Option<ScanProblem>) {
        let problem = self.problem.or(if self.in_copy {
            Some(ScanProblem::UnterminatedCopy)
        } else {
            None
        });
        (self.skeleton, self.blocks, problem)
    }
}

/// Scans `data` up to its first `\n`: the newline's position, if any, and the tabs before it.
///
/// This is the hot loop of the `db.sql` scan (rows are long). It works on 64-byte blocks with
/// branch-free tests the compiler vectorises, and looks at single bytes only in the one block
/// that holds the newline.
fn scan_line(data: &[u8]) -> (Option<usize>, u64) {
    const BLOCK: usize = 64;
    let mut tabs = 0u64;
    let mut blocks = data.chunks_exact(BLOCK);
    let mut offset = 0;
    for block in &mut blocks {
        if let Ok(block) = <&[u8; BLOCK]>::try_from(block) {
            let newline = block.iter().fold(false, |found, &b| found | (b == b'\n'));
            if newline {
                break;
            }
            let block_tabs = block
                .iter()
                .fold(0u8, |n, &b| n.wrapping_add(u8::from(b == b'\t')));
            tabs += u64::from(block_tabs);
        }
        offset += BLOCK;
    }
    let rest = &data[offset..];
    let end = rest.iter().position(|&b| b == b'\n');
    let line = &rest[..end.unwrap_or(rest.len())];
    tabs += line.iter().filter(|&&b| b == b'\t').count() as u64;
    (end.map(|i| offset + i), tabs)
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
    fn finds_newlines_and_counts_tabs_anywhere() {
        let mut data: Vec<u8> = (0..300)
            .map(|i| if i % 7 == 0 { b'\t' } else { b'x' })
            .collect();
        let tabs_before = |end: usize| (0..end).filter(|i| i % 7 == 0).count() as u64;
        assert_eq!(scan_line(&data), (None, tabs_before(300)));
        for at in [0, 5, 63, 64, 65, 127, 128, 200, 299] {
            let saved = data[at];
            data[at] = b'\n';
            assert_eq!(scan_line(&data), (Some(at), tabs_before(at)));
            assert_eq!(scan_line(&data[..at]), (None, tabs_before(at)));
            data[at] = saved;
        }
    }

    #[test]
    fn a_row_spelling_the_terminator_with_more_text_is_data() {
        let (_, blocks, problem) = scan(1, b"COPY \"t\" (\"a\") FROM stdin;\n\\.x\n\\.\n");
        assert_eq!(problem, None);
        assert_eq!(blocks[0].rows, 1);
    }
}
