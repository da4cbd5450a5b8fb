//! The trace format: CSV `arrival_ms,input_tokens,output_tokens[,hash_ids]`, one header line,
//! no quoting; `hash_ids` is a space-separated list of integers (prefix-block ids).
use std::fmt;
use std::path::Path;

/// One request of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRow {
    /// Arrival, ms since the first request.
    pub arrival_ms: u64,
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
    /// Prefix-block ids (empty when the trace has none).
    pub hash_ids: Vec<u64>,
}

/// A trace that could not be read; names the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError {
    /// The file (or `<input>`).
    pub source: String,
    /// 1-based line number (0 = the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}:{}: {}", self.source, self.line, self.message)
        }
    }
}

impl std::error::Error for TraceError {}

/// Parses a whole trace. Rows must arrive in non-decreasing order.
///
/// # Errors
/// A [`TraceError`] naming the first bad line.
///
/// # Examples
/// ```
/// let rows = switchyard_sim::parse_trace("t", "arrival_ms,input_tokens,output_tokens\n0,10,2\n5,7,1\n")?;
/// assert_eq!(rows.len(), 2);
/// assert_eq!(rows[1].arrival_ms, 5);
/// let err = switchyard_sim::parse_trace("t", "arrival_ms,input_tokens,output_tokens\n0,x,2\n").unwrap_err();
/// assert_eq!(err.line, 2);
/// # Ok::<(), switchyard_sim::TraceError>(())
/// ```
pub fn parse_trace(source: &str, text: &str) -> Result<Vec<TraceRow>, TraceError> {
    let err = |line: usize, message: String| TraceError {
        source: source.to_string(),
        line,
        message,
    };
    let mut lines = text.lines().enumerate();
    let header = loop {
        match lines.next() {
            Some((_, l)) if l.trim().is_empty() => continue,
            Some((i, l)) => break (i + 1, l.trim()),
            None => return Err(err(0, "empty trace: no header line".into())),
        }
    };
    let cols: Vec<&str> = header.1.split(',').map(str::trim).collect();
    let expect = ["arrival_ms", "input_tokens", "output_tokens"];
    if cols.len() < 3
        || cols[..3] != expect
        || (cols.len() == 4 && cols[3] != "hash_ids")
        || cols.len() > 4
    {
        return Err(err(
            header.0,
            format!(
                "header must be `arrival_ms,input_tokens,output_tokens[,hash_ids]`, got `{}`",
                header.1
            ),
        ));
    }
    let with_hashes = cols.len() == 4;
    let mut rows = Vec::new();
    let mut last = 0u64;
    for (i, line) in lines {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let want = if with_hashes { 4 } else { 3 };
        if fields.len() != want {
            return Err(err(
                n,
                format!("expected {want} fields, found {}", fields.len()),
            ));
        }
        let num = |k: usize, name: &str| -> Result<u64, TraceError> {
            fields[k].trim().parse::<u64>().map_err(|_| {
                err(
                    n,
                    format!(
                        "`{name}` is not a non-negative integer: `{}`",
                        shorten(fields[k].trim())
                    ),
                )
            })
        };
        let arrival_ms = num(0, "arrival_ms")?;
        let input = num(1, "input_tokens")?;
        let output = num(2, "output_tokens")?;
        if input.saturating_add(output) > MAX_REQUEST_TOKENS {
            return Err(err(
                n,
                format!(
                    "{input} input + {output} output tokens is more than one request can hold \
                     ({MAX_REQUEST_TOKENS}, the largest token capacity a node may declare)"
                ),
            ));
        }
        if arrival_ms < last {
            return Err(err(
                n,
                format!("arrival_ms {arrival_ms} goes back in time (previous {last})"),
            ));
        }
        last = arrival_ms;
        let hash_ids = if with_hashes {
            fields[3]
                .split_whitespace()
                .map(|h| {
                    h.parse::<u64>()
                        .map_err(|_| err(n, format!("bad hash id `{}`", shorten(h))))
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        rows.push(TraceRow {
            arrival_ms,
            input_tokens: input as u32,
            output_tokens: output as u32,
            hash_ids,
        });
    }
    if rows.is_empty() {
        return Err(err(0, "the trace has no rows".into()));
    }
    Ok(rows)
}

/// The most tokens (input + output) one trace row may ask for: the largest token capacity a
/// node may declare (`switchyard::limits::MAX_TOKENS_IN_FLIGHT`); a larger request could
/// never be served, and would only make the simulated run take unbounded time and memory.
pub const MAX_REQUEST_TOKENS: u64 = switchyard::limits::MAX_TOKENS_IN_FLIGHT as u64;

/// A field as an error message shows it: at most 64 characters, so a huge bad field is not
/// echoed whole.
fn shorten(field: &str) -> String {
    const MAX: usize = 64;
    match field.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}… ({} bytes)", &field[..cut], field.len()),
        None => field.to_string(),
    }
}

/// The traces bundled into the crate (and so into the `switchyard` binary), by name: the
/// Azure 2023 code-completion trace (`azure`, the default) and the Mooncake FAST'25 synthetic
/// trace (`mooncake`). `data/README.md` gives their sources and licences. They are embedded
/// at compile time, so no file is needed at run time.
pub const BUNDLED_TRACES: [(&str, &str, &str); 2] = [
    (
        "azure",
        "azure_llm_2023_code.csv",
        include_str!("../data/azure_llm_2023_code.csv"),
    ),
    (
        "mooncake",
        "mooncake_fast25_synthetic.csv",
        include_str!("../data/mooncake_fast25_synthetic.csv"),
    ),
];

/// The text of a bundled trace, by short name (`azure`) or file name
/// (`azure_llm_2023_code.csv`).
pub fn bundled_trace(name: &str) -> Option<&'static str> {
    BUNDLED_TRACES
        .iter()
        .find(|(short, file, _)| name == *short || name == *file)
        .map(|(_, _, text)| *text)
}

