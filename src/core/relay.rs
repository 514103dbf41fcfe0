//! The pure pieces of the byte relay between a claimed tunnel and the HTTP side.
//!
//! - [`EchoStripper`]: a tunnel may be claimed while an RPING is in flight. The initiator then
//!   echoes `RPING` before its first HTTP/2 bytes (docs/protocol.md#wire-contract), and those
//!   echoes must not reach the HTTP codec. The stripper removes them from the head of the
//!   initiator's byte stream.
//! - [`PendingBytes`]: a bounded FIFO of byte chunks with an end-of-stream flag, used to hand
//!   bytes from one worker to another.

use std::fmt;

/// The keepalive payload, 5 ASCII bytes with no framing (docs/protocol.md#rping-keepalive).
const RPING: &[u8; 5] = b"RPING";

/// Removes up to `expected` leading `RPING` echoes from the initiator's byte stream after a
/// claim, and forwards every other byte unchanged and in order.
///
/// Rules:
/// - The stream is examined from its first byte. Each complete leading `RPING` is dropped, as
///   long as fewer than `expected` have been dropped.
/// - A partial `RPING` prefix (`R`, `RP`, ... up to 4 bytes) split across reads is held back
///   until the next read decides it.
/// - The first byte that breaks the `RPING` pattern ends stripping for good: the held-back
///   prefix and everything after it are forwarded, never lost or reordered.
/// - After `expected` echoes have been dropped, everything is forwarded (a 6th, unexpected
///   `RPING` would be the peer's own data).
///
/// Over-estimating `expected` is harmless for a 1.40.0 initiator: its first HTTP/2 byte (a
/// SETTINGS frame header, or `H` of an HTTP/1.1 status line) is not `R`, so stripping stops there.
/// Under-estimating lets an echo reach the codec.
///
/// Memory: at most 4 bytes are held back (see [`buffered_len`](Self::buffered_len)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoStripper {
    /// Echoes still allowed to be stripped.
    remaining: u32,
    /// Length of the held-back `RPING` prefix (0..=4); its content is `RPING[..matched]`.
    matched: usize,
    /// Stripping ended (by a mismatch, by reaching `expected`, or by `finish`).
    done: bool,
}

impl EchoStripper {
    /// A stripper that removes up to `expected` leading `RPING` echoes. `expected` is the value
    /// returned by `Keepalive::claim` (RPINGs sent but not yet echoed). With `expected == 0`
    /// every byte is forwarded at once.
    pub fn new(expected: u32) -> Self {
        Self::resume(expected, 0)
    }

    /// Like [`new`](Self::new), but the first `already_matched` bytes of `RPING` (values above
    /// 4 are treated as 4) were already consumed by the keepalive before the claim (its
    /// `partial_echo_len()`). The stripper behaves exactly as if `RPING[..already_matched]` had
    /// been fed first, so these bytes are forwarded if the echo turns out not to be `RPING`.
    pub fn resume(expected: u32, already_matched: usize) -> Self {
        let matched = already_matched.min(RPING.len() - 1);
        EchoStripper {
            remaining: expected,
            matched,
            done: false,
        }
        .settled()
    }

    /// Applies the "nothing left to strip" rule right away: with no echo left to strip the
    /// stripper is done, and a held-back prefix waits only to be forwarded by the next `feed`.
    fn settled(mut self) -> Self {
        if self.remaining == 0 {
            self.done = true;
        }
        self
    }

