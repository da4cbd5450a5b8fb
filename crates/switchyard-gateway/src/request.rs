//! What the gateway reads from a completion request: the model, whether it streams, the
//! token estimates, the prompt's prefix blocks, and the routing headers.
use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;
use switchyard::limits::MAX_TENANTS;
use switchyard::{Prefix, Priority, TenantId};

use crate::error::ApiError;

/// Header naming the request's class: `critical`, `high`, `normal` (default) or `low`.
pub const PRIORITY_HEADER: &str = "x-switchyard-priority";
/// Header naming the tenant: a number, or a name (mapped by `[gateway.tenants]`, else hashed).
pub const TENANT_HEADER: &str = "x-switchyard-tenant";
/// Header giving the request's latency limit in ms.
pub const SLO_HEADER: &str = "x-switchyard-slo-ms";
/// Response header naming the model server that answered.
pub const NODE_HEADER: &str = "x-switchyard-node";

/// Which OpenAI endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
}

impl Endpoint {
    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
        }
    }
}

/// A parsed completion request.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) model: String,
    pub(crate) stream: bool,
    pub(crate) input_tokens: u32,
    pub(crate) output_tokens: u32,
    pub(crate) prefix: Prefix,
    /// The body to send upstream.
    pub(crate) body: Bytes,
}

/// FNV-1a, fed piece by piece (tenant names).
struct Fnv {
    h: u64,
}

impl Fnv {
    fn new() -> Self {
        Self {
            h: 0xcbf2_9ce4_8422_2325,
        }
    }

