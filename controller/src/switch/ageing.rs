//! CRT ageing without idle-timeout notifications (issue 16: Tofino P4Runtime servers may send
//! none). The driver reads the CRT with its direct counter (`IngressImpl.crt_counter`) every
//! [`interval`] and an entry whose packet count has not moved for the idle timeout is reported to
//! the core exactly like an `IdleTimeoutNotification` would have been.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use dvipa_core::entries::ConnKey;

/// How often the CRT is read: a quarter of the idle timeout, within 1 s .. 60 s, so an idle
/// entry is reported between `idle` and `idle + interval` after its last packet.
pub fn interval(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Packet counts seen per pinned connection and since when they have not changed.
#[derive(Debug, Default)]
pub struct CounterAgeing {
    seen: HashMap<ConnKey, (u64, Instant)>,
}

impl CounterAgeing {
    /// Forgets everything (a new session: counters may have been reset by a pipeline push).
    pub fn reset(&mut self) {
        self.seen.clear();
    }

    /// Entries tracked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when nothing is tracked.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// One full read of the CRT at `now`: `(connection, packet count)`. Returns the connections
    /// idle for at least `idle` (they are forgotten, so each is reported once; if the core keeps
    /// the entry it is reported again after another `idle`). Connections no longer in the CRT
    /// are forgotten.
    pub fn observe(
        &mut self,
        now: Instant,
        idle: Duration,
        read: impl IntoIterator<Item = (ConnKey, u64)>,
    ) -> Vec<ConnKey> {
        let mut next = HashMap::with_capacity(self.seen.len());
        let mut out = Vec::new();
        for (k, packets) in read {
            let since = match self.seen.get(&k) {
                Some((p, t)) if *p == packets => *t,
                _ => now,
            };
            if now.duration_since(since) >= idle {
                out.push(k);
            } else {
                next.insert(k, (packets, since));
            }
        }
        self.seen = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn conn(port: u16) -> ConnKey {
        ConnKey::new(
            Ipv4Addr::new(10, 0, 0, 1),
            port,
            Ipv4Addr::new(10, 9, 9, 9),
            80,
            6,
        )
    }

    #[test]
    fn an_entry_is_idle_once_its_count_stands_still_for_the_idle_timeout() {
        let idle = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut a = CounterAgeing::default();
        // Both seen at t0; connection 2 keeps getting packets.
        assert!(a.observe(t0, idle, [(conn(1), 5), (conn(2), 5)]).is_empty());
        let t1 = t0 + Duration::from_secs(6);
        assert!(a.observe(t1, idle, [(conn(1), 5), (conn(2), 9)]).is_empty());
        let t2 = t0 + Duration::from_secs(10);
        assert_eq!(
            a.observe(t2, idle, [(conn(1), 5), (conn(2), 12)]),
            vec![conn(1)]
        );
        // Reported once; connection 2 is idle 10 s after its last change (t2).
        let t3 = t2 + Duration::from_secs(9);
        assert!(a.observe(t3, idle, [(conn(2), 12)]).is_empty());
        let t4 = t2 + Duration::from_secs(10);
        assert_eq!(a.observe(t4, idle, [(conn(2), 12)]), vec![conn(2)]);
        assert!(a.is_empty());
        // Gone from the CRT: forgotten.
        a.observe(t4, idle, [(conn(3), 0)]);
        a.observe(t4, idle, []);
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn the_read_interval_is_a_quarter_of_the_idle_timeout_within_bounds() {
        assert_eq!(interval(Duration::from_secs(300)), Duration::from_secs(60));
        assert_eq!(interval(Duration::from_secs(20)), Duration::from_secs(5));
        assert_eq!(interval(Duration::from_millis(800)), Duration::from_secs(1));
    }
}
