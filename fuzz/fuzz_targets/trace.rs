//! Arbitrary bytes as a trace file.
//!
//! What must hold, whatever the bytes (read as lossy UTF-8):
//! * parsing never panics: it yields rows or a [`TraceError`];
//! * an error names the source ("fuzz") first, and a line that exists (1 to the number of
//!   lines) or 0 for the file as a whole; its message is not empty;
//! * rows arrive in non-decreasing `arrival_ms` order, and each row is what its line says:
//!   the n-th non-blank line after the header, its fields parsed as integers;
//! * a reference reading of the format (`predict`, written apart from the parser: digits
//!   checked by hand, sums in `u128`) agrees both ways: the parser accepts exactly the texts
//!   the reference accepts, with the same rows, and refuses the others at the same line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_sim::{parse_trace, TraceError, TraceRow, MAX_REQUEST_TOKENS};

fn check_error(e: &TraceError, lines: usize) {
    let shown = e.to_string();
    assert!(shown.starts_with("fuzz"), "{shown}");
    assert_eq!(e.source, "fuzz");
    assert!(e.line <= lines, "line {} of {lines}: {shown}", e.line);
    let prefix = if e.line == 0 {
        "fuzz: ".to_string()
    } else {
        format!("fuzz:{}: ", e.line)
    };
    assert!(shown.starts_with(&prefix), "{shown}");
    assert!(!e.message.is_empty(), "{shown}");
}

/// The row a data line stands for, re-read independently of the parser.
fn expected_row(line: &str, with_hashes: bool) -> TraceRow {
    let f: Vec<&str> = line.trim_end_matches('\r').split(',').collect();
    let int = |s: &str| {
        s.trim()
            .parse::<u64>()
            .expect("a parsed field is an integer")
    };
    let tokens = |s: &str| u32::try_from(int(s)).expect("a parsed token count fits u32");
    TraceRow {
        arrival_ms: int(f[0]),
        input_tokens: tokens(f[1]),
        output_tokens: tokens(f[2]),
        hash_ids: if with_hashes {
            f[3].split_whitespace().map(int).collect()
        } else {
            Vec::new()
        },
    }
}

/// A non-negative integer as Rust's `u64::from_str` reads one after trimming: an optional
/// `+`, then one or more ASCII digits, at most `u64::MAX`.
fn reference_u64(field: &str) -> Option<u64> {
    let s = field.trim();
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: u128 = 0;
    for b in digits.bytes() {
        v = v * 10 + u128::from(b - b'0');
        if v > u128::from(u64::MAX) {
            return None;
        }
    }
    Some(v as u64)
}

/// What the format says of `text`: its rows, or the 1-based line of the first fault (0 for
/// the file as a whole: no header, or no row).
fn predict(text: &str) -> Result<Vec<TraceRow>, usize> {
    let mut nonblank = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((at, header)) = nonblank.next() else {
        return Err(0);
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let with_hashes = match names[..] {
        ["arrival_ms", "input_tokens", "output_tokens"] => false,
        ["arrival_ms", "input_tokens", "output_tokens", "hash_ids"] => true,
        _ => return Err(at),
    };
    let mut rows: Vec<TraceRow> = Vec::new();
    for (at, line) in nonblank {
        let mut line = line;
        while let Some(l) = line.strip_suffix('\r') {
            line = l;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 3 + usize::from(with_hashes) {
            return Err(at);
        }
        let (Some(arrival_ms), Some(input), Some(output)) = (
            reference_u64(f[0]),
            reference_u64(f[1]),
            reference_u64(f[2]),
        ) else {
            return Err(at);
        };
        if u128::from(input) + u128::from(output) > u128::from(MAX_REQUEST_TOKENS) {
            return Err(at);
        }
        if rows.last().is_some_and(|r| r.arrival_ms > arrival_ms) {
            return Err(at);
        }
        let mut hash_ids = Vec::new();
        if with_hashes {
            for h in f[3].split_whitespace() {
                hash_ids.push(reference_u64(h).ok_or(at)?);
            }
        }
        rows.push(TraceRow {
            arrival_ms,
            input_tokens: input as u32,
            output_tokens: output as u32,
            hash_ids,
        });
    }
    if rows.is_empty() {
        return Err(0);
    }
    Ok(rows)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count();
    let predicted = predict(&text);
    let rows = match parse_trace("fuzz", &text) {
        Ok(rows) => rows,
        Err(e) => {
            check_error(&e, lines);
            assert_eq!(
                predicted.as_ref().err(),
                Some(&e.line),
                "the parser refused what the reference reads as {predicted:?}: {e}"
            );
            return;
        }
    };
    assert_eq!(
        predicted.as_ref(),
        Ok(&rows),
        "the parser accepted what the reference refuses"
    );
    assert!(!rows.is_empty());
    for w in rows.windows(2) {
        assert!(w[0].arrival_ms <= w[1].arrival_ms, "{w:?}");
    }
    // Header: the first non-blank line; rows: every later non-blank line, in order.
    let mut nonblank = text.lines().filter(|l| !l.trim().is_empty());
    let header = nonblank.next().expect("a parsed trace has a header");
    let with_hashes = header.trim().split(',').count() == 4;
    let data_lines: Vec<&str> = nonblank.collect();
    assert_eq!(data_lines.len(), rows.len());
    for (line, row) in data_lines.iter().zip(&rows) {
        assert_eq!(&expected_row(line, with_hashes), row, "line `{line}`");
    }
});
