//! Arbitrary bytes as a trace file.
//!
//! What must hold, whatever the bytes (read as lossy UTF-8):
//! * parsing never panics: it yields rows or a [`TraceError`];
//! * an error names the source ("fuzz") first, and a line that exists (1 to the number of
//!   lines) or 0 for the file as a whole; its message is not empty;
//! * rows arrive in non-decreasing `arrival_ms` order, and each row is what its line says:
//!   the n-th non-blank line after the header, its fields parsed as integers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_sim::{parse_trace, TraceError, TraceRow};

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

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count();
    let rows = match parse_trace("fuzz", &text) {
        Ok(rows) => rows,
        Err(e) => {
            check_error(&e, lines);
            return;
        }
    };
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
