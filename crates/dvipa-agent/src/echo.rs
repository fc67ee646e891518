//! The data-plane probe echo (`dvipa-agent --dataplane-echo PORT`, issue 13).
//!
//! The controller's data-plane probe sends small UDP datagrams to `DVIPA:PORT` through one
//! switch at a time; the switch distributes them like any UDP to the DVIPA, so they arrive here
//! (the DVIPA is on `lo`). Each valid probe is sent straight back to its source (not through a
//! switch): an echo proves the switch forwarded it.
//!
//! Wire format ([`PROBE_LEN`] bytes, big-endian): `"DVPL"`, version 1, kind (1 = probe,
//! 2 = echo), path, flow, sequence (u64), nonce (u64). The echo is the probe with kind 2: never
//! larger than what came in, so the echo cannot amplify. Anything else is dropped and counted;
//! answers are bounded by a token bucket (`max_pps`, burst one second's worth).
//!
//! Counters (metric `dvipa_agent_dataplane_echo_total{result}`): `answered`, `malformed`,
//! `rate_limited`, `send_failed`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Length of a probe and of its echo.
pub const PROBE_LEN: usize = 24;
/// First four bytes.
pub const MAGIC: &[u8; 4] = b"DVPL";
/// Format version.
pub const VERSION: u8 = 1;
/// Kind byte of a probe.
pub const KIND_PROBE: u8 = 1;
/// Kind byte of an echo.
pub const KIND_ECHO: u8 = 2;

/// The echo's counters.
#[derive(Debug, Default)]
pub struct EchoStats {
    /// Probes answered.
    pub answered: AtomicU64,
    /// Datagrams that are not a probe (dropped).
    pub malformed: AtomicU64,
    /// Probes over the rate bound (dropped).
    pub rate_limited: AtomicU64,
    /// Echoes the kernel refused.
    pub send_failed: AtomicU64,
}

/// The echo of `probe`, or `None` when it is not a probe of this format.
pub fn echo_of(probe: &[u8]) -> Option<[u8; PROBE_LEN]> {
    if probe.len() != PROBE_LEN
        || &probe[..4] != MAGIC
        || probe[4] != VERSION
        || probe[5] != KIND_PROBE
    {
        return None;
    }
    let mut e = [0u8; PROBE_LEN];
    e.copy_from_slice(probe);
    e[5] = KIND_ECHO;
    Some(e)
}

/// A token bucket: `rate` per second, burst `rate`.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate)
            .min(self.rate.max(1.0));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Binds `0.0.0.0:port` (UDP) and answers probes until the task is dropped. Errors only when
/// the port cannot be bound.
pub async fn serve(
    port: u16,
    max_pps: u32,
    stats: Arc<EchoStats>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let sock = tokio::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).await?;
    tracing::info!(port, max_pps, "data-plane probe echo listening (UDP)");
    Ok(tokio::spawn(async move {
        let mut bucket = Bucket {
            rate: f64::from(max_pps.max(1)),
            tokens: f64::from(max_pps.max(1)),
            at: Instant::now(),
        };
        // one byte more than a probe: a longer datagram is seen as longer, not truncated
        let mut buf = [0u8; PROBE_LEN + 1];
        loop {
            let (n, from) = match sock.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "data-plane echo: receive failed");
                    continue;
                }
            };
            let count = |c: &AtomicU64, result: &'static str| {
                c.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("dvipa_agent_dataplane_echo_total", "result" => result)
                    .increment(1);
            };
            let Some(e) = echo_of(&buf[..n]) else {
                count(&stats.malformed, "malformed");
                continue;
            };
            if !bucket.take() {
                count(&stats.rate_limited, "rate_limited");
                continue;
            }
            match sock.send_to(&e, from).await {
                Ok(_) => count(&stats.answered, "answered"),
                Err(_) => count(&stats.send_failed, "send_failed"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(seq: u64) -> [u8; PROBE_LEN] {
        let mut p = [0u8; PROBE_LEN];
        p[..4].copy_from_slice(MAGIC);
        p[4] = VERSION;
        p[5] = KIND_PROBE;
        p[6] = 1;
        p[7] = 2;
        p[8..16].copy_from_slice(&seq.to_be_bytes());
        p
    }

    #[test]
    fn only_probes_are_echoed_and_never_larger() {
        let e = echo_of(&probe(7)).unwrap();
        assert_eq!(e[5], KIND_ECHO);
        assert_eq!(&e[8..16], &7u64.to_be_bytes());
        assert!(echo_of(&probe(7)[..PROBE_LEN - 1]).is_none());
        assert!(echo_of(&[probe(7).as_slice(), &[0]].concat()).is_none());
        assert!(
            echo_of(&e).is_none(),
            "an echo is not answered (no ping-pong)"
        );
        let mut bad = probe(1);
        bad[0] = b'X';
        assert!(echo_of(&bad).is_none());
    }

    #[tokio::test]
    async fn the_echo_answers_probes_and_bounds_its_rate() {
        let stats = Arc::new(EchoStats::default());
        // a free port: bind, read it, release
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let task = serve(port, 5, stats.clone()).await.unwrap();
        let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        c.send_to(b"hello", to).await.unwrap();
        for s in 0..20 {
            c.send_to(&probe(s), to).await.unwrap();
        }
        let mut got = 0;
        let mut buf = [0u8; 64];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(std::time::Duration::from_millis(300), c.recv_from(&mut buf)).await
        {
            assert_eq!(n, PROBE_LEN);
            assert_eq!(buf[5], KIND_ECHO);
            got += 1;
        }
        task.abort();
        assert!((5..=6).contains(&got), "{got} echoes at 5 per second");
        assert_eq!(stats.malformed.load(Ordering::Relaxed), 1);
        assert!(stats.rate_limited.load(Ordering::Relaxed) >= 14);
    }
}
