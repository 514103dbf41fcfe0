//! HPACK header compression (RFC 7541), written for this module: a decoder (static table, dynamic
//! table, Huffman) and an encoder (indexed fields, literals with or without indexing, Huffman when
//! shorter, dynamic table size updates).
//!
//! One [`Decoder`] per (sender, connection) and one [`Encoder`] per (receiver, connection): HPACK
//! state is per direction of one HTTP/2 connection (RFC 7541 §2.2).
//!
//! Nothing here panics on hostile input: integers are capped at 2^32 - 1, string lengths are
//! checked against the block, and the decoded header list can be capped (fields past the cap are
//! still decoded, so the dynamic table stays in sync, but not kept).

use super::huffman;
use std::collections::VecDeque;
use std::sync::OnceLock;

/// Longest name in [`STATIC_TABLE`] (`access-control-allow-origin`).
const STATIC_MAX_NAME: usize = 27;

/// The [`STATIC_TABLE`] positions (0-based, in table order) of the names of length `len`: the
/// encoder compares a field only with these (a handful) instead of all 61 entries.
fn static_by_name_len(len: usize) -> &'static [usize] {
    static BY_LEN: OnceLock<Vec<Vec<usize>>> = OnceLock::new();
    let by_len = BY_LEN.get_or_init(|| {
        let mut v = vec![Vec::new(); STATIC_MAX_NAME + 1];
        for (i, (n, _)) in STATIC_TABLE.iter().enumerate() {
            v[n.len()].push(i);
        }
        v
    });
    by_len.get(len).map_or(&[], Vec::as_slice)
}

/// The default SETTINGS_HEADER_TABLE_SIZE, in bytes (RFC 9113 §6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Per-entry overhead counted in table and header list sizes, in bytes (RFC 7541 §4.1).
pub const ENTRY_OVERHEAD: usize = 32;

/// The static table (RFC 7541 Appendix A); index 1 is the first entry.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// One header field: raw name and value bytes, plus whether the sender marked it "never indexed"
/// (RFC 7541 §6.2.3; an intermediary must keep that representation when re-encoding, §7.1.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderField {
    /// Field name (lower case in HTTP/2; not checked here).
    pub name: Vec<u8>,
    /// Field value.
    pub value: Vec<u8>,
    /// Encode as "never indexed".
    pub never_index: bool,
}

impl HeaderField {
    /// A field that may be indexed.
    pub fn new(name: &[u8], value: &[u8]) -> HeaderField {
        HeaderField {
            name: name.to_vec(),
            value: value.to_vec(),
            never_index: false,
        }
    }

    /// Size as counted by HPACK and SETTINGS_MAX_HEADER_LIST_SIZE: name + value + 32 bytes.
    pub fn size(&self) -> usize {
        self.name.len() + self.value.len() + ENTRY_OVERHEAD
    }
}

/// Why a header block could not be decoded. Any of these is a connection error of type
/// COMPRESSION_ERROR (RFC 9113 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpackError {
    /// The block ended inside a representation.
    Truncated,
    /// An integer above 2^32 - 1 or with too many continuation bytes.
    IntegerOverflow,
    /// Index 0 or past the end of the static + dynamic table.
    BadIndex,
    /// Malformed Huffman string.
    Huffman,
    /// A dynamic table size update above the allowed maximum or after the first field.
    BadSizeUpdate,
}

/// The dynamic table (RFC 7541 §2.3.2): newest entry first.
#[derive(Clone, Debug)]
struct DynamicTable {
    entries: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    fn new(max_size: usize) -> DynamicTable {
        DynamicTable {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + ENTRY_OVERHEAD,
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }

    fn set_max(&mut self, max: usize) {
        self.max_size = max;
        self.evict_to(max);
    }

    /// RFC 7541 §4.4: evict until the entry fits; an entry larger than the table empties it.
    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let sz = name.len() + value.len() + ENTRY_OVERHEAD;
        if sz > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - sz);
        self.entries.push_front((name.to_vec(), value.to_vec()));
        self.size += sz;
    }

    /// Entry by HPACK index (1-based over static then dynamic).
    fn get(&self, index: usize) -> Option<(&[u8], &[u8])> {
        if index == 0 {
            return None;
        }
        if index <= STATIC_TABLE.len() {
            return Some(STATIC_TABLE[index - 1]);
        }
        self.entries
            .get(index - STATIC_TABLE.len() - 1)
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
    }
}

