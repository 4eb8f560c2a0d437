//! Numeric CSV: one example per line, comma-separated (tab-separated when the first line has tabs
//! and no commas), an optional header line of column names.

use super::idx::open_maybe_gz;
use super::{Dataset, ReadOptions, Values};
use crate::error::{Error, Result};
use std::io::{BufRead, Read};
use std::path::Path;

/// The fields of `line`, each trimmed of spaces and of double quotes around it.
fn split_fields(line: &str, delim: char) -> impl Iterator<Item = &str> {
    // `delim` is ',' or a tab: one byte, which never occurs inside a longer UTF-8 character.
    let d = delim as u8;
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let r = rest?;
        let (field, next) = match r.as_bytes().iter().position(|&b| b == d) {
            Some(i) => (&r[..i], Some(&r[i + 1..])),
            None => (r, None),
        };
        rest = next;
        Some(clean(field))
    })
}

/// `field` without spaces and double quotes around it; at once when it starts and ends with
/// neither (nor any other byte that could be white space).
fn clean(field: &str) -> &str {
    let plain = |c: u8| c > b' ' && c < 0x7f && c != b'"';
    match field.as_bytes() {
        [a, .., b] | [a @ b] if plain(*a) && plain(*b) => field,
        _ => field.trim().trim_matches('"').trim(),
    }
}

/// `field` as an f32, exactly as `str::parse` reads it, sooner for plain decimals: a sign,
/// digits and a point with at most 24 bits of digits and at most 10 after the point are one
/// division of two exact floats, which IEEE rounds correctly (Clinger's fast path). Anything
/// else (an exponent, more digits, inf, text) goes to `str::parse`.
fn number(field: &str) -> std::result::Result<f32, std::num::ParseFloatError> {
    const POW10: [f32; 11] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
    let b = field.as_bytes();
    let (negative, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let mut m: u64 = 0;
    let mut seen = 0usize;
    let mut point: Option<usize> = None;
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' if seen < 19 => {
                m = m * 10 + (c - b'0') as u64;
                seen += 1;
            }
            b'.' if point.is_none() => point = Some(i),
            _ => return field.parse(),
        }
    }
    let after = point.map_or(0, |p| digits.len() - p - 1);
    if seen == 0 || m > 1 << 24 || after >= POW10.len() {
        return field.parse();
    }
    let v = m as f32 / POW10[after];
    Ok(if negative { -v } else { v })
}

/// Whether `line` holds nothing but white space.
fn blank(line: &str) -> bool {
    match line.as_bytes().first() {
        Some(&c) if c > b' ' && c < 0x7f => false,
        _ => line.trim().is_empty(),
    }
}

/// Reads a numeric CSV file. Every row must have the header's (or the first row's) number of
/// fields, and every field must be a finite number.
pub fn read_csv(path: &Path, opts: &ReadOptions) -> Result<Dataset> {
    let (r, len) = open_maybe_gz(path)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, r);
    // Before reading it all, estimate the memory the values will take from the first lines,
    // and refuse a file the machine cannot hold.
    let mut values: Vec<f32> = Vec::new();
    if let Some(len) = len {
        let head = reader.fill_buf().map_err(|e| Error::io(path, "reading", e))?;
        let fields = head.iter().filter(|&&b| b == b',' || b == b'\n' || b == b'\t').count().max(1);
        let estimate = len / (head.len().max(1) as u64 / fields as u64).max(1) * 4;
        crate::memory::check_fits(path, estimate, "the values of this CSV file")?;
        values.reserve(estimate as usize / 4);
    }
    read_csv_from(path, reader, opts, values, super::io_threads(), BLOCK)
}

/// Reads CSV text held in memory; `name` stands for the file in errors.
pub fn read_csv_bytes(name: &str, bytes: &[u8], opts: &ReadOptions) -> Result<Dataset> {
    read_csv_from(Path::new(name), bytes, opts, Vec::new(), super::io_threads(), BLOCK)
}

/// The line of the CSV file `path` that holds data row `row` (from 0): blank lines, and the
/// first line that is not blank when the file has a header, hold no row. For error messages:
/// None when the file cannot be read again or has fewer rows.
pub(crate) fn line_of_row(path: &Path, header: bool, row: usize) -> Option<usize> {
    let (r, _) = open_maybe_gz(path).ok()?;
    let mut header_left = header;
    let mut seen = 0;
    for (i, line) in std::io::BufReader::new(r).split(b'\n').enumerate() {
        let line = line.ok()?;
        if std::str::from_utf8(&line).is_ok_and(blank) {
            continue;
        }
        if header_left {
            header_left = false;
            continue;
        }
        if seen == row {
            return Some(i + 1);
        }
        seen += 1;
    }
    None
}

