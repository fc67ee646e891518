//! Value codec: integers, MAC and IPv4/IPv6 addresses ↔ canonical P4Runtime bytestrings.
//!
//! P4Runtime carries every `bit<W>` value as a big-endian bytestring. The canonical form (what
//! this module produces and what servers return) is the shortest one: no leading zero bytes, and
//! the value zero is a single `0x00` byte. Decoding also accepts zero-padded input (servers must
//! accept it too), but always checks that the value fits in `W` bits: a value that does not fit is
//! an error, never a silent truncation.
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use thiserror::Error;

/// Errors of the value codec.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// The value needs more bits than the field has.
    #[error("value 0x{value_hex} needs {needed} bits but the field is bit<{bitwidth}>")]
    TooWide {
        /// Hex of the (canonical) value.
        value_hex: String,
        /// Bits the value needs.
        needed: u32,
        /// Declared width of the field.
        bitwidth: u32,
    },
    /// A negative integer was given for an unsigned `bit<W>` field.
    #[error("negative value {0} cannot be encoded as an unsigned bit<W> value")]
    Negative(i128),
    /// An empty bytestring (P4Runtime requires at least one byte).
    #[error("empty bytestring: P4Runtime values have at least one byte (zero is 0x00)")]
    Empty,
    /// The value is wider than 128 bits and cannot be returned as an integer.
    #[error("value of {0} bytes does not fit in 128 bits")]
    TooLongForInt(usize),
    /// A text value (MAC address, ...) could not be parsed.
    #[error("cannot parse {what} from {input:?}")]
    Parse {
        /// What was expected.
        what: &'static str,
        /// The rejected input.
        input: String,
    },
    /// Decoding to a fixed-size type (MAC, IPv4) but the value has the wrong width.
    #[error("a {what} needs a bit<{expected}> field, this one is bit<{bitwidth}>")]
    WrongWidth {
        /// Type being decoded.
        what: &'static str,
        /// Width the type needs.
        expected: u32,
        /// Width of the field.
        bitwidth: u32,
    },
}

/// Number of significant bits in a big-endian byte string (0 for the value zero).
pub fn significant_bits(be: &[u8]) -> u32 {
    match be.iter().position(|&b| b != 0) {
        None => 0,
        Some(i) => (be.len() - i - 1) as u32 * 8 + (8 - be[i].leading_zeros()),
    }
}

/// Encodes an arbitrary big-endian value (any length, leading zeros allowed) as the canonical
/// bytestring of a `bit<bitwidth>` field, failing if it does not fit.
pub fn encode_be(be: &[u8], bitwidth: u32) -> Result<Vec<u8>, CodecError> {
    let needed = significant_bits(be);
    let canonical = canonical(be);
    if needed > bitwidth {
        return Err(CodecError::TooWide {
            value_hex: hex(&canonical),
            needed,
            bitwidth,
        });
    }
    Ok(canonical)
}

/// Encodes an unsigned integer as the canonical bytestring of a `bit<bitwidth>` field.
pub fn encode_u128(value: u128, bitwidth: u32) -> Result<Vec<u8>, CodecError> {
    encode_be(&value.to_be_bytes(), bitwidth)
}

/// Strips leading zero bytes, keeping one byte for zero.
pub fn canonical(be: &[u8]) -> Vec<u8> {
    match be.iter().position(|&b| b != 0) {
        None => vec![0],
        Some(i) => be[i..].to_vec(),
    }
}

/// True when `be` is the canonical form (non-empty, no leading zero byte unless it is `[0]`).
pub fn is_canonical(be: &[u8]) -> bool {
    match be {
        [] => false,
        [_] => true,
        [first, ..] => *first != 0,
    }
}

/// Checks a received bytestring against a `bit<bitwidth>` field and returns its canonical form.
/// Zero-padded input is accepted; an empty string or a value wider than the field is rejected.
pub fn check(be: &[u8], bitwidth: u32) -> Result<Vec<u8>, CodecError> {
    if be.is_empty() {
        return Err(CodecError::Empty);
    }
    encode_be(be, bitwidth)
}

