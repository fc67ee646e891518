//! The write path of a switch driver: batches of core updates as P4Runtime writes (run as
//! tasks, concurrently with the driver loop), per-update outcomes back to the core, full tables
//! counted and logged at a bounded rate.

use super::*;

/// What a write task needs (owned, so writes run concurrently with the driver loop).
#[derive(Clone)]
pub(super) struct Writer {
    pub(super) name: String,
    pub(super) schema: Arc<Schema>,
    pub(super) shared: Arc<Shared>,
    pub(super) idle_timeout_ns: i64,
    /// Per table: when "table full" was last logged, and updates since then.
    pub(super) full_log: FullLog,
}

/// Per table: when "table full" was last logged, and the updates counted since.
pub(super) type FullLog = Arc<parking_lot::Mutex<HashMap<&'static str, (Option<Instant>, u64)>>>;

/// A full table is logged at most this often per switch and table (every update is counted).
pub const TABLE_FULL_LOG_EVERY: Duration = Duration::from_secs(30);

impl Writer {
    pub(super) fn count(&self, what: &str) {
        self.shared.stats.add(&format!("switch_{what}"), 1);
    }

    /// Counts updates of one Write that found their table full: in total
    /// (`switch_write_resource_exhausted`, bmv2's answer also as `switch_table_full_bmv2_answer`),
    /// per switch and table (`table_full[SWITCH/table]`, `dvipa_table_full_total{switch,table}`),
    /// and logs it at most once per [`TABLE_FULL_LOG_EVERY`] per switch and table, with the
    /// number of updates since the last line.
    pub(super) fn table_full(&self, full: &[(&'static str, translate::FullAnswer)]) {
        if full.is_empty() {
            return;
        }
        let mut per_table: Vec<(&'static str, u64)> = Vec::new();
        for (t, how) in full {
            if *how == translate::FullAnswer::Bmv2 {
                self.count("table_full_bmv2_answer");
            }
            match per_table.iter_mut().find(|(x, _)| x == t) {
                Some((_, n)) => *n += 1,
                None => per_table.push((t, 1)),
            }
        }
        self.shared
            .stats
            .add("switch_write_resource_exhausted", full.len() as u64);
        for (t, n) in per_table {
            self.shared
                .stats
                .add(&format!("table_full[{}/{t}]", self.name), n);
            metrics::counter!("dvipa_table_full_total", "switch" => self.name.clone(), "table" => t)
                .increment(n);
            let mut logs = self.full_log.lock();
            let e = logs.entry(t).or_insert((None, 0));
            e.1 += n;
            if e.0
                .is_none_or(|at: Instant| at.elapsed() >= TABLE_FULL_LOG_EVERY)
            {
                tracing::warn!(
                    switch = %self.name,
                    table = t,
                    updates = e.1,
                    every = ?TABLE_FULL_LOG_EVERY,
                    "table full: entries not installed (their connections stay on the slot path; \
                     retried when deletes free room)"
                );
                *e = (Some(Instant::now()), 0);
            }
        }
    }

    pub(super) async fn write(&self, s: &Session, updates: &[Update]) -> Vec<WriteOutcome> {
        let mut out = vec![WriteOutcome::Ok; updates.len()];
        let mut p4u = Vec::with_capacity(updates.len());
        let mut idx = Vec::with_capacity(updates.len());
        for (i, u) in updates.iter().enumerate() {
            match translate::to_p4_update(&self.schema, u, self.idle_timeout_ns) {
                Ok(x) => {
                    p4u.push(x);
                    idx.push(i);
                }
                Err(e) => {
                    self.count("update_untranslatable");
                    out[i] = WriteOutcome::Other(e.to_string());
                }
            }
        }
        if p4u.is_empty() {
            return out;
        }
        let t0 = Instant::now();
        let r = s.write_detailed(p4u).await;
        metrics::histogram!("dvipa_write_latency_seconds", "switch" => self.name.clone())
            .record(t0.elapsed().as_secs_f64());
        match r {
            Ok(rs) => {
                let mut full: Vec<(&'static str, translate::FullAnswer)> = Vec::new();
                for (j, r) in rs.iter().enumerate() {
                    let u = &updates[idx[j]];
                    let o = translate::outcome(u.kind, r);
                    match (&o, r) {
                        (WriteOutcome::ResourceExhausted, Err(e)) => {
                            if let Some(how) = translate::full_answer(u.kind, e) {
                                full.push((table_short(&u.key), how));
                            }
                        }
                        (WriteOutcome::Other(m), _) => {
                            self.count("write_update_failed");
                            warn_limited!(self.name, "update failed", update = ?u, error = %m,);
                        }
                        _ => {}
                    }
                    out[idx[j]] = o;
                }
                self.table_full(&full);
            }
            Err(e) => {
                self.count("write_rpc_failed");
                warn_limited!(self.name, "write failed", error = %e,);
                for i in idx {
                    out[i] = WriteOutcome::Other(e.to_string());
                }
            }
        }
        self.shared
            .stats
            .add("switch_updates_written", updates.len() as u64);
        out
    }
}
