//! SYNs reported by the switches and not pinned yet (`pin_on = "handshake"`).
//!
//! A SYN's digest names the target the switch chose; the connection is pinned only when its
//! first non-SYN packet (the handshake's ACK) is reported with the same target. Until then the
//! choice is remembered here, bounded in count and age, so a SYN flood costs a fixed amount of
//! memory and never reaches the CRT: when full, the oldest SYN is forgotten (a real connection
//! whose SYN was forgotten is still pinned by its server's NEWCONN). Times are the core's
//! milliseconds.

use std::collections::{HashMap, VecDeque};

use crate::entries::ConnKey;

/// Most SYNs remembered: as many as the switch's `syn_pending` register has cells (65,536).
pub const SYN_SEEN_CAP: usize = 65_536;

/// A SYN older than this is forgotten: a handshake's ACK follows its SYN within a round trip,
/// and the client retransmits an unanswered SYN after 1 s (RFC 6298), which records it again.
pub const SYN_SEEN_TTL_MS: u64 = 3_000;

/// What a SYN's digest said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenSyn {
    /// The target the switch sent the SYN to.
    pub target: u16,
    /// Its service.
    pub service: u16,
    /// When it was reported (core ms).
    pub at: u64,
}

/// The bounded set of SYNs waiting for their handshake.
#[derive(Debug)]
pub struct SynSeen {
    map: HashMap<ConnKey, SeenSyn>,
    /// Insertion order (a key may appear more than once; only the entry whose `at` matches the
    /// map's is live).
    order: VecDeque<(ConnKey, u64)>,
    cap: usize,
    ttl_ms: u64,
}

impl Default for SynSeen {
    fn default() -> Self {
        SynSeen::new(SYN_SEEN_CAP, SYN_SEEN_TTL_MS)
    }
}

impl SynSeen {
    /// At most `cap` SYNs, each for `ttl_ms`.
    pub fn new(cap: usize, ttl_ms: u64) -> Self {
        SynSeen {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
            ttl_ms,
        }
    }

    /// Remembers a SYN; returns how many older SYNs were forgotten to make room or for age.
    pub fn insert(&mut self, k: ConnKey, syn: SeenSyn) -> (usize, usize) {
        let expired = self.expire(syn.at);
        let mut evicted = 0;
        if !self.map.contains_key(&k) {
            while self.map.len() >= self.cap {
                if !self.pop_oldest() {
                    break;
                }
                evicted += 1;
            }
        }
        self.map.insert(k, syn);
        self.order.push_back((k, syn.at));
        // Stale order entries of re-reported keys are bounded by compacting when they pile up.
        if self.order.len() > 2 * self.cap {
            let map = &self.map;
            self.order
                .retain(|(k, at)| map.get(k).is_some_and(|s| s.at == *at));
        }
        (evicted, expired)
    }

    /// The SYN of `k`, if remembered and not older than the TTL at `now`; removed.
    pub fn take(&mut self, k: &ConnKey, now: u64) -> Option<SeenSyn> {
        let s = self.map.remove(k)?;
        (now.saturating_sub(s.at) <= self.ttl_ms).then_some(s)
    }

    /// Forgets SYNs older than the TTL at `now`; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let mut n = 0;
        while let Some(&(k, at)) = self.order.front() {
            if now.saturating_sub(at) <= self.ttl_ms {
                break;
            }
            self.order.pop_front();
            if self.map.get(&k).is_some_and(|s| s.at == at) {
                self.map.remove(&k);
                n += 1;
            }
        }
        n
    }

    fn pop_oldest(&mut self) -> bool {
        while let Some((k, at)) = self.order.pop_front() {
            if self.map.get(&k).is_some_and(|s| s.at == at) {
                self.map.remove(&k);
                return true;
            }
        }
        false
    }

    /// SYNs remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(port: u16) -> ConnKey {
        ConnKey::new(
            "198.51.100.1".parse().unwrap(),
            port,
            "10.1.1.1".parse().unwrap(),
            80,
            6,
        )
    }

    fn syn(at: u64) -> SeenSyn {
        SeenSyn {
            target: 1,
            service: 0,
            at,
        }
    }

    #[test]
    fn bounded_by_count_oldest_forgotten_first() {
        let mut s = SynSeen::new(100, 10_000);
        let mut evicted = 0;
        for p in 0..1000u16 {
            evicted += s.insert(k(p), syn(u64::from(p))).0;
        }
        assert_eq!(s.len(), 100);
        assert_eq!(evicted, 900);
        assert!(s.take(&k(899), 1000).is_none(), "oldest forgotten");
        assert_eq!(s.take(&k(950), 1000).map(|x| x.at), Some(950));
        assert!(s.take(&k(950), 1000).is_none(), "taken once");
        // Re-reporting one key many times does not grow the order queue without bound.
        for t in 0..10_000u64 {
            s.insert(k(1), syn(2000 + t / 10));
        }
        assert!(s.order.len() <= 2 * 100 + 1);
    }

    #[test]
    fn forgotten_after_the_ttl() {
        let mut s = SynSeen::new(100, 3000);
        s.insert(k(1), syn(0));
        s.insert(k(2), syn(2000));
        assert!(s.take(&k(1), 3001).is_none());
        assert_eq!(s.expire(6000), 1);
        assert!(s.is_empty());
    }
}
