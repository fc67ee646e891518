//! Parser of the dvipa program (`ParserImpl`), done by hand over byte slices.
//!
//! It never panics: every access is bounds-checked against the frame length first, and a frame that
//! ends inside a header yields [`ParserError::PacketTooShort`] exactly where the P4 parser's
//! `extract` would fail. Only offsets are recorded; the pipeline rewrites headers in its output
//! buffer.

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// IP protocol numbers the parser descends into.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;
/// IP-in-IP (outer header of `encap_ipip`).
pub const PROTO_IPIP: u8 = 4;
/// Length of the Ethernet header.
pub const ETH_LEN: usize = 14;
/// Length of the IPv4 base header.
pub const IPV4_LEN: usize = 20;
/// Length of the TCP base header (options are payload to the switch).
pub const TCP_LEN: usize = 20;
/// Length of the UDP header.
pub const UDP_LEN: usize = 8;

/// The v1model parser errors this program can raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParserError {
    /// A header was cut short by the end of the frame.
    #[error("PacketTooShort: frame ends inside the {0} header")]
    PacketTooShort(&'static str),
    /// `verify(version == 4)` failed.
    #[error("IPv4BadVersion: IPv4 version field is {0}, not 4")]
    IPv4BadVersion(u8),
    /// `verify(ihl >= 5)` failed.
    #[error("IPv4BadIHL: IPv4 IHL is {0}, below 5")]
    IPv4BadIHL(u8),
}

/// Which layer-4 header the parser extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// No L4 header (other protocol, or a non-first fragment).
    None,
    /// A TCP base header at this offset.
    Tcp(usize),
    /// A UDP header at this offset.
    Udp(usize),
}

/// Offsets of the headers the parser found in an IPv4 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Frame {
    /// Length of the IPv4 header including options (`ihl * 4`). It starts at [`ETH_LEN`].
    pub ip_hdr_len: usize,
    /// The L4 header, if any.
    pub l4: L4,
}

/// What the parser made of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Ethernet only (EtherType is not IPv4): accepted by the parser, dropped by ingress.
    NotIpv4(u16),
    /// An IPv4 frame.
    Ipv4(Ipv4Frame),
}

#[inline]
fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Runs `ParserImpl` over a frame.
pub fn parse(frame: &[u8]) -> Result<Parsed, ParserError> {
    if frame.len() < ETH_LEN {
        return Err(ParserError::PacketTooShort("ethernet"));
    }
    let ethertype = be16(frame, 12);
    if ethertype != ETHERTYPE_IPV4 {
        return Ok(Parsed::NotIpv4(ethertype));
    }
    if frame.len() < ETH_LEN + IPV4_LEN {
        return Err(ParserError::PacketTooShort("ipv4"));
    }
    let ip = &frame[ETH_LEN..];
    let version = ip[0] >> 4;
    let ihl = ip[0] & 0x0f;
    if version != 4 {
        return Err(ParserError::IPv4BadVersion(version));
    }
    if ihl < 5 {
        return Err(ParserError::IPv4BadIHL(ihl));
    }
    let ip_hdr_len = usize::from(ihl) * 4;
    if ip.len() < ip_hdr_len {
        return Err(ParserError::PacketTooShort("ipv4_options"));
    }
    let frag_offset = be16(ip, 6) & 0x1fff;
    let l4_off = ETH_LEN + ip_hdr_len;
    let l4 = if frag_offset != 0 {
        L4::None
    } else {
        match ip[9] {
            PROTO_TCP => {
                if frame.len() < l4_off + TCP_LEN {
                    return Err(ParserError::PacketTooShort("tcp"));
                }
                L4::Tcp(l4_off)
            }
            PROTO_UDP => {
                if frame.len() < l4_off + UDP_LEN {
                    return Err(ParserError::PacketTooShort("udp"));
                }
                L4::Udp(l4_off)
            }
            _ => L4::None,
        }
    };
    Ok(Parsed::Ipv4(Ipv4Frame { ip_hdr_len, l4 }))
}

/// The internet checksum (`csum16`) of an IPv4 header whose checksum field is at bytes 10..12;
/// the field itself is treated as zero.
#[inline]
pub fn ipv4_checksum(hdr: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i + 1 < hdr.len() {
        if i != 10 {
            sum += u32::from(u16::from_be_bytes([hdr[i], hdr[i + 1]]));
        }
        i += 2;
    }
    if i < hdr.len() {
        sum += u32::from(hdr[i]) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Recomputes and stores the checksum of the IPv4 header `hdr` (options included).
#[inline]
pub fn fix_ipv4_checksum(hdr: &mut [u8]) {
    let c = ipv4_checksum(hdr);
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // Header from RFC 1071-style worked example (a well-known capture): checksum 0xb861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&hdr), 0xb861);
    }

    #[test]
    fn truncations_are_errors_not_panics() {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = 6;
        assert!(matches!(parse(&f), Ok(Parsed::Ipv4(_))));
        for n in 0..f.len() {
            assert!(parse(&f[..n]).is_err(), "len {n}");
        }
    }

    #[test]
    fn bad_version_and_ihl() {
        let mut f = vec![0u8; 60];
        f[12] = 0x08;
        f[14] = 0x65;
        assert_eq!(parse(&f), Err(ParserError::IPv4BadVersion(6)));
        f[14] = 0x44;
        assert_eq!(parse(&f), Err(ParserError::IPv4BadIHL(4)));
        f[14] = 0x4f; // 60-byte header, frame has only 46 bytes of IP
        assert_eq!(parse(&f), Err(ParserError::PacketTooShort("ipv4_options")));
    }

    #[test]
    fn non_first_fragment_has_no_l4() {
        let mut f = vec![0u8; 14 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 6] = 0x00;
        f[14 + 7] = 0x10;
        f[14 + 9] = 6;
        assert_eq!(
            parse(&f),
            Ok(Parsed::Ipv4(Ipv4Frame {
                ip_hdr_len: 20,
                l4: L4::None
            }))
        );
    }
}