/// Decodes a bytestring of a `bit<bitwidth>` field (bitwidth ≤ 128) as an unsigned integer.
pub fn decode_u128(be: &[u8], bitwidth: u32) -> Result<u128, CodecError> {
    let c = check(be, bitwidth)?;
    if c.len() > 16 {
        return Err(CodecError::TooLongForInt(c.len()));
    }
    Ok(c.iter().fold(0u128, |acc, &b| (acc << 8) | u128::from(b)))
}

/// Decodes a `bit<32>` value as an IPv4 address.
pub fn decode_ipv4(be: &[u8], bitwidth: u32) -> Result<Ipv4Addr, CodecError> {
    if bitwidth != 32 {
        return Err(CodecError::WrongWidth {
            what: "IPv4 address",
            expected: 32,
            bitwidth,
        });
    }
    Ok(Ipv4Addr::from(decode_u128(be, 32)? as u32))
}

/// Decodes a `bit<48>` value as a MAC address.
pub fn decode_mac(be: &[u8], bitwidth: u32) -> Result<MacAddr, CodecError> {
    if bitwidth != 48 {
        return Err(CodecError::WrongWidth {
            what: "MAC address",
            expected: 48,
            bitwidth,
        });
    }
    let v = decode_u128(be, 48)?;
    let b = v.to_be_bytes();
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[10..16]);
    Ok(MacAddr(m))
}

/// Lower-case hex of a byte string (no separators).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A value that can be written into a `bit<W>` field: integers, addresses, raw bytes.
pub trait P4Value {
    /// The value as big-endian bytes (any length; leading zeros are stripped on encoding).
    fn p4_be_bytes(&self) -> Result<Vec<u8>, CodecError>;

    /// The canonical bytestring of this value for a `bit<bitwidth>` field.
    fn encode(&self, bitwidth: u32) -> Result<Vec<u8>, CodecError> {
        encode_be(&self.p4_be_bytes()?, bitwidth)
    }
}

macro_rules! unsigned_value {
    ($($t:ty),*) => {$(
        impl P4Value for $t {
            fn p4_be_bytes(&self) -> Result<Vec<u8>, CodecError> {
                Ok(self.to_be_bytes().to_vec())
            }
            // From the stack array: one allocation (the result) per value instead of two.
            fn encode(&self, bitwidth: u32) -> Result<Vec<u8>, CodecError> {
                encode_be(&self.to_be_bytes(), bitwidth)
            }
        }
    )*};
}
unsigned_value!(u8, u16, u32, u64, u128, usize);

macro_rules! signed_value {
    ($($t:ty),*) => {$(
        impl P4Value for $t {
            fn p4_be_bytes(&self) -> Result<Vec<u8>, CodecError> {
                if *self < 0 {
                    return Err(CodecError::Negative(*self as i128));
                }
                Ok(self.to_be_bytes().to_vec())
            }
        }
    )*};
}
signed_value!(i8, i16, i32, i64, i128, isize);

impl P4Value for bool {
    fn p4_be_bytes(&self) -> Result<Vec<u8>, CodecError> {
        Ok(vec![u8::from(*self)])
    }
}

impl P4Value for Ipv4Addr {
    fn p4_be_bytes(&self) -> Result<Vec<u8>, CodecError> {
        Ok(self.octets().to_vec())
    }
    fn encode(&self, bitwidth: u32) -> Result<Vec<u8>, CodecError> {
        encode_be(&self.octets(), bitwidth)
    }
}

impl P4Value for Ipv6Addr {
    fn p4_be_bytes(&self) -> Result<Vec<u8>, CodecError> {
        Ok(self.octets().to_vec())
    }
}

impl P4Value for MacAddr {
    fn p4_be_bytes(&self) -> Result<Vec<u8>, CodecError> {
        Ok(self.0.to_vec())
    }
}