    fn feed(&mut self, s: &[u8]) {
        for &b in s {
            self.h ^= u64::from(b);
            self.h = self.h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Most prompt blocks hashed for the prefix (past them a prompt's match is credited at this
/// depth): 4096 blocks of the default 256 bytes is 1 MiB of text.
const MAX_PREFIX_BLOCKS: usize = 4096;

/// The prompt text cut into blocks of `size` bytes, each hashed a word at a time as it
/// completes, so equal blocks get equal ids however the text was split into messages and
/// parts. A trailing partial block gets no id (a paged KV cache keeps only full blocks).
struct Blocks {
    size: usize,
    filled: usize,
    h: u64,
    word: u64,
    word_len: u32,
    ids: Vec<u64>,
}

impl Blocks {
    fn new(size: usize) -> Self {
        Self {
            size,
            filled: 0,
            h: 0,
            word: 0,
            word_len: 0,
            ids: Vec::new(),
        }
    }

    #[inline]
    fn mix(&mut self, w: u64) {
        self.h = (self.h ^ w)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        self.word |= u64::from(b) << (8 * self.word_len);
        self.word_len += 1;
        if self.word_len == 8 {
            let w = self.word;
            self.mix(w);
            self.word = 0;
            self.word_len = 0;
        }
    }

    fn absorb(&mut self, mut b: &[u8]) {
        while self.word_len != 0 && !b.is_empty() {
            self.byte(b[0]);
            b = &b[1..];
        }
        let mut words = b.chunks_exact(8);
        for c in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        for &x in words.remainder() {
            self.byte(x);
        }
    }

    fn feed(&mut self, mut s: &[u8]) {
        while self.size > 0 && self.ids.len() < MAX_PREFIX_BLOCKS && !s.is_empty() {
            let take = (self.size - self.filled).min(s.len());
            self.absorb(&s[..take]);
            self.filled += take;
            s = &s[take..];
            if self.filled == self.size {
                if self.word_len != 0 {
                    let w = self.word | 1 << 63;
                    self.mix(w);
                }
                self.ids.push(self.h);
                (self.filled, self.h, self.word, self.word_len) = (0, 0, 0, 0);
            }
        }
    }

    fn prefix(&self) -> Prefix {
        Prefix::from_blocks(self.ids.iter().copied())
    }
}

/// Text of the prompt: its length in bytes (plus tokens given as ids) and its prefix blocks.
struct PromptText {
    bytes: u64,
    token_ids: u64,
    prefix: Blocks,
}

impl PromptText {
    fn text(&mut self, s: &str) {
        self.bytes += s.len() as u64;
        self.prefix.feed(s.as_bytes());
    }

    /// A message `content`: a string, or an array of parts whose `text` counts.
    fn content(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.text(s),
            Value::Array(parts) => {
                for p in parts {
                    match p {
                        Value::String(s) => self.text(s),
                        Value::Object(o) => {
                            if let Some(Value::String(s)) = o.get("text") {
                                self.text(s);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// A completions `prompt`: a string, strings, token ids, or arrays of token ids.
    fn prompt(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.text(s),
            Value::Array(items) => {
                for it in items {
                    match it {
                        Value::String(s) => self.text(s),
                        Value::Number(_) => self.token_ids += 1,
                        Value::Array(ids) => self.token_ids += ids.len() as u64,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// Reads a completion request body.
pub(crate) fn parse(
    endpoint: Endpoint,
    raw: Bytes,
    default_max_tokens: u32,
    prefix_block_bytes: usize,
    include_usage: bool,
) -> Result<Parsed, ApiError> {
    let mut v: Value = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let Some(obj) = v.as_object_mut() else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the body must be a JSON object",
        ));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_model",
                "`model` must be a non-empty string",
            ))
        }
        None => {
            return Err(ApiError::bad_request(
                "missing_model",
                "the request names no `model`",
            ))
        }
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_stream",
                "`stream` must be a boolean",
            ))
        }
    };
    let mut max_tokens = None;
    for key in ["max_completion_tokens", "max_tokens"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) => {
                    max_tokens.get_or_insert(u32::try_from(n).unwrap_or(u32::MAX));
                }
                None => {
                    return Err(ApiError::bad_request(
                        "invalid_max_tokens",
                        format!("`{key}` must be a non-negative integer"),
                    ))
                }
            },
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_max_tokens",
                    format!("`{key}` must be a non-negative integer"),
                ))
            }
        }
    }
    let mut text = PromptText {
        bytes: 0,
        token_ids: 0,
        prefix: Blocks::new(prefix_block_bytes),
    };
    match endpoint {
        Endpoint::Chat => match obj.get("messages") {
            Some(Value::Array(msgs)) => {
                for m in msgs {
                    if let Some(c) = m.get("content") {
                        text.content(c);
                    }
                }
            }
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_messages",
                    "`messages` must be an array",
                ))
            }
        },
        Endpoint::Completions => match obj.get("prompt") {
            Some(p @ (Value::String(_) | Value::Array(_))) => text.prompt(p),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_prompt",
                    "`prompt` must be a string or an array",
                ))
            }
        },
    }
    // About four bytes of English text per token.
    let input = (text.bytes / 4 + text.token_ids).max(1);
    let input_tokens = u32::try_from(input).unwrap_or(u32::MAX);
    let output_tokens = max_tokens.unwrap_or(default_max_tokens);
    let mut body = raw;
    if stream && include_usage {
        let opts = obj
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(o) = opts {
            if !o.contains_key("include_usage") {
                o.insert("include_usage".into(), Value::Bool(true));
                body = Bytes::from(v.to_string());
            }
        }
    }
    Ok(Parsed {
        model,
        stream,
        input_tokens,
        output_tokens,
        prefix: text.prefix.prefix(),
        body,
    })
}

/// The routing headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Routing {
    pub(crate) priority: Priority,
    pub(crate) tenant: Option<TenantId>,
    pub(crate) slo_ms: Option<u32>,
}

/// Reads the `x-switchyard-*` headers.
pub(crate) fn routing_headers(
    h: &HeaderMap,
    tenants: &std::collections::BTreeMap<String, u32>,
) -> Result<Routing, ApiError> {
    let text = |name: &str| -> Result<Option<&str>, ApiError> {
        match h.get(name) {
            None => Ok(None),
            Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
                ApiError::bad_request("invalid_header", format!("`{name}` is not visible ASCII"))
            }),
        }
    };
    let priority = match text(PRIORITY_HEADER)? {
        None => Priority::Normal,
        Some(p) => match p.to_ascii_lowercase().as_str() {
            "critical" => Priority::Critical,
            "high" => Priority::High,
            "normal" | "" => Priority::Normal,
            "low" => Priority::Low,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_priority",
                    format!("`{PRIORITY_HEADER}` must be critical, high, normal or low"),
                ))
            }
        },
    };
    let tenant = match text(TENANT_HEADER)? {
        None | Some("") => None,
        Some(t) => Some(tenant_id(t, tenants)),
    };
    let slo_ms = match text(SLO_HEADER)? {
        None | Some("") => None,
        Some(s) => match s.parse::<u32>() {
            Ok(ms) if ms > 0 => Some(ms),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_slo",
                    format!("`{SLO_HEADER}` must be a positive number of milliseconds"),
                ))
            }
        },
    };
    Ok(Routing {
        priority,
        tenant,
        slo_ms,
    })
}