/// Bytes of text parsed at a time: cut at a line's end and split between the threads.
const BLOCK: u64 = 8 << 20;
/// The least text worth a thread of its own.
const MIN_PART: usize = 64 << 10;

/// Reads CSV text from `reader` about `block` bytes at a time, parsing each on `threads`
/// threads; `values` may come reserved.
fn read_csv_from(path: &Path, mut reader: impl BufRead, opts: &ReadOptions, mut values: Vec<f32>, threads: usize, block_bytes: u64) -> Result<Dataset> {
    let mut head = Head { cols: None, first_line_no: 0, names: None, delim: ',' };
    let mut rows = 0usize;
    let mut seen_first = false;
    // Lines before the block in hand.
    let mut lines_before = 0usize;
    let mut block: Vec<u8> = Vec::new();
    let mut parts: Vec<Vec<f32>> = Vec::new();
    loop {
        block.clear();
        let io = |e| Error::io(path, "reading", e);
        (&mut reader).take(block_bytes).read_to_end(&mut block).map_err(io)?;
        if block.is_empty() {
            break;
        }
        if block.last() != Some(&b'\n') {
            reader.read_until(b'\n', &mut block).map_err(io)?;
        }
        // Text up to a line that is not UTF-8, whose error comes after any in the lines before.
        let (text, not_utf8) = utf8(path, &block, lines_before);
        let mut body = text;
        let mut body_line = lines_before + 1;
        if !seen_first {
            // The first line that is not blank: the delimiter, and a header or the first row.
            while !body.is_empty() {
                let (line, rest) = body.split_once('\n').unwrap_or((body, ""));
                body = rest;
                let line_no = body_line;
                body_line += 1;
                let line = line.trim_end_matches('\r');
                if blank(line) {
                    continue;
                }
                seen_first = true;
                if line.contains('\t') && !line.contains(',') {
                    head.delim = '\t';
                }
                let is_header = match opts.header {
                    Some(h) => h,
                    None => split_fields(line, head.delim).any(|f| f.parse::<f32>().is_err()),
                };
                if is_header {
                    let n: Vec<String> = split_fields(line, head.delim).map(String::from).collect();
                    head.cols = Some(n.len());
                    head.first_line_no = line_no;
                    head.names = Some(n);
                } else {
                    rows += parse_lines(path, line, line_no, &mut head, &mut values)?;
                }
                break;
            }
        }
        // The rest of the block in up to `threads` parts of whole lines, parsed side by side
        // (the columns are known by now), each part's values in order after the last.
        let cuts = cut_lines(body, threads);
        if cuts.len() <= 2 {
            rows += parse_lines(path, body, body_line, &mut head, &mut values)?;
        } else {
            let mut starts = vec![body_line];
            for w in cuts.windows(2).take(cuts.len() - 2) {
                let s = &body[w[0]..w[1]];
                starts.push(starts.last().unwrap() + s.bytes().filter(|&b| b == b'\n').count());
            }
            parts.resize(cuts.len() - 1, Vec::new());
            let head_ref = &head;
            let results: Vec<Result<usize>> = std::thread::scope(|scope| {
                let jobs: Vec<_> = parts
                    .iter_mut()
                    .zip(cuts.windows(2))
                    .zip(&starts)
                    .map(|((out, w), &first)| {
                        let mut h = head_ref.clone();
                        let part = &body[w[0]..w[1]];
                        scope.spawn(move || {
                            out.clear();
                            parse_lines(path, part, first, &mut h, out)
                        })
                    })
                    .collect();
                jobs.into_iter().map(|j| j.join().expect("a CSV parsing thread panicked")).collect()
            });
            for (r, part) in results.into_iter().zip(&parts) {
                rows += r?;
                values.extend_from_slice(part);
            }
        }
        if let Some(e) = not_utf8 {
            return Err(e);
        }
        lines_before += text.bytes().filter(|&b| b == b'\n').count();
    }
    Ok(Dataset {
        rows,
        cols: head.cols.unwrap_or(0),
        values: Values::F32(values),
        image_shape: None,
        column_names: head.names,
        source: path.to_path_buf(),
    })
}