/// Reads an HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1) at `*pos`.
fn read_int(buf: &[u8], pos: &mut usize, prefix: u8) -> Result<usize, HpackError> {
    let mask: u8 = if prefix >= 8 {
        0xff
    } else {
        (1u8 << prefix) - 1
    };
    let first = *buf.get(*pos).ok_or(HpackError::Truncated)? & mask;
    *pos += 1;
    if first < mask {
        return Ok(usize::from(first));
    }
    let mut value: u64 = u64::from(mask);
    let mut shift: u32 = 0;
    loop {
        let b = *buf.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        value += u64::from(b & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return Err(HpackError::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return usize::try_from(value).map_err(|_| HpackError::IntegerOverflow);
        }
        shift += 7;
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
    }
}

/// Appends an HPACK integer: `first_bits` are the pattern bits above the prefix (RFC 7541 §5.1).
fn write_int(out: &mut Vec<u8>, first_bits: u8, prefix: u8, value: usize) {
    let mask: usize = if prefix >= 8 {
        0xff
    } else {
        (1usize << prefix) - 1
    };
    if value < mask {
        out.push(first_bits | value as u8);
        return;
    }
    out.push(first_bits | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Reads a string literal (RFC 7541 §5.2) at `*pos`.
fn read_string(buf: &[u8], pos: &mut usize) -> Result<Vec<u8>, HpackError> {
    let huff = *buf.get(*pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = read_int(buf, pos, 7)?;
    let end = pos.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = buf.get(*pos..end).ok_or(HpackError::Truncated)?;
    *pos = end;
    if huff {
        let mut out = Vec::with_capacity(len + len / 2);
        huffman::decode(raw, &mut out).map_err(|_| HpackError::Huffman)?;
        Ok(out)
    } else {
        Ok(raw.to_vec())
    }
}

/// Appends a string literal, Huffman-coded when `huffman` is set and that is shorter.
fn write_string(out: &mut Vec<u8>, s: &[u8], huffman: bool) {
    if huffman {
        let hl = huffman::encoded_len(s);
        if hl < s.len() {
            write_int(out, 0x80, 7, hl);
            huffman::encode(s, out);
            return;
        }
    }
    write_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// The result of decoding one header block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodedBlock {
    /// The fields, in order (only those that fit in the list size cap).
    pub fields: Vec<HeaderField>,
    /// Total header list size in bytes (RFC 9113 §6.5.2 accounting), all fields counted.
    pub list_size: usize,
    /// True when `list_size` exceeded the cap and fields were dropped.
    pub oversize: bool,
}

/// HPACK decoder for one direction of one connection.
#[derive(Clone, Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// The SETTINGS_HEADER_TABLE_SIZE we advertised: the largest size update the peer may send.
    max_allowed: usize,
    /// The limit dropped below the table's size: the next block must start with a size update
    /// (RFC 7541 §4.2).
    update_required: bool,
}

impl Decoder {
    /// A decoder whose peer may use a dynamic table of up to `max_allowed` bytes (our advertised
    /// SETTINGS_HEADER_TABLE_SIZE; 4096 by default).
    pub fn new(max_allowed: usize) -> Decoder {
        Decoder {
            table: DynamicTable::new(max_allowed),
            max_allowed,
            update_required: false,
        }
    }

    /// Changes the limit (our SETTINGS_HEADER_TABLE_SIZE, once the peer acknowledged it). When it
    /// drops below the current table maximum, the next block must start with a size update.
    pub fn set_max_allowed(&mut self, max_allowed: usize) {
        if max_allowed < self.table.max_size {
            self.update_required = true;
        }
        self.max_allowed = max_allowed;
    }

    /// Current dynamic table size in bytes (for tests and metrics).
    pub fn table_size(&self) -> usize {
        self.table.size
    }

    /// Number of entries in the dynamic table.
    pub fn table_len(&self) -> usize {
        self.table.entries.len()
    }

    /// Decodes one complete header block. Fields beyond `max_list_size` bytes (name + value + 32
    /// each) are decoded but not kept, and `oversize` is set. Errors leave the table in an
    /// unspecified (but safe) state: the connection must be closed (COMPRESSION_ERROR).
    pub fn decode(&mut self, buf: &[u8], max_list_size: usize) -> Result<DecodedBlock, HpackError> {
        let mut out = DecodedBlock::default();
        let mut pos = 0;
        let mut seen_field = false;
        if self.update_required {
            if buf.first().is_none_or(|b| b & 0xe0 != 0x20) {
                return Err(HpackError::BadSizeUpdate);
            }
            self.update_required = false;
        }
        while pos < buf.len() {
            let b = buf[pos];
            let field = if b & 0x80 != 0 {
                // Indexed field (§6.1).
                let idx = read_int(buf, &mut pos, 7)?;
                let (n, v) = self.table.get(idx).ok_or(HpackError::BadIndex)?;
                HeaderField::new(n, v)
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): only before the first field (RFC 9113 §4.3.1).
                if seen_field {
                    return Err(HpackError::BadSizeUpdate);
                }
                let size = read_int(buf, &mut pos, 5)?;
                if size > self.max_allowed {
                    return Err(HpackError::BadSizeUpdate);
                }
                self.table.set_max(size);
                continue;
            } else {
                // Literal (§6.2): incremental indexing (01), without indexing (0000), never (0001).
                let (prefix, incremental, never) = if b & 0xc0 == 0x40 {
                    (6, true, false)
                } else {
                    (4, false, b & 0xf0 == 0x10)
                };
                let idx = read_int(buf, &mut pos, prefix)?;
                let name = if idx == 0 {
                    read_string(buf, &mut pos)?
                } else {
                    self.table.get(idx).ok_or(HpackError::BadIndex)?.0.to_vec()
                };
                let value = read_string(buf, &mut pos)?;
                if incremental {
                    self.table.insert(&name, &value);
                }
                HeaderField {
                    name,
                    value,
                    never_index: never,
                }
            };
            seen_field = true;
            out.list_size = out.list_size.saturating_add(field.size());
            if out.list_size > max_list_size {
                out.oversize = true;
            } else {
                out.fields.push(field);
            }
        }
        Ok(out)
    }
}

/// Which fields an [`Encoder`] adds to the dynamic table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexPolicy {
    /// Never add (literals without indexing only; indexed static/dynamic matches still used).
    None,
    /// Add fields likely to repeat: skips per-request values (`:path`, `x-request-id`,
    /// `content-length`, `date`, ...), credentials and entries larger than a quarter of the table.
    Default,
    /// Add every field that fits (used by tests to stress the peer's decoder).
    All,
}

/// HPACK encoder for one direction of one connection.
#[derive(Clone, Debug)]
pub struct Encoder {
    table: DynamicTable,
    /// The largest table we want to use, in bytes.
    preferred: usize,
    /// Smallest and final size to announce at the start of the next block (RFC 7541 §4.2).
    pending_update: Option<(usize, usize)>,
    policy: IndexPolicy,
    huffman: bool,
}

impl Encoder {
    /// An encoder starting with the default 4096-byte table (the peer's SETTINGS_HEADER_TABLE_SIZE
    /// until it says otherwise), using at most `preferred` bytes of it.
    pub fn new(preferred: usize, policy: IndexPolicy, huffman: bool) -> Encoder {
        let mut e = Encoder {
            table: DynamicTable::new(DEFAULT_TABLE_SIZE),
            preferred,
            pending_update: None,
            policy,
            huffman,
        };
        e.set_peer_limit(DEFAULT_TABLE_SIZE as u32);
        e
    }

    /// Applies the peer's SETTINGS_HEADER_TABLE_SIZE: the table becomes `min(limit, preferred)`
    /// bytes, announced by a size update at the start of the next block when it changes.
    pub fn set_peer_limit(&mut self, limit: u32) {
        let new_max = (limit as usize).min(self.preferred);
        if new_max == self.table.max_size {
            return;
        }
        self.pending_update = Some(match self.pending_update {
            Some((lo, _)) => (lo.min(new_max), new_max),
            None => (new_max.min(self.table.max_size), new_max),
        });
        self.table.set_max(new_max);
    }

    /// Current dynamic table size in bytes.
    pub fn table_size(&self) -> usize {
        self.table.size
    }

    fn should_index(&self, f: &HeaderField) -> bool {
        if f.never_index || f.size() > self.table.max_size {
            return false;
        }
        match self.policy {
            IndexPolicy::None => false,
            IndexPolicy::All => true,
            IndexPolicy::Default => {
                const SKIP: [&[u8]; 12] = [
                    b":path",
                    b"content-length",
                    b"x-request-id",
                    b"date",
                    b"etag",
                    b"last-modified",
                    b"authorization",
                    b"proxy-authorization",
                    b"cookie",
                    b"set-cookie",
                    b"x-envoy-expected-rq-timeout-ms",
                    b"x-envoy-upstream-service-time",
                ];
                f.size() * 4 <= self.table.max_size && !SKIP.contains(&f.name.as_slice())
            }
        }
    }

    /// Finds (full match index, name-only match index), static table first.
    fn find(&self, f: &HeaderField) -> (Option<usize>, Option<usize>) {
        let mut name_idx = None;
        for &i in static_by_name_len(f.name.len()) {
            let (n, v) = STATIC_TABLE[i];
            if n == f.name.as_slice() {
                if v == f.value.as_slice() {
                    return (Some(i + 1), Some(i + 1));
                }
                name_idx.get_or_insert(i + 1);
            }
        }
        for (i, (n, v)) in self.table.entries.iter().enumerate() {
            if n == &f.name {
                let idx = STATIC_TABLE.len() + 1 + i;
                if v == &f.value {
                    return (Some(idx), Some(idx));
                }
                name_idx.get_or_insert(idx);
            }
        }
        (None, name_idx)
    }

    /// Encodes `fields` as one header block appended to `out`.
    pub fn encode(&mut self, fields: &[HeaderField], out: &mut Vec<u8>) {
        if let Some((lo, fin)) = self.pending_update.take() {
            if lo < fin {
                write_int(out, 0x20, 5, lo);
            }
            write_int(out, 0x20, 5, fin);
        }
        for f in fields {
            let (full, name) = if f.never_index {
                (None, self.find(f).1)
            } else {
                self.find(f)
            };
            if let Some(idx) = full {
                write_int(out, 0x80, 7, idx);
                continue;
            }
            let (bits, prefix, index) = if f.never_index {
                (0x10, 4, false)
            } else if self.should_index(f) {
                (0x40, 6, true)
            } else {
                (0x00, 4, false)
            };
            match name {
                Some(idx) => write_int(out, bits, prefix, idx),
                None => {
                    write_int(out, bits, prefix, 0);
                    write_string(out, &f.name, self.huffman);
                }
            }
            write_string(out, &f.value, self.huffman);
            if index {
                self.table.insert(&f.name, &f.value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_static_entry_is_found_at_its_index_and_every_name_first_by_name() {
        let enc = Encoder::new(4096, IndexPolicy::Default, false);
        for (i, (n, v)) in STATIC_TABLE.iter().enumerate() {
            let (full, name) = enc.find(&HeaderField::new(n, v));
            assert_eq!(full, Some(i + 1), "{}", String::from_utf8_lossy(n));
            assert_eq!(name, Some(i + 1));
            let first = STATIC_TABLE.iter().position(|(m, _)| m == n).unwrap() + 1;
            let (full, name) = enc.find(&HeaderField::new(n, b"\x00not-in-the-table"));
            assert_eq!((full, name), (None, Some(first)), "{}", String::from_utf8_lossy(n));
        }
        assert_eq!(enc.find(&HeaderField::new(b"x-not-a-static-name-at-all-longer-than-27", b"v")), (None, None));
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn fields(list: &[(&str, &str)]) -> Vec<HeaderField> {
        list.iter()
            .map(|(n, v)| HeaderField::new(n.as_bytes(), v.as_bytes()))
            .collect()
    }

    #[test]
    fn integers_rfc7541_c1() {
        let mut v = Vec::new();
        write_int(&mut v, 0, 5, 10);
        assert_eq!(v, [0x0a]);
        v.clear();
        write_int(&mut v, 0, 5, 1337);
        assert_eq!(v, [0x1f, 0x9a, 0x0a]);
        v.clear();
        write_int(&mut v, 0, 8, 42);
        assert_eq!(v, [42]);
        let mut pos = 0;
        assert_eq!(read_int(&[0x1f, 0x9a, 0x0a], &mut pos, 5), Ok(1337));
        assert_eq!(pos, 3);
        let mut pos = 0;
        assert_eq!(
            read_int(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x0f], &mut pos, 5),
            Err(HpackError::IntegerOverflow)
        );
        let mut pos = 0;
        assert_eq!(
            read_int(&[0x1f, 0x80], &mut pos, 5),
            Err(HpackError::Truncated)
        );
    }

    /// RFC 7541 C.4: requests with Huffman coding, three blocks sharing one dynamic table.
    #[test]
    fn decode_rfc7541_c4() {
        let mut d = Decoder::new(4096);
        let b1 = d
            .decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"), 1 << 16)
            .unwrap();
        assert_eq!(
            b1.fields,
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.table_size(), 57);
        let b2 = d
            .decode(&hex("8286 84be 5886 a8eb 1064 9cbf"), 1 << 16)
            .unwrap();
        assert_eq!(
            b2.fields[4],
            HeaderField::new(b"cache-control", b"no-cache")
        );
        assert_eq!(d.table_size(), 110);
        let b3 = d
            .decode(
                &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
                1 << 16,
            )
            .unwrap();
        assert_eq!(
            b3.fields,
            fields(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(d.table_size(), 164);
    }

    /// RFC 7541 C.3 (no Huffman) first request, produced by our encoder with policy All.
    #[test]
    fn encode_rfc7541_c3_first_request() {
        let mut e = Encoder::new(4096, IndexPolicy::All, false);
        let mut out = Vec::new();
        e.encode(
            &fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ]),
            &mut out,
        );
        assert_eq!(
            out,
            hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d")
        );
        // Second block re-uses the dynamic entry (index 62).
        out.clear();
        e.encode(&fields(&[(":authority", "www.example.com")]), &mut out);
        assert_eq!(out, [0xbe]);
    }

    #[test]
    fn size_update_rules() {
        let mut d = Decoder::new(4096);
        // Size update above the advertised maximum.
        assert_eq!(
            d.decode(&[0x3f, 0xe2, 0x1f], 1 << 16),
            Err(HpackError::BadSizeUpdate)
        ); // 4097
           // Size update after a field.
        assert_eq!(
            d.decode(&[0x82, 0x20], 1 << 16),
            Err(HpackError::BadSizeUpdate)
        );
        // Size update to 0 at start evicts everything.
        let mut d = Decoder::new(4096);
        d.decode(
            &hex("4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
            1 << 16,
        )
        .unwrap();
        assert_eq!(d.table_len(), 1);
        d.decode(&[0x20, 0x82], 1 << 16).unwrap();
        assert_eq!(d.table_len(), 0);
        // Index 62 now refers to nothing.
        assert_eq!(d.decode(&[0xbe], 1 << 16), Err(HpackError::BadIndex));
        assert_eq!(d.decode(&[0x80], 1 << 16), Err(HpackError::BadIndex));
    }

    #[test]
    fn encoder_announces_peer_limit_changes() {
        let mut e = Encoder::new(4096, IndexPolicy::All, true);
        let mut d = Decoder::new(4096);
        let mut out = Vec::new();
        e.encode(&fields(&[("x-a", "1")]), &mut out);
        d.decode(&out, 1 << 16).unwrap();
        assert_eq!(d.table_len(), 1);
        e.set_peer_limit(0);
        e.set_peer_limit(100);
        out.clear();
        e.encode(&fields(&[("x-a", "1")]), &mut out);
        assert_eq!(&out[..2], &[0x20, 0x3f]); // update to 0, then to 100 (0x1f + 69)
        let got = d.decode(&out, 1 << 16).unwrap();
        assert_eq!(got.fields, fields(&[("x-a", "1")]));
        assert_eq!(d.table_len(), 1);
    }

    #[test]
    fn never_indexed_is_preserved() {
        let mut e = Encoder::new(4096, IndexPolicy::All, true);
        let mut d = Decoder::new(4096);
        let mut f = HeaderField::new(b"authorization", b"secret");
        f.never_index = true;
        let mut out = Vec::new();
        e.encode(&[f.clone()], &mut out);
        assert_eq!(out[0] & 0xf0, 0x10);
        let got = d.decode(&out, 1 << 16).unwrap();
        assert_eq!(got.fields, vec![f]);
        assert_eq!(d.table_len(), 0);
    }

    #[test]
    fn oversize_lists_keep_table_in_sync() {
        let mut e = Encoder::new(4096, IndexPolicy::All, false);
        let mut d = Decoder::new(4096);
        let mut out = Vec::new();
        e.encode(&fields(&[("a", "1"), ("b", "2"), ("c", "3")]), &mut out);
        let got = d.decode(&out, 70).unwrap();
        assert!(got.oversize);
        assert_eq!(got.fields.len(), 2);
        assert_eq!(got.list_size, 102);
        assert_eq!(d.table_len(), 3);
        out.clear();
        e.encode(&fields(&[("c", "3")]), &mut out);
        assert_eq!(d.decode(&out, 70).unwrap().fields, fields(&[("c", "3")]));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: crate::core::fuzz_cases(256), ..proptest::prelude::ProptestConfig::default() })]
        #[test]
        fn round_trip_many_blocks(
            blocks in proptest::collection::vec(
                proptest::collection::vec(
                    (proptest::sample::select(vec![":path", "x-a", "x-b", "content-type", "cookie", ":status"]),
                     "[a-z0-9/]{0,40}", proptest::bool::ANY),
                    0..8),
                1..12),
            table in proptest::sample::select(vec![0u32, 64, 256, 4096]),
            huff in proptest::bool::ANY,
        ) {
            let mut e = Encoder::new(4096, IndexPolicy::All, huff);
            let mut d = Decoder::new(4096);
            e.set_peer_limit(table);
            for b in blocks {
                let fs: Vec<HeaderField> = b.iter().map(|(n, v, never)| {
                    let mut f = HeaderField::new(n.as_bytes(), v.as_bytes());
                    f.never_index = *never;
                    f
                }).collect();
                let mut out = Vec::new();
                e.encode(&fs, &mut out);
                let got = d.decode(&out, 1 << 20).unwrap();
                proptest::prop_assert_eq!(got.fields, fs);
                proptest::prop_assert!(d.table_size() <= table as usize);
                proptest::prop_assert_eq!(d.table_size(), e.table_size());
            }
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut d = Decoder::new(4096);
            if let Ok(b) = d.decode(&data, 1000) {
                proptest::prop_assert!(b.fields.iter().map(|f| f.size()).sum::<usize>() <= 1000);
            }
            proptest::prop_assert!(d.table_size() <= 4096);
        }
    }
}
