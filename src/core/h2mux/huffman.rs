//! The HPACK Huffman code (RFC 7541 §5.2 and Appendix B).
//!
//! The code is canonical: sorting the 257 symbols by (code length, symbol) and counting up gives
//! exactly the codes of Appendix B. So only the code lengths are listed here (a fact of the RFC);
//! the codes and the decoding tables are derived at compile time.

/// Code length in bits of each symbol 0..=255 and of EOS (256), from RFC 7541 Appendix B.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0..
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16..
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 32..
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 48..
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 64..
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 80..
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 96..
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 112..
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128..
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144..
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160..
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176..
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192..
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208..
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224..
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240..
    30, // 256 (EOS)
];

/// Longest code length in bits.
const MAX_LEN: usize = 30;

/// The EOS symbol (RFC 7541 §5.2): never valid inside a string.
const EOS: u16 = 256;

/// Derived decoding tables for a canonical code.
struct Canonical {
    /// Code of each symbol (right-aligned in `CODE_LENGTHS[sym]` bits).
    codes: [u32; 257],
    /// Symbols sorted by (length, symbol).
    sorted: [u16; 257],
    /// Per length: first code of that length.
    first_code: [u32; MAX_LEN + 1],
    /// Per length: index in `sorted` of the first symbol of that length.
    first_index: [u16; MAX_LEN + 1],
    /// Per length: number of symbols of that length.
    count: [u16; MAX_LEN + 1],
}

const fn build() -> Canonical {
    let mut t = Canonical {
        codes: [0; 257],
        sorted: [0; 257],
        first_code: [0; MAX_LEN + 1],
        first_index: [0; MAX_LEN + 1],
        count: [0; MAX_LEN + 1],
    };
    let mut code: u32 = 0;
    let mut n: usize = 0;
    let mut len: usize = 1;
    while len <= MAX_LEN {
        t.first_code[len] = code;
        t.first_index[len] = n as u16;
        let mut sym = 0;
        while sym < 257 {
            if CODE_LENGTHS[sym] as usize == len {
                t.codes[sym] = code;
                t.sorted[n] = sym as u16;
                n += 1;
                t.count[len] += 1;
                code += 1;
            }
            sym += 1;
        }
        code <<= 1;
        len += 1;
    }
    t
}

static TABLE: Canonical = build();

/// Number of bytes `data` takes once Huffman-encoded (padding included).
pub fn encoded_len(data: &[u8]) -> usize {
    let bits: usize = data
        .iter()
        .map(|&b| CODE_LENGTHS[b as usize] as usize)
        .sum();
    bits.div_ceil(8)
}

/// Appends the Huffman encoding of `data` to `out`, padded with the EOS prefix (all ones).
pub fn encode(data: &[u8], out: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut nbits: u32 = 0;
    for &b in data {
        let len = u32::from(CODE_LENGTHS[b as usize]);
        acc = (acc << len) | u64::from(TABLE.codes[b as usize]);
        nbits += len;
        while nbits >= 8 {
            nbits -= 8;
            out.push((acc >> nbits) as u8);
        }
        acc &= (1u64 << nbits) - 1;
    }
    if nbits > 0 {
        let pad = 8 - nbits;
        out.push(((acc << pad) | ((1u64 << pad) - 1)) as u8);
    }
}

/// A malformed Huffman string (RFC 7541 §5.2): EOS inside the data, padding longer than 7 bits, or
/// padding that is not a prefix of EOS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HuffmanError;

/// Decodes a Huffman-encoded string, appending the symbols to `out`.
pub fn decode(data: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let mut code: u32 = 0;
    let mut len: usize = 0;
    for &byte in data {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len > MAX_LEN {
                return Err(HuffmanError);
            }
            let count = u32::from(TABLE.count[len]);
            let first = TABLE.first_code[len];
            if count > 0 && code >= first && code - first < count {
                let idx = usize::from(TABLE.first_index[len]) + (code - first) as usize;
                let sym = TABLE.sorted.get(idx).copied().ok_or(HuffmanError)?;
                if sym == EOS {
                    return Err(HuffmanError);
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (a prefix of EOS).
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(HuffmanError);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode(s, &mut v);
        assert_eq!(v.len(), encoded_len(s));
        v
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn known_codes_from_appendix_b() {
        // A few codes read off RFC 7541 Appendix B.
        assert_eq!(
            (TABLE.codes[b'0' as usize], CODE_LENGTHS[b'0' as usize]),
            (0x0, 5)
        );
        assert_eq!(
            (TABLE.codes[b'a' as usize], CODE_LENGTHS[b'a' as usize]),
            (0x3, 5)
        );
        assert_eq!(
            (TABLE.codes[b' ' as usize], CODE_LENGTHS[b' ' as usize]),
            (0x14, 6)
        );
        assert_eq!((TABLE.codes[0], CODE_LENGTHS[0]), (0x1ff8, 13));
        assert_eq!((TABLE.codes[256], CODE_LENGTHS[256]), (0x3fff_ffff, 30));
        assert_eq!((TABLE.codes[255], CODE_LENGTHS[255]), (0x3ff_ffee, 26));
    }

    #[test]
    fn rfc7541_appendix_c_strings() {
        let cases: [(&[u8], &str); 6] = [
            (b"www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
            (b"no-cache", "a8eb 1064 9cbf"),
            (b"custom-key", "25a8 49e9 5ba9 7d7f"),
            (b"custom-value", "25a8 49e9 5bb8 e8b4 bf"),
            (b"302", "6402"),
            (b"private", "aec3 771a 4b"),
        ];
        for (plain, h) in cases {
            assert_eq!(enc(plain), hex(h), "{}", String::from_utf8_lossy(plain));
            let mut d = Vec::new();
            decode(&hex(h), &mut d).unwrap();
            assert_eq!(d, plain);
        }
    }

    #[test]
    fn rejects_bad_padding_and_eos() {
        let mut d = Vec::new();
        // 8 one-bits of padding are too long.
        assert_eq!(decode(&[0xff], &mut d), Err(HuffmanError));
        // '0' is 00000; padding with zeros is not an EOS prefix.
        assert_eq!(decode(&[0x00], &mut d), Err(HuffmanError));
        // EOS encoded explicitly (30 ones) + 2 ones of padding.
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff], &mut d), Err(HuffmanError));
    }

    proptest::proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let e = enc(&data);
            let mut d = Vec::new();
            decode(&e, &mut d).unwrap();
            proptest::prop_assert_eq!(d, data);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut d = Vec::new();
            let _ = decode(&data, &mut d);
            proptest::prop_assert!(d.len() <= data.len() * 8 / 5 + 1);
        }
    }
}