    /// Consumes one read from the tunnel and returns the bytes to forward to the HTTP side
    /// (possibly empty while a partial `RPING` is held back).
    pub fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + self.matched);
        if self.done {
            self.flush_into(&mut out);
            out.extend_from_slice(data);
            return out;
        }
        for (i, &b) in data.iter().enumerate() {
            if b == RPING[self.matched] {
                self.matched += 1;
                if self.matched == RPING.len() {
                    // One full echo: drop it.
                    self.matched = 0;
                    self.remaining = self.remaining.saturating_sub(1);
                    if self.remaining == 0 {
                        self.done = true;
                        out.extend_from_slice(&data[i + 1..]);
                        return out;
                    }
                }
            } else {
                // Not an echo: forward the held-back prefix, this byte and the rest.
                self.done = true;
                self.flush_into(&mut out);
                out.extend_from_slice(&data[i..]);
                return out;
            }
        }
        out
    }

    /// [`EchoStripper::feed`] for a read the caller owns: once stripping has ended and nothing is
    /// held back, the read is returned as it is, without a copy.
    pub fn feed_owned(&mut self, data: Vec<u8>) -> Vec<u8> {
        if self.done && self.matched == 0 {
            return data;
        }
        self.feed(&data)
    }

    /// Ends the stream (e.g. the tunnel closed): stops stripping and returns the held-back
    /// partial prefix, if any, so that no byte is lost.
    pub fn finish(&mut self) -> Vec<u8> {
        self.done = true;
        let mut out = Vec::new();
        self.flush_into(&mut out);
        out
    }

    /// True once stripping has ended; from then on `feed` returns its input unchanged (after
    /// any held-back prefix).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Echoes that may still be stripped.
    pub fn remaining(&self) -> u32 {
        if self.done {
            0
        } else {
            self.remaining
        }
    }

    /// Bytes currently held back (0..=4).
    pub fn buffered_len(&self) -> usize {
        self.matched
    }

    fn flush_into(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&RPING[..self.matched]);
        self.matched = 0;
    }
}

/// Why [`PendingBytes::push`] refused a chunk; the chunk is handed back unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    /// Accepting the chunk would exceed the capacity; retry after the reader took the bytes.
    Full(Vec<u8>),
    /// [`PendingBytes::mark_end`] was called; no more bytes are accepted.
    Ended(Vec<u8>),
}

impl PushError {
    /// The refused chunk.
    pub fn into_chunk(self) -> Vec<u8> {
        match self {
            PushError::Full(c) | PushError::Ended(c) => c,
        }
    }
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full(c) => write!(f, "pending bytes full, {} bytes refused", c.len()),
            PushError::Ended(c) => write!(f, "pending bytes ended, {} bytes refused", c.len()),
        }
    }
}

impl std::error::Error for PushError {}

/// A bounded FIFO of byte chunks for handing bytes from one worker to another, with an
/// end-of-stream flag.
///
/// Bound: a push is refused with [`PushError::Full`] when the total would exceed `capacity`
/// bytes, except that a chunk is always accepted into an empty queue (so a single read larger
/// than the capacity can still make progress). Hence `len_bytes() <= max(capacity, largest
/// chunk)`. Empty chunks are accepted and dropped. The type does no locking; the caller wraps it
/// in its own mutex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBytes {
    chunks: Vec<Vec<u8>>,
    bytes: usize,
    capacity: usize,
    ended: bool,
}

impl PendingBytes {
    /// An empty queue holding at most about `capacity` bytes (see the type docs).
    pub fn new(capacity: usize) -> Self {
        PendingBytes {
            chunks: Vec::new(),
            bytes: 0,
            capacity,
            ended: false,
        }
    }

    /// Appends `chunk`. Errors: [`PushError::Ended`] after [`mark_end`](Self::mark_end),
    /// [`PushError::Full`] when the bound would be exceeded; both return the chunk.
    pub fn push(&mut self, chunk: Vec<u8>) -> Result<(), PushError> {
        if self.ended {
            return Err(PushError::Ended(chunk));
        }
        if chunk.is_empty() {
            return Ok(());
        }
        if self.bytes > 0 && self.bytes.saturating_add(chunk.len()) > self.capacity {
            return Err(PushError::Full(chunk));
        }
        self.bytes = self.bytes.saturating_add(chunk.len());
        self.chunks.push(chunk);
        Ok(())
    }

    /// Removes and returns all queued chunks, oldest first. The end flag is kept.
    pub fn take_all(&mut self) -> Vec<Vec<u8>> {
        self.bytes = 0;
        std::mem::take(&mut self.chunks)
    }

    /// Total bytes queued.
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// True when no byte is queued.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// The configured capacity (bytes).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes that can still be pushed without hitting the bound.
    pub fn free_bytes(&self) -> usize {
        self.capacity.saturating_sub(self.bytes)
    }

