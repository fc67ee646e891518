//! The shell's counters (a leaf: tasks get an `Arc<Stats>` handle, not the whole shared state).

use parking_lot::Mutex;
use std::collections::BTreeMap;

/// Counters of the shell (the core has its own): name → value, also exported as metrics.
#[derive(Debug, Default)]
pub struct Stats {
    map: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    /// Adds `n` to counter `name`.
    pub fn add(&self, name: &str, n: u64) {
        *self.map.lock().entry(name.to_string()).or_default() += n;
    }
    /// Counts a refused agent message or session by reason (metric
    /// `dvipa_rejected_messages_total{reason}`).
    pub fn reject(&self, reason: &'static str) {
        self.add(&format!("rejected_{reason}"), 1);
        metrics::counter!("dvipa_rejected_messages_total", "reason" => reason).increment(1);
    }
    /// Sets `name` to `v` (a gauge kept with the counters, e.g. a held session: 0 or 1).
    pub fn set(&self, name: &str, v: u64) {
        self.map.lock().insert(name.to_string(), v);
    }
    /// A counter's value.
    pub fn get(&self, name: &str) -> u64 {
        self.map.lock().get(name).copied().unwrap_or(0)
    }
    /// All counters.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.map.lock().clone()
    }
}