/// What the first line decided.
#[derive(Clone)]
struct Head {
    /// The fields of every row (from the header or the first row).
    cols: Option<usize>,
    /// The line that set `cols`.
    first_line_no: usize,
    names: Option<Vec<String>>,
    delim: char,
}

/// The whole lines of `bytes` that are UTF-8 text, up to the first that is not, and then the
/// error naming that line (counted from `lines_before` + 1).
fn utf8<'a>(path: &Path, bytes: &'a [u8], lines_before: usize) -> (&'a str, Option<Error>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let cut = good.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            let line_no = lines_before + 1 + good[..cut].iter().filter(|&&b| b == b'\n').count();
            let text = std::str::from_utf8(&bytes[..cut]).expect("valid up to there");
            (text, Some(Error::input_at(path, format!("line {line_no}"), "not valid UTF-8 text")))
        }
    }
}

/// Byte offsets that cut `text` into at most `parts` pieces of whole lines of at least
/// `MIN_PART` bytes each: 0, the cuts, and `text.len()`.
fn cut_lines(text: &str, parts: usize) -> Vec<usize> {
    let parts = parts.min(text.len() / MIN_PART).max(1);
    let mut cuts = vec![0];
    for i in 1..parts {
        let at = text.len() * i / parts;
        let from = *cuts.last().unwrap();
        if at <= from {
            continue;
        }
        match text.as_bytes()[at..].iter().position(|&b| b == b'\n') {
            Some(p) => cuts.push(at + p + 1),
            None => break,
        }
    }
    if *cuts.last().unwrap() != text.len() {
        cuts.push(text.len());
    }
    cuts.dedup();
    cuts
}

