//! CRT ageing after a controller change (HA leader change, controller restart, a new session).
//!
//! Idle-timeout notifications go to the switch's primary at the time. Between two leaders the
//! primary is a follower's backup session, which drops them; with no controller connected they
//! reach nobody. bmv2 (and the embedded switch by default) repeat a notification about once a
//! second while the entry stays idle, so the next primary hears it again; a server that sends
//! one per idle period, as the P4Runtime specification reads, does not, and such an entry would
//! stay forever (CRT space leaked, a later connection with the same 5-tuple sent to the old
//! server).
//!
//! So after a session becomes primary, its first successful full read (the reconcile read that
//! `SwitchUp` asks for, which makes the core's view of the switch `Up`) is followed by one read
//! of the CRT with `time_since_last_hit`: every entry idle for at least its own
//! `idle_timeout_ns` goes to the core as an `IdleTimeout`, the same path as a notification, so
//! a connection an agent still reports is kept and the rest are removed. This was chosen over
//! buffering the notifications a follower's backup session receives: it also covers a
//! controller restart and a gap with no controller at all, needs no state kept across roles,
//! and takes the switch's own view of each entry rather than notifications of unknown age.
//!
//! The read is the CRT alone (PI refuses `time_since_last_hit` on a table without idle
//! timeout), streamed: only the idle keys are kept, at most the CRT's size from the P4Info
//! (entries beyond it are counted, not kept). A server that leaves `time_since_last_hit` empty
//! ages nothing here (counted); a failed read is counted and not retried (notifications and
//! counter ageing go on as before).
use super::*;
use dvipa_core::entries::ConnKey;
use tokio_stream::StreamExt;

/// Whether an entry read with `time_since_last_hit` is idle: its elapsed time reached its own
/// idle timeout (PI reports at most the timeout: `timeout - remaining TTL`). `None` when the
/// entry has no timeout or the server did not fill the field.
pub fn idle(te: &p4::TableEntry) -> Option<bool> {
    if te.idle_timeout_ns <= 0 {
        return None;
    }
    let elapsed = te.time_since_last_hit.as_ref()?.elapsed_ns;
    Some(elapsed >= te.idle_timeout_ns)
}

/// What one takeover read found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Connections idle longer than their timeout.
    pub idle: Vec<ConnKey>,
    /// Entries read.
    pub read: u64,
    /// Entries without `time_since_last_hit` (or without a timeout).
    pub unknown: u64,
    /// Entries not understood, or beyond the CRT's size.
    pub skipped: u64,
}

impl Driver {
    /// The CRT read with `time_since_last_hit` after a session's first full read; its idle
    /// connections go to the core.
    pub(super) async fn age_after_takeover(&mut self, s: &Session) {
        let started = Instant::now();
        let found = match self.read_idle(s).await {
            Ok(f) => f,
            Err(e) => {
                self.count("idle_after_takeover_read_failed");
                warn_limited!(self.cfg.name, "CRT idle read after takeover failed", error = %e,);
                return;
            }
        };
        self.count("idle_after_takeover_reads");
        let st = &self.shared.stats;
        st.add("switch_idle_after_takeover_unknown", found.unknown);
        st.add("switch_idle_after_takeover_skipped", found.skipped);
        st.add("switch_idle_after_takeover", found.idle.len() as u64);
        metrics::counter!("dvipa_crt_idle_after_takeover_total", "switch" => self.cfg.name.clone())
            .increment(found.idle.len() as u64);
        tracing::info!(
            switch = %self.cfg.name,
            entries = found.read,
            idle = found.idle.len(),
            no_time = found.unknown,
            took_ms = started.elapsed().as_millis() as u64,
            "CRT aged after takeover"
        );
        if !found.idle.is_empty() {
            self.shared.event(Event::IdleTimeout {
                switch: self.cfg.name.clone(),
                conns: found.idle,
            });
        }
    }

    async fn read_idle(&self, s: &Session) -> Result<Found, String> {
        let mut w = self
            .schema
            .table_wildcard(contract::crt::NAME)
            .map_err(|e| e.to_string())?;
        w.time_since_last_hit = Some(p4::table_entry::IdleTimeout::default());
        let cap = self
            .schema
            .table(contract::crt::NAME)
            .map_err(|e| e.to_string())?
            .size
            .max(1) as u64;
        let mut stream = s
            .read(vec![p4rt::IntoEntity::into_entity(w)])
            .await
            .map_err(|e| e.to_string())?;
        let mut f = Found::default();
        while let Some(e) = stream.next().await {
            let e = e.map_err(|e| e.to_string())?;
            let Some(p4::entity::Entity::TableEntry(te)) = e.entity else {
                continue;
            };
            if te.is_default_action {
                continue;
            }
            f.read += 1;
            if f.read > cap {
                f.skipped += 1;
                continue;
            }
            match idle(&te) {
                None => f.unknown += 1,
                Some(false) => {}
                Some(true) => match self
                    .schema
                    .decode_table_entry(&te)
                    .map_err(translate::TranslateError::from)
                    .and_then(|d| translate::from_decoded_lenient(&d))
                {
                    Ok((Key::Crt(c), _, _)) => f.idle.push(c),
                    _ => f.skipped += 1,
                },
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(timeout: i64, elapsed: Option<i64>) -> p4::TableEntry {
        p4::TableEntry {
            idle_timeout_ns: timeout,
            time_since_last_hit: elapsed
                .map(|elapsed_ns| p4::table_entry::IdleTimeout { elapsed_ns }),
            ..Default::default()
        }
    }

    #[test]
    fn an_entry_is_idle_when_its_time_since_last_hit_reaches_its_own_timeout() {
        assert_eq!(idle(&entry(1_000, Some(999))), Some(false));
        // PI reports at most the timeout (timeout - remaining TTL).
        assert_eq!(idle(&entry(1_000, Some(1_000))), Some(true));
        assert_eq!(idle(&entry(1_000, Some(5_000))), Some(true));
        // Not filled by the server, or no timeout: unknown.
        assert_eq!(idle(&entry(1_000, None)), None);
        assert_eq!(idle(&entry(0, Some(5_000))), None);
    }
}