    /// Marks the end of the stream (the writer side closed). Queued bytes stay readable.
    pub fn mark_end(&mut self) {
        self.ended = true;
    }

    /// True after [`mark_end`](Self::mark_end).
    pub fn is_end(&self) -> bool {
        self.ended
    }

    /// True when the stream ended and every byte was taken.
    pub fn is_finished(&self) -> bool {
        self.ended && self.bytes == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PREFACE: &[u8] = b"\x00\x00\x12\x04\x00\x00\x00\x00\x00";

    fn feed_all(s: &mut EchoStripper, parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            out.extend(s.feed(p));
            assert!(s.buffered_len() <= 4);
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn strips_one_echo_split_across_reads() {
        let mut s = EchoStripper::new(1);
        assert_eq!(s.feed(b"RP"), b"");
        assert_eq!(s.buffered_len(), 2);
        assert!(!s.is_done());
        let out = s.feed(b"ING\x00\x00\x12");
        assert_eq!(out, b"\x00\x00\x12");
        assert!(s.is_done());
        assert_eq!(
            s.feed(b"RPING"),
            b"RPING",
            "after the expected echoes RPING is data"
        );
    }

    #[test]
    fn zero_expected_forwards_everything() {
        let mut s = EchoStripper::new(0);
        assert!(s.is_done());
        assert_eq!(s.feed(b"RPINGabc"), b"RPINGabc");
    }

    #[test]
    fn mismatch_after_partial_prefix_forwards_prefix() {
        let mut s = EchoStripper::new(3);
        assert_eq!(s.feed(b"RPI"), b"");
        assert_eq!(s.feed(b"X1"), b"RPIX1");
        assert!(s.is_done());
        assert_eq!(s.feed(b"RPING"), b"RPING");
    }

    #[test]
    fn strips_no_more_than_expected() {
        let mut s = EchoStripper::new(2);
        assert_eq!(feed_all(&mut s, &[b"RPINGRPINGRPINGxy"]), b"RPINGxy");
    }

    #[test]
    fn fewer_echoes_than_expected_is_fine() {
        let mut s = EchoStripper::new(5);
        let mut input = b"RPING".to_vec();
        input.extend_from_slice(PREFACE);
        assert_eq!(feed_all(&mut s, &[&input]), PREFACE);
        assert_eq!(s.remaining(), 0);
    }

    #[test]
    fn resume_with_prefix_consumed_by_keepalive() {
        let mut s = EchoStripper::resume(1, 2);
        assert_eq!(s.buffered_len(), 2);
        assert_eq!(s.feed(b"INGhello"), b"hello");
        // The prefix turned out not to be an echo: it is forwarded, not lost.
        let mut s = EchoStripper::resume(1, 3);
        assert_eq!(s.feed(b"Zz"), b"RPIZz");
        // Out-of-range prefix lengths are clamped to 4.
        let s = EchoStripper::resume(1, 99);
        assert_eq!(s.buffered_len(), 4);
        // Nothing expected: the consumed prefix is peer data, forwarded on the next feed.
        let mut s = EchoStripper::resume(0, 2);
        assert_eq!(s.feed(b"x"), b"RPx");
    }

    #[test]
    fn finish_returns_held_prefix() {
        let mut s = EchoStripper::new(2);
        assert_eq!(s.feed(b"RPINGRPIN"), b"");
        assert_eq!(s.finish(), b"RPIN");
        assert!(s.is_done());
        assert_eq!(s.finish(), b"");
    }

    /// Reference: strip up to `expected` leading RPINGs from the whole stream at once.
    fn model(input: &[u8], expected: u32) -> Vec<u8> {
        let mut rest = input;
        let mut left = expected;
        while left > 0 && rest.starts_with(RPING) {
            rest = &rest[RPING.len()..];
            left -= 1;
        }
        rest.to_vec()
    }

    fn split(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.push(0);
        points.push(input.len());
        points.sort_unstable();
        points
            .windows(2)
            .map(|w| input[w[0]..w[1]].to_vec())
            .collect()
    }

    fn run(expected: u32, chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut s = EchoStripper::new(expected);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(s.feed(c));
            assert!(s.buffered_len() <= 4);
        }
        out.extend(s.finish());
        out
    }

    /// Bytes biased towards pieces of RPING.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b"RPING".to_vec()),
                Just(b"RP".to_vec()),
                Just(b"ING".to_vec()),
                Just(b"R".to_vec()),
                proptest::collection::vec(any::<u8>(), 1..4),
            ],
            0..8,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: crate::core::fuzz_cases(256), ..ProptestConfig::default() })]
        /// Property A: let `payload` start with a byte other than `R` (as HTTP/2 and HTTP/1.1
        /// responses do), or be empty. For `RPING`*k ++ payload split into any chunks, the
        /// concatenated output (all `feed`s, then `finish`) is exactly `payload` when
        /// k <= expected, and `RPING`*(k - expected) ++ payload when k > expected.
        #[test]
        fn strips_exactly_the_expected_echoes(
            k in 0u32..5,
            expected in 0u32..5,
            first in any::<u8>().prop_filter("not R", |b| *b != b'R'),
            tail in proptest::collection::vec(any::<u8>(), 0..40),
            empty_payload in any::<bool>(),
            cuts in proptest::collection::vec(0usize..100, 0..10),
        ) {
            let mut payload = Vec::new();
            if !empty_payload {
                payload.push(first);
                payload.extend(tail);
            }
            let mut input = RPING.repeat(k as usize);
            input.extend_from_slice(&payload);
            let out = run(expected, &split(&input, &cuts));
            let mut want = RPING.repeat(k.saturating_sub(expected) as usize);
            want.extend_from_slice(&payload);
            prop_assert_eq!(out, want);
        }

        /// Property B: for any byte stream and any split, the output equals the reference
        /// (strip up to `expected` leading RPINGs from the whole stream): no byte lost,
        /// duplicated or reordered, independent of read boundaries.
        #[test]
        fn split_independent_and_lossless(
            input in stream(),
            expected in 0u32..4,
            cuts in proptest::collection::vec(0usize..64, 0..12),
        ) {
            prop_assert_eq!(run(expected, &split(&input, &cuts)), model(&input, expected));
        }
    }

    #[test]
    fn pending_bytes_fifo_and_counts() {
        let mut p = PendingBytes::new(10);
        assert!(p.is_empty());
        p.push(b"abc".to_vec()).unwrap();
        p.push(Vec::new()).unwrap();
        p.push(b"defg".to_vec()).unwrap();
        assert_eq!(p.len_bytes(), 7);
        assert_eq!(p.free_bytes(), 3);
        assert_eq!(p.take_all(), vec![b"abc".to_vec(), b"defg".to_vec()]);
        assert_eq!(p.len_bytes(), 0);
        assert!(p.take_all().is_empty());
    }

    #[test]
    fn pending_bytes_bound() {
        let mut p = PendingBytes::new(4);
        // An oversize chunk is accepted into an empty queue ...
        p.push(b"0123456789".to_vec()).unwrap();
        // ... but nothing more until it is taken.
        assert_eq!(p.push(b"x".to_vec()), Err(PushError::Full(b"x".to_vec())));
        p.take_all();
        p.push(b"ab".to_vec()).unwrap();
        p.push(b"cd".to_vec()).unwrap();
        let err = p.push(b"e".to_vec()).unwrap_err();
        assert_eq!(err.into_chunk(), b"e");
        assert_eq!(p.len_bytes(), 4);
    }

    #[test]
    fn pending_bytes_end() {
        let mut p = PendingBytes::new(8);
        p.push(b"ab".to_vec()).unwrap();
        p.mark_end();
        assert!(p.is_end());
        assert!(!p.is_finished(), "queued bytes are still readable");
        assert_eq!(p.push(b"c".to_vec()), Err(PushError::Ended(b"c".to_vec())));
        assert_eq!(p.take_all(), vec![b"ab".to_vec()]);
        assert!(p.is_finished());
        assert!(p.is_end());
    }
}
