//! Where tables and keys sit in a TOML text, to put a line in an error message.
use std::ops::Range;

/// 1-based line and column (in characters) of byte `offset`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let b = text.as_bytes();
    let before = &b[..offset.min(b.len())];
    let line = 1 + before.iter().filter(|&&c| c == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |p| p + 1);
    // Count characters, not bytes: skip UTF-8 continuation bytes.
    let column = 1 + before[line_start..]
        .iter()
        .filter(|&&c| c & 0xC0 != 0x80)
        .count();
    (line, column)
}

/// Where tables and keys sit in a TOML text. A light, panic-free scan, not a parser: it
/// skips strings, comments and multi-line arrays correctly, which is all locating needs.
#[derive(Debug)]
pub(super) struct Layout {
    /// The root table first, then every `[table]` / `[[array]]` header in text order.
    tables: Vec<TableAt>,
}

#[derive(Debug)]
struct TableAt {
    path: Vec<String>,
    array: bool,
    line: usize,
    start: usize,
    keys: Vec<KeyAt>,
}

#[derive(Debug)]
struct KeyAt {
    path: Vec<String>,
    line: usize,
    /// From the key to the end of its value.
    span: Range<usize>,
    value: Range<usize>,
}

/// One element of an array of tables (`[[node]]`), with its sub-tables' keys.
#[derive(Debug)]
pub(super) struct Entry<'a> {
    pub(super) line: usize,
    /// Path relative to the element, and the key.
    keys: Vec<(Vec<&'a str>, &'a KeyAt)>,
}

impl Entry<'_> {
    /// The line of a key, or of the nearest enclosing key (`capability_scores` for
    /// `capability_scores.code` written inline).
    pub(super) fn key_line(&self, path: &[&str]) -> Option<usize> {
        (1..=path.len()).rev().find_map(|n| {
            self.keys
                .iter()
                .find(|(p, _)| p.as_slice() == &path[..n])
                .map(|(_, k)| k.line)
        })
    }

    /// A key's value when it is a plain `"..."` string.
    pub(super) fn string_value(&self, text: &str, path: &[&str]) -> Option<String> {
        let (_, k) = self.keys.iter().find(|(p, _)| p.as_slice() == path)?;
        let raw = text.get(k.value.clone())?.trim_start();
        if let Some(rest) = raw.strip_prefix('\'') {
            return rest.find('\'').map(|end| rest[..end].to_string());
        }
        let rest = raw.strip_prefix('"')?;
        let end = rest.find('"')?;
        let s = &rest[..end];
        (!s.contains('\\')).then(|| s.to_string())
    }
}

impl Layout {
    pub(super) fn scan(text: &str) -> Layout {
        let mut s = Scanner {
            b: text.as_bytes(),
            i: 0,
            line: 1,
        };
        let mut tables = vec![TableAt {
            path: Vec::new(),
            array: false,
            line: 1,
            start: 0,
            keys: Vec::new(),
        }];
        loop {
            s.skip_ws();
            let Some(c) = s.peek(0) else { break };
            match c {
                b'\n' => s.bump(),
                b'#' => s.skip_line(),
                b'[' => {
                    let (start, line) = (s.i, s.line);
                    let array = s.peek(1) == Some(b'[');
                    s.i += if array { 2 } else { 1 };
                    let path = s.key_path();
                    tables.push(TableAt {
                        path,
                        array,
                        line,
                        start,
                        keys: Vec::new(),
                    });
                    s.skip_line();
                }
                _ => {
                    let (start, line) = (s.i, s.line);
                    let path = s.key_path();
                    s.skip_ws();
                    if path.is_empty() || s.peek(0) != Some(b'=') {
                        // Not a key/value line (the text is not valid TOML): skip it. A key
                        // path stops at a newline, so skipping always makes progress.
                        if s.i == start {
                            s.i += 1;
                        }
                        s.skip_line();
                        continue;
                    }
                    s.i += 1;
                    s.skip_ws();
                    let value_start = s.i;
                    s.skip_value();
                    if let Some(t) = tables.last_mut() {
                        t.keys.push(KeyAt {
                            path,
                            line,
                            span: start..s.i,
                            value: value_start..s.i,
                        });
                    }
                }
            }
        }
        Layout { tables }
    }

    /// The line of a key of the root table, or of a `[table]` (`weights.load` is found as
    /// `load` under `[weights]` or as a dotted key at the root).
    pub(super) fn root_key_line(&self, path: &[&str]) -> Option<usize> {
        let same =
            |p: &[String], q: &[&str]| p.len() == q.len() && p.iter().zip(q).all(|(a, b)| a == b);
        // The key itself, else the nearest enclosing key or table.
        (1..=path.len()).rev().find_map(|n| {
            let want = &path[..n];
            self.tables.iter().filter(|t| !t.array).find_map(|t| {
                let depth = t.path.len();
                if depth > want.len() || !same(&t.path, &want[..depth]) {
                    None
                } else if depth == want.len() {
                    Some(t.line)
                } else {
                    t.keys
                        .iter()
                        .find(|k| same(&k.path, &want[depth..]))
                        .map(|k| k.line)
                }
            })
        })
    }

    /// The first line with a key named `name`, anywhere.
    pub(super) fn any_key_line(&self, name: &str) -> Option<usize> {
        self.tables
            .iter()
            .flat_map(|t| &t.keys)
            .find(|k| k.path.last().is_some_and(|p| p == name))
            .map(|k| k.line)
    }