/// A tenant header's id: a number as it is, a name as `[gateway.tenants]` maps it, any other
/// name hashed to an id above the rate-limited range (its own fair share, no rate limit).
pub(crate) fn tenant_id(t: &str, tenants: &std::collections::BTreeMap<String, u32>) -> TenantId {
    if let Ok(n) = t.parse::<u32>() {
        return TenantId(n);
    }
    if let Some(&n) = tenants.get(t) {
        return TenantId(n);
    }
    let mut h = Fnv::new();
    h.feed(t.as_bytes());
    let span = u64::from(u32::MAX) - MAX_TENANTS as u64;
    TenantId(MAX_TENANTS as u32 + (h.h % span) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn chat(body: &str) -> Result<Parsed, ApiError> {
        parse(
            Endpoint::Chat,
            Bytes::from(body.to_string()),
            100,
            16,
            false,
        )
    }

    #[test]
    fn estimates_and_prefix_blocks() {
        let p = chat(r#"{"model":"m","messages":[{"role":"user","content":"abcdefghijklmnopqrstuvwx"}],"max_tokens":7}"#).unwrap();
        assert_eq!((p.input_tokens, p.output_tokens, p.stream), (6, 7, false));
        assert_eq!(p.prefix.blocks(), 1, "24 bytes: one whole 16-byte block");
        // Same first 16 bytes: the same block, whatever follows.
        let q =
            chat(r#"{"model":"m","messages":[{"role":"user","content":"abcdefghijklmnopZZZ"}]}"#)
                .unwrap();
        assert_eq!(p.prefix, q.prefix);
        assert_eq!(q.output_tokens, 100);
        let r = chat(r#"{"model":"m","messages":[{"role":"user","content":"Xbcdefghijklmnop"}]}"#)
            .unwrap();
        assert_eq!(p.prefix.common_depth(&r.prefix), 0);
        // A conversation that goes on shares its earlier blocks, however they were split.
        let turn1 = chat(r#"{"model":"m","messages":[{"role":"system","content":"0123456789abcdef"},{"role":"user","content":"ghijklmnopqrstuv"}]}"#).unwrap();
        let turn2 = chat(r#"{"model":"m","messages":[{"role":"system","content":"0123456789"},{"role":"user","content":"abcdefghijklmnopqrstuv"},{"role":"assistant","content":"wxyz0123456789AB"},{"role":"user","content":"more text"}]}"#).unwrap();
        assert_eq!((turn1.prefix.blocks(), turn2.prefix.blocks()), (2, 3));
        assert_eq!(turn1.prefix.common_depth(&turn2.prefix), 2);
        assert_eq!(turn2.prefix.common_depth(&p.prefix), 0);
        // No blocks when hashing is off.
        let off = parse(
            Endpoint::Chat,
            Bytes::from(r#"{"model":"m","messages":[{"role":"user","content":"abcdefghijklmnopqrstuvwx"}]}"#),
            1,
            0,
            false,
        )
        .unwrap();
        assert!(off.prefix.is_empty());
    }

    #[test]
    fn content_parts_and_prompt_arrays_count() {
        let p = chat(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"abcdefgh"},"ijklmnop",{"type":"image_url","image_url":{}}]},{"role":"assistant"}]}"#).unwrap();
        assert_eq!(p.input_tokens, 4);
        let q = chat(r#"{"model":"m","messages":[{"role":"user","content":"abcdefghijklmnop"}]}"#)
            .unwrap();
        assert_eq!((p.prefix, p.prefix.blocks()), (q.prefix, 1));
        let c = |b: &str| {
            parse(
                Endpoint::Completions,
                Bytes::from(b.to_string()),
                1,
                16,
                false,
            )
        };
        assert_eq!(
            c(r#"{"model":"m","prompt":["abcd","efgh"]}"#)
                .unwrap()
                .input_tokens,
            2
        );
        assert_eq!(
            c(r#"{"model":"m","prompt":[1,2,3,4,5]}"#)
                .unwrap()
                .input_tokens,
            5
        );
        let ids = c(r#"{"model":"m","prompt":[[1,2],[3,4,5],null]}"#).unwrap();
        assert_eq!((ids.input_tokens, ids.prefix), (5, Prefix::EMPTY));
        assert_eq!(
            c(r#"{"model":"m","prompt":"x","max_tokens":"9"}"#)
                .unwrap_err()
                .code,
            "invalid_max_tokens"
        );
        let both =
            c(r#"{"model":"m","prompt":"x","max_tokens":9,"max_completion_tokens":4}"#).unwrap();
        assert_eq!(both.output_tokens, 4);
    }

    #[test]
    fn bad_bodies() {
        assert_eq!(chat("not json").unwrap_err().code, "invalid_json");
        assert_eq!(chat("[1]").unwrap_err().code, "invalid_request");
        assert_eq!(
            chat(r#"{"messages":[]}"#).unwrap_err().code,
            "missing_model"
        );
        assert_eq!(
            chat(r#"{"model":3,"messages":[]}"#).unwrap_err().code,
            "invalid_model"
        );
        assert_eq!(
            chat(r#"{"model":"m"}"#).unwrap_err().code,
            "invalid_messages"
        );
        assert_eq!(
            chat(r#"{"model":"m","messages":[],"max_tokens":-1}"#)
                .unwrap_err()
                .code,
            "invalid_max_tokens"
        );
        let e = parse(
            Endpoint::Completions,
            Bytes::from_static(b"{\"model\":\"m\"}"),
            1,
            1,
            false,
        );
        assert_eq!(e.unwrap_err().code, "invalid_prompt");
    }

    #[test]
    fn usage_is_asked_for_only_when_missing() {
        let b = r#"{"model":"m","prompt":"hi","stream":true}"#;
        let p = parse(Endpoint::Completions, Bytes::from(b), 1, 1, true).unwrap();
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], Value::Bool(true));
        let b =
            r#"{"model":"m","prompt":"hi","stream":true,"stream_options":{"include_usage":false}}"#;
        let p = parse(Endpoint::Completions, Bytes::from(b), 1, 1, true).unwrap();
        assert_eq!(&p.body[..], b.as_bytes());
    }

    #[test]
    fn headers() {
        let mut names = std::collections::BTreeMap::new();
        names.insert("acme".to_string(), 3);
        let mut h = HeaderMap::new();
        h.insert(PRIORITY_HEADER, "High".parse().unwrap());
        h.insert(TENANT_HEADER, "acme".parse().unwrap());
        h.insert(SLO_HEADER, "1500".parse().unwrap());
        let r = routing_headers(&h, &names).unwrap();
        assert_eq!(
            r,
            Routing {
                priority: Priority::High,
                tenant: Some(TenantId(3)),
                slo_ms: Some(1500)
            }
        );
        h.insert(TENANT_HEADER, "other".parse().unwrap());
        let t = routing_headers(&h, &names).unwrap().tenant.unwrap();
        assert!(t.0 as usize >= MAX_TENANTS);
        h.insert(PRIORITY_HEADER, "urgent".parse().unwrap());
        assert_eq!(
            routing_headers(&h, &names).unwrap_err().code,
            "invalid_priority"
        );
        h.insert(PRIORITY_HEADER, "low".parse().unwrap());
        h.insert(SLO_HEADER, "soon".parse().unwrap());
        assert_eq!(routing_headers(&h, &names).unwrap_err().code, "invalid_slo");
        h.insert(SLO_HEADER, HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(
            routing_headers(&h, &names).unwrap_err().code,
            "invalid_header"
        );
        assert_eq!(tenant_id("42", &names), TenantId(42));
    }
}
