//! Arbitrary bytes as COPY data lines through the one COPY-text codec (`roomshard_verify::copy`,
//! docs/bundle-format.md §4.1), compared with a reference reading of the rules written here from
//! the spec alone, byte by byte and without the codec's fast paths.
//!
//! Checks, besides "never panics":
//! - `LineScan` (fed in several chunkings), `Utf8Check` and `parse_row` accept exactly the lines
//!   the reference accepts, and find the same terminator, field count and values;
//! - an accepted row is canonical: re-encoding its values with `push_text` (and `\N` for NULL)
//!   gives back the line's exact bytes, so one value list has one spelling.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomshard_verify::copy::{self, LineEnd, LineScan, Utf8Check};

/// What a line is, by the spec's table: the terminator, a row of values, or refused.
#[derive(Debug, PartialEq)]
enum Reading {
    Terminator,
    Row(Vec<Option<String>>),
    Refused,
}

fn reference(line: &[u8]) -> Reading {
    if line == b"\\." {
        return Reading::Terminator;
    }
    if line.iter().any(|&b| b == b'\r' || b == 0 || b == b'\n') {
        return Reading::Refused;
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Reading::Refused;
    };
    let mut values = Vec::new();
    for field in text.split('\t') {
        if field == "\\N" {
            values.push(None);
            continue;
        }
        let mut value = String::new();
        let mut chars = field.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                value.push(c);
                continue;
            }
            match chars.next() {
                Some('\\') => value.push('\\'),
                Some('t') => value.push('\t'),
                Some('n') => value.push('\n'),
                Some('r') => value.push('\r'),
                _ => return Reading::Refused,
            }
        }
        values.push(Some(value));
    }
    Reading::Row(values)
}

fn scanned(line: &[u8], chunk: usize) -> Option<LineEnd> {
    let mut scan = LineScan::new();
    for piece in line.chunks(chunk.max(1)) {
        scan.feed(piece).ok()?;
    }
    let end = scan.end().ok()?;
    let mut utf8 = Utf8Check::new();
    for piece in line.chunks(chunk.max(1)) {
        utf8.feed(piece).ok()?;
    }
    utf8.finish().ok()?;
    Some(end)
}

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let want = reference(line);
        let whole = scanned(line, line.len());
        for chunk in [1, 3, 64] {
            assert_eq!(scanned(line, chunk), whole, "chunking {chunk} changes the verdict on {line:?}");
        }
        let got = match (whole, copy::parse_row(line)) {
            (Some(LineEnd::Terminator), Err(_)) => Reading::Terminator,
            (Some(LineEnd::Row { fields }), Ok(values)) => {
                assert_eq!(fields as usize, values.len(), "field count of {line:?}");
                Reading::Row(values)
            }
            (None, Err(_)) => Reading::Refused,
            (scan, row) => panic!("scanner {scan:?} and parse_row {row:?} disagree on {line:?}"),
        };
        assert_eq!(got, want, "codec and reference disagree on {line:?}");
        if let Reading::Row(values) = &got {
            let mut again = String::new();
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    again.push('\t');
                }
                match v {
                    None => again.push_str(copy::NULL),
                    Some(text) => copy::push_text(&mut again, text),
                }
            }
            assert_eq!(again.as_bytes(), line, "an accepted row is not canonical");
        }
    }
});