    /// The elements of the `[[kind]]` array of tables, in order.
    pub(super) fn entries(&self, kind: &str) -> Vec<Entry<'_>> {
        let mut out: Vec<Entry<'_>> = Vec::new();
        for t in &self.tables {
            if t.path.first().map(String::as_str) != Some(kind) {
                continue;
            }
            if t.array && t.path.len() == 1 {
                out.push(Entry {
                    line: t.line,
                    keys: Vec::new(),
                });
            }
            // Keys of `[[node]]` itself and of its sub-tables (`[node.capability_scores]`).
            if let Some(e) = out.last_mut() {
                for k in &t.keys {
                    let path = t.path[1..]
                        .iter()
                        .chain(&k.path)
                        .map(String::as_str)
                        .collect();
                    e.keys.push((path, k));
                }
            }
        }
        out
    }

    /// The entry (`node "gpu-1"`, `[[node]] #2`, `[weights]`) and the key that hold byte
    /// `offset`, for errors found by the TOML parser.
    pub(super) fn at(&self, text: &str, offset: usize) -> (Option<String>, Option<String>) {
        let Some(t) = self.tables.iter().rev().find(|t| t.start <= offset) else {
            return (None, None);
        };
        let key = t
            .keys
            .iter()
            .find(|k| k.span.contains(&offset) || k.span.end == offset);
        let head = t.path.first().map(String::as_str);
        match head {
            Some(kind @ ("node" | "chain")) => {
                let entries = self.entries(kind);
                // The element this table belongs to: the number of `[[kind]]` headers so far.
                let n = self
                    .tables
                    .iter()
                    .filter(|u| u.start <= t.start && u.array && u.path.len() == 1)
                    .filter(|u| u.path.first().map(String::as_str) == Some(kind))
                    .count();
                let context = match n.checked_sub(1).and_then(|i| entries.get(i)) {
                    Some(e) => match e.string_value(text, &["name"]) {
                        Some(name) => format!("{kind} {name:?}"),
                        None => format!("[[{kind}]] #{n}"),
                    },
                    None => format!("[{}]", t.path.join(".")),
                };
                let field = key.map(|k| {
                    t.path[1..]
                        .iter()
                        .chain(&k.path)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(".")
                });
                (Some(context), field)
            }
            _ => {
                let context = (!t.path.is_empty()).then(|| format!("[{}]", t.path.join(".")));
                let field = key.map(|k| {
                    t.path
                        .iter()
                        .chain(&k.path)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(".")
                });
                (context, field)
            }
        }
    }
}

/// A byte cursor over the text. Every step checks bounds; nothing here can panic.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
}

impl Scanner<'_> {
    fn peek(&self, k: usize) -> Option<u8> {
        self.b.get(self.i.saturating_add(k)).copied()
    }

    /// Steps over one byte, counting lines.
    fn bump(&mut self) {
        if let Some(c) = self.peek(0) {
            if c == b'\n' {
                self.line += 1;
            }
            self.i += 1;
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(0), Some(b' ' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }

    /// To the end of the line (the newline itself is left).
    fn skip_line(&mut self) {
        while matches!(self.peek(0), Some(c) if c != b'\n') {
            self.i += 1;
        }
    }

    /// A dotted key (`a`, `"a b".c`, `'x'`).
    fn key_path(&mut self) -> Vec<String> {
        let mut path = Vec::new();
        loop {
            self.skip_ws();
            match self.peek(0) {
                Some(q @ (b'"' | b'\'')) => {
                    self.i += 1;
                    let mut s = Vec::new();
                    while let Some(c) = self.peek(0) {
                        if c == q || c == b'\n' {
                            break;
                        }
                        if c == b'\\' && q == b'"' {
                            self.i += 1;
                            match self.peek(0) {
                                Some(b'\n') | None => break,
                                Some(e) => s.push(e),
                            }
                        } else {
                            s.push(c);
                        }
                        self.i += 1;
                    }
                    if self.peek(0) == Some(q) {
                        self.i += 1;
                    }
                    path.push(String::from_utf8_lossy(&s).into_owned());
                }
                Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' => {
                    let start = self.i;
                    while matches!(self.peek(0), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                    {
                        self.i += 1;
                    }
                    let end = self.i.min(self.b.len());
                    path.push(String::from_utf8_lossy(&self.b[start.min(end)..end]).into_owned());
                }
                _ => break,
            }
            self.skip_ws();
            if self.peek(0) == Some(b'.') {
                self.i += 1;
            } else {
                break;
            }
        }
        path
    }

    /// A value: to the end of its line, past strings and bracketed lines.
    fn skip_value(&mut self) {
        let mut depth = 0usize;
        while let Some(c) = self.peek(0) {
            match c {
                b'\n' if depth == 0 => return,
                b'#' => self.skip_line(),
                b'"' | b'\'' => self.skip_string(c),
                b'[' | b'{' => {
                    depth += 1;
                    self.i += 1;
                }
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    self.i += 1;
                }
                _ => self.bump(),
            }
        }
    }

    fn skip_string(&mut self, q: u8) {
        let multi = self.peek(1) == Some(q) && self.peek(2) == Some(q);
        if multi {
            self.i += 3;
            while let Some(c) = self.peek(0) {
                if c == b'\\' && q == b'"' {
                    self.i += 1;
                    self.bump();
                } else if c == q && self.peek(1) == Some(q) && self.peek(2) == Some(q) {
                    self.i += 3;
                    // Up to two quotes may end the content right before the delimiter.
                    for _ in 0..2 {
                        if self.peek(0) == Some(q) {
                            self.i += 1;
                        }
                    }
                    return;
                } else {
                    self.bump();
                }
            }
        } else {
            self.i += 1;
            while let Some(c) = self.peek(0) {
                if c == b'\n' {
                    return;
                }
                self.i += 1;
                if c == q {
                    return;
                }
                if c == b'\\' && q == b'"' && self.peek(0).is_some_and(|e| e != b'\n') {
                    self.i += 1;
                }
            }
        }
    }
}
