//! Prompt text for HTTP replays: the load generator turns a trace row into text, the
//! simulated servers turn text back into token counts and prefix blocks.
//!
//! A token is [`BYTES_PER_TOKEN`] bytes of text (a three-letter word and a space), so a
//! prefix block of [`BLOCK_TOKENS`] tokens is [`BLOCK_BYTES`] bytes. The text of a block is a
//! pure function of its id: two requests whose traces share a `hash_ids` prefix send the same
//! leading bytes, and a server (or a cache-aware gateway) that hashes the prompt in blocks
//! sees the same leading blocks.
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::cache::BLOCK_TOKENS;
use crate::trace::TraceRow;

/// Bytes of prompt text per token.
pub const BYTES_PER_TOKEN: usize = 4;

/// Bytes of prompt text per prefix block.
pub const BLOCK_BYTES: usize = BLOCK_TOKENS as usize * BYTES_PER_TOKEN;

/// The tokens a text counts: its length over [`BYTES_PER_TOKEN`], rounded up.
pub fn count_tokens(text_len: usize) -> u32 {
    text_len.div_ceil(BYTES_PER_TOKEN).min(u32::MAX as usize) as u32
}

/// Appends `tokens` tokens of deterministic text derived from `seed` to `out`.
pub fn push_words(out: &mut String, seed: u64, tokens: usize) {
    const LETTERS: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    out.reserve(tokens * BYTES_PER_TOKEN);
    for _ in 0..tokens {
        // splitmix64 step per word
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        for k in 0..3 {
            out.push(LETTERS[((z >> (k * 8)) % 26) as usize] as char);
        }
        out.push(' ');
    }
}

/// The prompt of trace row `index`: `input_tokens` tokens of text whose leading blocks are
/// the texts of the row's `hash_ids` (the last one cut short when the input ends inside it);
/// tokens past the named blocks, and every token of a row without `hash_ids`, are text
/// unique to the row.
pub fn prompt_for(row: &TraceRow, index: usize) -> String {
    let total = row.input_tokens as usize;
    let mut out = String::with_capacity(total * BYTES_PER_TOKEN);
    let mut left = total;
    for &id in &row.hash_ids {
        if left == 0 {
            break;
        }
        let n = left.min(BLOCK_TOKENS as usize);
        push_words(&mut out, id.wrapping_mul(0xA24B_AED4_963E_E407), n);
        left -= n;
    }
    if left > 0 {
        push_words(&mut out, (1 << 63) | index as u64, left);
    }
    out
}

/// The ids of a text's whole [`BLOCK_BYTES`] blocks, each a hash of its block *and* every
/// block before it (so equal ids mean equal prefixes). A trailing partial block has no id,
/// as a paged KV cache keeps only full blocks.
pub fn block_ids(text: &[u8]) -> Vec<u64> {
    let mut prev = 0u64;
    text.chunks_exact(BLOCK_BYTES)
        .map(|chunk| {
            let mut h = DefaultHasher::new();
            prev.hash(&mut h);
            chunk.hash(&mut h);
            prev = h.finish();
            prev
        })
        .collect()
}

#[cfg(test)]
mod test {
    use super::*;

    fn row(input: u32, ids: &[u64]) -> TraceRow {
        TraceRow {
            arrival_ms: 0,
            input_tokens: input,
            output_tokens: 1,
            hash_ids: ids.to_vec(),
        }
    }

    #[test]
    fn shared_hash_ids_share_text_and_blocks() {
        let a = prompt_for(&row(1500, &[1, 2, 3]), 0);
        let b = prompt_for(&row(1200, &[1, 2, 9]), 1);
        assert_eq!(count_tokens(a.len()), 1500);
        assert_eq!(count_tokens(b.len()), 1200);
        assert_eq!(a[..2 * BLOCK_BYTES], b[..2 * BLOCK_BYTES]);
        let (ba, bb) = (block_ids(a.as_bytes()), block_ids(b.as_bytes()));
        assert_eq!((ba.len(), bb.len()), (2, 2));
        assert_eq!(ba[..2], bb[..2]);
        // No hash ids: unique per row.
        let c = prompt_for(&row(1024, &[]), 5);
        let d = prompt_for(&row(1024, &[]), 6);
        assert_ne!(block_ids(c.as_bytes())[0], block_ids(d.as_bytes())[0]);
        assert_eq!(prompt_for(&row(0, &[]), 1), "");
        // A different first block changes every later id.
        let e = prompt_for(&row(1024, &[7, 2]), 0);
        let f = prompt_for(&row(1024, &[1, 2]), 0);
        assert_ne!(block_ids(e.as_bytes())[1], block_ids(f.as_bytes())[1]);
    }
}