/// Parses the lines of `text` (the first is line `first_line_no`) as rows into `values`:
/// blank lines are skipped, every field must be a finite number, and every row must have
/// `head.cols` fields (the first row sets it when nothing has). Returns the rows read.
fn parse_lines(path: &Path, text: &str, first_line_no: usize, head: &mut Head, values: &mut Vec<f32>) -> Result<usize> {
    let mut rows = 0;
    for (i, line) in text.split('\n').enumerate() {
        let line_no = first_line_no + i;
        let line = line.trim_end_matches('\r');
        if blank(line) {
            continue;
        }
        let start = values.len();
        for (j, field) in split_fields(line, head.delim).enumerate() {
            let loc = || format!("line {line_no}, column {}", j + 1);
            if field.is_empty() {
                return Err(Error::input_at(path, loc(), "empty field (a missing value)"));
            }
            let v: f32 = number(field).map_err(|_| {
                Error::input_at(path, loc(), format!("'{field}' is not a number"))
            })?;
            if !v.is_finite() {
                return Err(Error::input_at(
                    path,
                    loc(),
                    format!("'{field}' is not finite: remove or impute it"),
                ));
            }
            values.push(v);
        }
        let n = values.len() - start;
        match head.cols {
            None => {
                head.cols = Some(n);
                head.first_line_no = line_no;
            }
            Some(c) if c != n => {
                return Err(Error::input_at(
                    path,
                    format!("line {line_no}"),
                    format!("{n} fields, but line {} has {c}", head.first_line_no),
                ))
            }
            _ => {}
        }
        rows += 1;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CSV text of `rows` rows of `cols` values, with a header, blank lines, CRLF line ends,
    /// quoted fields and spaces; and its values.
    fn sample(rows: usize, cols: usize) -> (String, Vec<f32>) {
        let mut text = (0..cols).map(|j| format!("c{j}")).collect::<Vec<_>>().join(",") + "\r\n";
        let mut values = Vec::new();
        let mut x = 1u64;
        for i in 0..rows {
            if i % 97 == 5 {
                text.push_str("\n  \n");
            }
            for j in 0..cols {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let v = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1e3;
                let field = match (i + j) % 5 {
                    0 => format!("\"{v}\""),
                    1 => format!(" {v:e} "),
                    _ => format!("{v}"),
                };
                text.push_str(&field);
                text.push(if j + 1 < cols { ',' } else { '\n' });
                values.push(v);
            }
        }
        (text, values)
    }

    fn read(text: &[u8], threads: usize, block: u64) -> Result<Dataset> {
        read_csv_from(Path::new("t.csv"), text, &ReadOptions::default(), Vec::new(), threads, block)
    }

    fn f32s(ds: &Dataset) -> &[f32] {
        match &ds.values {
            Values::F32(v) => v,
            _ => panic!("f32 values expected"),
        }
    }

    #[test]
    fn threads_and_blocks_read_the_same_values() {
        let (text, values) = sample(3000, 37);
        assert!(text.len() > 8 * MIN_PART, "the text is long enough to be cut");
        for (threads, block) in [(1, BLOCK), (2, BLOCK), (3, BLOCK), (4, 100_000), (1, 1), (3, 300_001)] {
            let ds = read(text.as_bytes(), threads, block).unwrap();
            assert_eq!((ds.rows, ds.cols), (3000, 37), "threads {threads}, block {block}");
            assert_eq!(f32s(&ds), values, "threads {threads}, block {block}");
            assert_eq!(ds.column_names.as_ref().map(|n| n[36].as_str()), Some("c36"));
        }
        // No header, tabs, no newline at the end.
        let tabbed = text.split_once('\n').unwrap().1.replace(',', "\t");
        let tabbed = tabbed.trim_end();
        for threads in [1, 4] {
            let ds = read(tabbed.as_bytes(), threads, 65_536).unwrap();
            assert_eq!((ds.rows, ds.cols, ds.column_names.is_none()), (3000, 37, true));
            assert_eq!(f32s(&ds), values);
        }
    }

    /// The line of the text's `n`th newline-separated line (1-based) replaced by `with`.
    fn with_line(text: &str, n: usize, with: &str) -> Vec<u8> {
        let mut lines: Vec<&str> = text.split('\n').collect();
        lines[n - 1] = with;
        lines.join("\n").into_bytes()
    }

    #[test]
    fn errors_name_the_same_line_whatever_the_split() {
        let (text, _) = sample(3000, 37);
        let total = text.split('\n').count();
        let row = "1,".repeat(36) + "1";
        for n in [2, total / 2 + 1, total - 2] {
            let cases: Vec<(Vec<u8>, String)> = vec![
                (with_line(&text, n, &(row.clone() + ",abc")), format!("line {n}, column 38: 'abc' is not a number")),
                (with_line(&text, n, "1,2"), format!("line {n}: 2 fields, but line 1 has 37")),
                (with_line(&text, n, &row.replacen("1,", "1,,", 1)), format!("line {n}, column 2: empty field")),
                (with_line(&text, n, &row.replacen("1,", "inf,", 1)), format!("line {n}, column 1: 'inf' is not finite")),
            ];
            for (bad, want) in &cases {
                for (threads, block) in [(1, BLOCK), (4, BLOCK), (3, 70_001)] {
                    let e = read(bad, threads, block).unwrap_err().to_string();
                    assert!(e.contains(want), "threads {threads}, block {block}: '{e}' should say '{want}'");
                }
            }
            let mut bad = with_line(&text, n, "1,2");
            let at = bad.len() - 5;
            bad[at] = 0xff;
            let lines_to = bad[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            for threads in [1, 4] {
                let e = read(&bad, threads, 70_001).unwrap_err().to_string();
                // The ragged row comes first in the file, else the byte that is not UTF-8.
                let want = if n < lines_to { format!("line {n}: 2 fields") } else { format!("line {lines_to}: not valid UTF-8") };
                assert!(e.contains(&want), "'{e}' should say '{want}'");
            }
        }
    }

    #[test]
    fn numbers_read_as_str_parse_reads_them() {
        let mut fixed = vec![
            "0", "-0", "+0", "1", "1.", ".5", "-.5", "0.1", "16777216", "16777217", "-16777217", "0.0117647",
            "3.4028235e38", "1e-45", "0.00000000001", "123456789012345678901", "1.5e3", "inf", "-inf", "NaN",
            "", "-", ".", "+.", "1..2", "1.2.3", "--1", "abc", "0x10", "1_0", " 1", "1 ", "9999999999.9", "0.9999999999",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        let mut x = 12345u64;
        let mut next = |n: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        for _ in 0..300_000 {
            let int: String = (0..next(9)).map(|_| char::from(b'0' + next(10) as u8)).collect();
            let frac: String = (0..next(13)).map(|_| char::from(b'0' + next(10) as u8)).collect();
            let sign = ["", "-", "+"][next(3) as usize];
            fixed.push(match next(3) {
                0 => format!("{sign}{int}"),
                _ => format!("{sign}{int}.{frac}"),
            });
        }
        for f in &fixed {
            match (number(f), f.parse::<f32>()) {
                (Ok(a), Ok(b)) => assert_eq!(a.to_bits(), b.to_bits(), "'{f}': {a} against {b}"),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("'{f}': {a:?} against {b:?}"),
            }
        }
    }
}