/// Opens the trace a command line names: none means the bundled Azure trace; a bundled
/// trace's short name (`mooncake`) means that trace; a path that exists is read; a path that
/// does not exist but ends in a bundled trace's file name (`data/mooncake_fast25_synthetic.csv`,
/// as the docs write it) means that bundled trace. Returns a display name and the rows.
///
/// # Errors
/// A [`TraceError`] for an unreadable file or a bad line.
pub fn open_trace(arg: Option<&Path>) -> Result<(String, Vec<TraceRow>), TraceError> {
    let Some(path) = arg else {
        let (_, file, text) = BUNDLED_TRACES[0];
        return Ok((file.to_string(), parse_trace(file, text)?));
    };
    if !path.exists() {
        let key = path
            .to_str()
            .filter(|s| !s.contains('/'))
            .map(str::to_string);
        let file = path.file_name().and_then(|f| f.to_str());
        let short = key.as_deref().and_then(bundled_trace);
        if let Some(text) = short.or_else(|| file.and_then(bundled_trace)) {
            let name = path.display().to_string();
            return Ok((name.clone(), parse_trace(&name, text)?));
        }
    }
    Ok((path.display().to_string(), load_trace(path)?))
}

/// Reads and parses a trace file.
///
/// # Errors
/// A [`TraceError`] for an unreadable file or a bad line.
pub fn load_trace(path: &Path) -> Result<Vec<TraceRow>, TraceError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| TraceError {
        source: source.clone(),
        line: 0,
        message: e.to_string(),
    })?;
    parse_trace(&source, &text)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn parses_both_layouts() {
        let r = parse_trace(
            "t",
            "arrival_ms,input_tokens,output_tokens,hash_ids\n0,1024,5,1 2\n0,10,1,\n",
        )
        .unwrap();
        assert_eq!(r[0].hash_ids, vec![1, 2]);
        assert!(r[1].hash_ids.is_empty());
        let r = parse_trace(
            "t",
            "\narrival_ms,input_tokens,output_tokens\r\n3,4,5\r\n\n",
        )
        .unwrap();
        assert_eq!(
            r,
            vec![TraceRow {
                arrival_ms: 3,
                input_tokens: 4,
                output_tokens: 5,
                hash_ids: vec![]
            }]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let h = "arrival_ms,input_tokens,output_tokens\n";
        let e = parse_trace("f.csv", &format!("{h}0,1,1\n1,2\n")).unwrap_err();
        assert_eq!((e.line, e.to_string().starts_with("f.csv:3:")), (3, true));
        let e = parse_trace("f", &format!("{h}5,1,1\n4,1,1\n")).unwrap_err();
        assert!(e.message.contains("back in time"));
        let e = parse_trace("f", &format!("{h}0,-1,1\n")).unwrap_err();
        assert!(e.message.contains("input_tokens"));
        let huge = "9".repeat(50_000_000);
        let e = parse_trace("f", &format!("{h}0,{huge},1\n")).unwrap_err();
        assert!(
            e.to_string().len() < 300,
            "a huge field is not echoed whole"
        );
        assert!(e.to_string().contains("(50000000 bytes)"), "{e}");
        let e = parse_trace("f", &format!("{h}0,4294967295,1\n")).unwrap_err();
        assert!(
            e.to_string().contains("more than one request can hold"),
            "{e}"
        );
        let e = parse_trace("f", &format!("{h}0,16777216,0\n")).unwrap_err();
        assert!(
            e.to_string().contains("more than one request can hold"),
            "{e}"
        );
        assert!(parse_trace("f", &format!("{h}0,16777000,215\n")).is_ok());
        let e = parse_trace("f", &format!("{h}0,99999999999,1\n")).unwrap_err();
        assert!(e.message.contains("more than one request can hold"));
        assert_eq!(parse_trace("f", "").unwrap_err().line, 0);
        assert_eq!(
            parse_trace("f", h).unwrap_err().message,
            "the trace has no rows"
        );
        assert_eq!(parse_trace("f", "a,b,c\n").unwrap_err().line, 1);
        let e = parse_trace(
            "f",
            "arrival_ms,input_tokens,output_tokens,hash_ids\n0,1,1,x\n",
        )
        .unwrap_err();
        assert!(e.message.contains("hash id"));
        let e = load_trace(Path::new("no/such/file.csv")).unwrap_err();
        assert_eq!(e.line, 0);
    }
}

#[cfg(test)]
mod bundled {
    use super::*;

    #[test]
    fn bundled_traces_open_by_name_without_any_file() {
        let (name, azure) = open_trace(None).unwrap();
        assert_eq!(name, "azure_llm_2023_code.csv");
        assert_eq!(azure.len(), 8_819);
        let (_, mooncake) = open_trace(Some(Path::new("mooncake"))).unwrap();
        assert!(mooncake.iter().any(|r| !r.hash_ids.is_empty()));
        let (_, again) =
            open_trace(Some(Path::new("no/such/dir/mooncake_fast25_synthetic.csv"))).unwrap();
        assert_eq!(again.len(), mooncake.len());
        assert!(open_trace(Some(Path::new("no-such-trace"))).is_err());
        assert!(bundled_trace("azure").is_some() && bundled_trace("nope").is_none());
    }
}
