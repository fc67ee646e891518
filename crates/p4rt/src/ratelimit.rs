//! Rate-limited warnings: a warning that repeats (a switch that keeps refusing, a stream that
//! keeps closing) is logged at most once per [`PERIOD`] per key; the line that is logged
//! carries `suppressed`, the number of lines left out since the previous one (they are logged
//! at debug level instead).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// At most one warning per key this often.
pub const PERIOD: Duration = Duration::from_secs(30);

/// Keys remembered by [`check`] (a bound: keys come from configuration, e.g. switch addresses;
/// past it the table starts over, which at worst logs a line early).
const MAX_KEYS: usize = 4096;

/// One rate-limited warning.
#[derive(Debug, Clone)]
pub struct RateLimit {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// A limit of one line per `period`.
    pub fn new(period: Duration) -> Self {
        RateLimit {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed)` when a line may be logged now (and how many were left out since the
    /// last one); `None` when this one is to be suppressed (counted).
    pub fn check(&mut self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Starts over: the next line is logged (e.g. after the condition cleared).
    pub fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::new(PERIOD)
    }
}

/// [`RateLimit::check`] of a process-wide limit named `key` (one per warning and subject,
/// e.g. `"stream closed 127.0.0.1:9559"`), with the period [`PERIOD`].
pub fn check(key: &str) -> Option<u64> {
    static LIMITS: OnceLock<Mutex<HashMap<String, RateLimit>>> = OnceLock::new();
    let mut m = LIMITS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if !m.contains_key(key) && m.len() >= MAX_KEYS {
        m.clear();
    }
    m.entry(key.to_string()).or_default().check()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_suppressed_count() {
        let mut r = RateLimit::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(r.check_at(t0), Some(0));
        for i in 1..=7 {
            assert_eq!(r.check_at(t0 + Duration::from_millis(140 * i)), None);
        }
        assert_eq!(r.check_at(t0 + Duration::from_secs(30)), Some(7));
        assert_eq!(r.check_at(t0 + Duration::from_secs(31)), None);
        r.reset();
        assert_eq!(r.check_at(t0 + Duration::from_secs(32)), Some(0));
    }

    #[test]
    fn keys_are_independent() {
        assert_eq!(check("ratelimit test a"), Some(0));
        assert_eq!(check("ratelimit test a"), None);
        assert_eq!(check("ratelimit test b"), Some(0));
        assert_eq!(check("ratelimit test a"), None);
    }
}
