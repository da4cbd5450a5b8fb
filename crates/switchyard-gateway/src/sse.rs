//! A scanner over a server-sent-events stream as it passes through: it finds the first
//! content chunk, counts content chunks, and reads the final `usage`, without holding more
//! than one line.
use serde_json::Value;

/// Longest SSE line kept while it is incomplete; a longer one is skipped.
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Default)]
pub(crate) struct SseScan {
    line: Vec<u8>,
    /// A content chunk was seen.
    pub(crate) content_seen: bool,
    /// An `error` event arrived before any content.
    pub(crate) error_seen: bool,
    /// `data: [DONE]` was seen.
    pub(crate) done: bool,
    content_events: u32,
    usage_tokens: Option<u32>,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

fn has_content(v: &Value) -> bool {
    let Some(choices) = v.get("choices").and_then(Value::as_array) else {
        return false;
    };
    let nonempty = |x: Option<&Value>| x.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    choices.iter().any(|c| {
        let d = c.get("delta");
        nonempty(c.get("text"))
            || nonempty(d.and_then(|d| d.get("content")))
            || nonempty(d.and_then(|d| d.get("reasoning_content")))
            || d.and_then(|d| d.get("tool_calls"))
                .is_some_and(|t| !t.is_null())
    })
}

impl SseScan {
    /// Feeds one chunk of the stream.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            if self.line.is_empty() {
                self.on_line(&data[..i]);
            } else {
                if self.line.len() + i <= MAX_LINE {
                    self.line.extend_from_slice(&data[..i]);
                    let line = std::mem::take(&mut self.line);
                    self.on_line(&line);
                    self.line = line;
                }
                self.line.clear();
            }
            data = &data[i + 1..];
        }
        if !data.is_empty() {
            if self.line.len() + data.len() <= MAX_LINE {
                self.line.extend_from_slice(data);
            } else {
                self.line.clear();
            }
        }
    }

    /// Whether the stream stopped in the middle of a line.
    pub(crate) fn mid_line(&self) -> bool {
        !self.line.is_empty()
    }

    /// Output tokens: the server's `usage.completion_tokens`, or the content chunks counted.
    pub(crate) fn tokens(&self) -> u32 {
        self.usage_tokens.unwrap_or(self.content_events)
    }

    fn on_line(&mut self, line: &[u8]) {
        let Some(p) = line.strip_prefix(b"data:") else {
            return;
        };
        let p = trim(p);
        if p == b"[DONE]" {
            self.done = true;
            return;
        }
        if !self.content_seen {
            let Ok(v) = serde_json::from_slice::<Value>(p) else {
                return;
            };
            if has_content(&v) {
                self.content_seen = true;
                self.content_events += 1;
            } else if v.get("error").is_some_and(|e| !e.is_null()) {
                self.error_seen = true;
            }
            self.read_usage(&v);
            return;
        }
        if contains(p, b"\"usage\"") {
            if let Ok(v) = serde_json::from_slice::<Value>(p) {
                self.read_usage(&v);
            }
        }
        if !contains(p, b"\"choices\":[]") {
            self.content_events = self.content_events.saturating_add(1);
        }
    }

    fn read_usage(&mut self, v: &Value) {
        if let Some(n) = v
            .get("usage")
            .and_then(|u| u.get("completion_tokens"))
            .and_then(Value::as_u64)
        {
            self.usage_tokens = Some(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_content_across_split_chunks_and_reads_usage() {
        let mut s = SseScan::default();
        s.feed(b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n");
        assert!(!s.content_seen);
        s.feed(b"data: {\"choices\":[{\"delta\":{\"cont");
        assert!(!s.content_seen && s.mid_line());
        s.feed(b"ent\":\"Hi\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"!\"}}]}\n\n");
        assert!(s.content_seen && !s.mid_line());
        assert_eq!(s.tokens(), 2);
        s.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":9}}\n\ndata: [DONE]\n\n");
        assert_eq!(s.tokens(), 9);
        assert!(s.done);
    }

    #[test]
    fn error_before_content() {
        let mut s = SseScan::default();
        s.feed(b"data: {\"error\":{\"message\":\"boom\"}}\n\n");
        assert!(s.error_seen && !s.content_seen);
    }

    #[test]
    fn completions_text_counts() {
        let mut s = SseScan::default();
        s.feed(b"data: {\"choices\":[{\"text\":\"a\"}]}\r\n\r\n");
        assert!(s.content_seen);
    }
}