impl P4Value for [u8] {
    fn p4_be_bytes(&self) -> Result<Vec<u8>, CodecError> {
        Ok(self.to_vec())
    }
}

impl<const N: usize> P4Value for [u8; N] {
    fn p4_be_bytes(&self) -> Result<Vec<u8>, CodecError> {
        Ok(self.to_vec())
    }
}

impl P4Value for Vec<u8> {
    fn p4_be_bytes(&self) -> Result<Vec<u8>, CodecError> {
        Ok(self.clone())
    }
}

impl<T: P4Value + ?Sized> P4Value for &T {
    fn p4_be_bytes(&self) -> Result<Vec<u8>, CodecError> {
        (**self).p4_be_bytes()
    }
}

/// A 48-bit Ethernet MAC address; parses and prints as `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = CodecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CodecError::Parse {
            what: "MAC address (aa:bb:cc:dd:ee:ff)",
            input: s.to_string(),
        };
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut m = [0u8; 6];
        for (o, p) in m.iter_mut().zip(parts) {
            if p.is_empty() || p.len() > 2 {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        Ok(MacAddr(m))
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_one_zero_byte() {
        assert_eq!(encode_u128(0, 16).unwrap(), vec![0]);
        assert_eq!(0u8.encode(1).unwrap(), vec![0]);
    }

    #[test]
    fn leading_zero_bytes_are_stripped() {
        assert_eq!(encode_u128(0x0102, 32).unwrap(), vec![1, 2]);
        assert_eq!(
            Ipv4Addr::new(0, 0, 1, 2).encode(32).unwrap(),
            vec![1, 2],
            "IPv4 0.0.1.2 is canonical 0x0102"
        );
        assert_eq!(
            Ipv4Addr::new(10, 0, 0, 1).encode(32).unwrap(),
            vec![10, 0, 0, 1]
        );
    }

    #[test]
    fn bit9_port_checks_width_in_bits_not_bytes() {
        assert_eq!(511u16.encode(9).unwrap(), vec![1, 0xff]);
        let e = 512u16.encode(9).unwrap_err();
        assert_eq!(
            e,
            CodecError::TooWide {
                value_hex: "0200".into(),
                needed: 10,
                bitwidth: 9
            }
        );
        assert!(e.to_string().contains("bit<9>"), "{e}");
    }

    #[test]
    fn negative_values_are_rejected() {
        assert_eq!((-1i32).encode(16), Err(CodecError::Negative(-1)));
    }

    #[test]
    fn decode_accepts_padding_but_checks_width() {
        assert_eq!(decode_u128(&[0, 0, 0, 7], 16).unwrap(), 7);
        assert_eq!(decode_u128(&[0], 8).unwrap(), 0);
        assert!(matches!(
            decode_u128(&[1, 0], 8),
            Err(CodecError::TooWide { .. })
        ));
        assert_eq!(decode_u128(&[], 8), Err(CodecError::Empty));
    }

    #[test]
    fn mac_parse_print_encode() {
        let m: MacAddr = "00:11:22:aa:BB:cc".parse().unwrap();
        assert_eq!(m.to_string(), "00:11:22:aa:bb:cc");
        let enc = m.encode(48).unwrap();
        assert_eq!(enc, vec![0x11, 0x22, 0xaa, 0xbb, 0xcc]);
        assert_eq!(decode_mac(&enc, 48).unwrap(), m);
        assert!("00:11:22:aa:bb".parse::<MacAddr>().is_err());
        assert!("00:11:22:aa:bb:zz".parse::<MacAddr>().is_err());
        assert!(matches!(
            decode_mac(&enc, 32),
            Err(CodecError::WrongWidth { .. })
        ));
    }

    #[test]
    fn canonical_predicate() {
        assert!(is_canonical(&[0]));
        assert!(is_canonical(&[1, 0]));
        assert!(!is_canonical(&[0, 1]));
        assert!(!is_canonical(&[]));
    }
}
