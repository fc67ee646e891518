//! The liveness probe of a switch session and the "election id already used" refusal (see
//! the parent module's documentation).

use super::{Driver, Ended};
use p4rt::Session;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The liveness probe task of one session; aborted when dropped. It ends (with the send time
/// of the last answered probe) when no probe was answered for `liveness`.
pub(super) struct Probe(pub(super) tokio::task::JoinHandle<tokio::time::Instant>);

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Probe {
    pub(super) fn start(s: Arc<Session>, every: Duration, liveness: Duration) -> Probe {
        Probe(tokio::spawn(async move {
            use tokio::time::Instant;
            let mut last_ok = Instant::now();
            // Checked this often while a probe is out, to notice our own stalls: time in which
            // this process did not run (a busy runtime, a stopped controller) does not count
            // against the switch, whose answer may be waiting unread.
            let tick = (every / 2).max(Duration::from_millis(5));
            loop {
                let sent = Instant::now();
                let probe = s.probe(liveness);
                tokio::pin!(probe);
                let mut at = sent;
                let answered = loop {
                    let next = (at + tick).min(last_ok + liveness);
                    tokio::select! {
                        biased;
                        r = &mut probe => break Some(r.is_ok()),
                        _ = tokio::time::sleep_until(next) => {
                            let now = Instant::now();
                            let lag = now.saturating_duration_since(next);
                            if lag > tick {
                                // after a stall the switch gets at least a probe interval
                                // (2 ticks) to be heard
                                let floor = (now + 2 * tick).checked_sub(liveness);
                                last_ok = (last_ok + lag).max(floor.unwrap_or(last_ok));
                            }
                            if now >= last_ok + liveness {
                                break None;
                            }
                            at = now;
                        }
                    }
                };
                match answered {
                    Some(true) => last_ok = last_ok.max(sent),
                    // no answer (broken connection): try again until the deadline
                    Some(false) => {}
                    None => return last_ok,
                }
                if Instant::now() >= last_ok + liveness {
                    return last_ok;
                }
                tokio::time::sleep_until((sent + every).min(last_ok + liveness)).await;
            }
        }))
    }

    /// Runs `f` unless the switch stops answering first (then `Err(last answer)`).
    pub(super) async fn or_dead<T>(
        &mut self,
        f: impl std::future::Future<Output = T>,
    ) -> Result<T, tokio::time::Instant> {
        tokio::select! {
            biased;
            r = &mut self.0 => Err(r.unwrap_or_else(|_| tokio::time::Instant::now())),
            r = f => Ok(r),
        }
    }
}

/// Whether a refused stream is the "election id already used" refusal: INVALID_ARGUMENT naming
/// the election id (dvipa-switch "… is already used by another controller", simple_switch_grpc
/// "Election id already exists", Stratum "Election ID is already used by another connection
/// with the same role.").
pub(super) fn election_id_in_use(e: &p4rt::ClientError) -> bool {
    match e {
        p4rt::ClientError::StreamRefused {
            code: Some(tonic::Code::InvalidArgument | tonic::Code::AlreadyExists),
            message,
        } => {
            let m = message.to_lowercase();
            m.contains("election") && (m.contains("already") || m.contains("in use"))
        }
        _ => false,
    }
}

impl Driver {
    /// The switch refused our election id as already used: wait for it to drop the holder,
    /// or, when the holder is our own dead session, move to the next id of the range.
    pub(super) fn refused(&mut self, e: &p4rt::ClientError, warn: &mut p4rt::ratelimit::RateLimit) {
        let since = *self.refused_since.get_or_insert_with(Instant::now);
        let ours = self.connected_id == Some(self.election_id);
        let last = self.cfg.election_id + (self.cfg.election_id_range - 1);
        if ours && since.elapsed() >= self.cfg.probe && self.election_id < last {
            let old = self.election_id;
            self.election_id += 1;
            self.refused_since = None;
            self.count("election_id_raised");
            tracing::warn!(switch = %self.cfg.name, from = old, to = self.election_id, range_last = last, refused_for = ?since.elapsed(),
                "the switch still holds our previous session's election id (half-open session): raising the election id");
            return;
        }
        if let Some(suppressed) = warn.check() {
            tracing::warn!(switch = %self.cfg.name, error = %e, election_id = self.election_id, ours, range_last = last, suppressed,
                "P4Runtime arbitration refused: election id in use; retrying with backoff");
        } else {
            tracing::debug!(switch = %self.cfg.name, error = %e, "P4Runtime arbitration refused");
        }
    }

    /// No probe answered for `liveness`: the session is given up; primary was last known at
    /// `last_ok`, so `SwitchDown` follows at once.
    pub(super) fn unresponsive(&mut self, last_ok: tokio::time::Instant, primary: bool) -> Ended {
        self.count("probe_timeout");
        // once per session (a state change, like "switch down"): not rate-limited
        tracing::warn!(switch = %self.cfg.name, silent_ms = last_ok.elapsed().as_millis() as u64, primary,
            "switch not answering the liveness probe: session dropped");
        if primary || self.lost_at.is_some() {
            self.lost_at = Some(self.lost_at.map_or(last_ok, |t| t.min(last_ok)));
        }
        Ended::Lost { primary }
    }
}

#[cfg(test)]
mod tests {
    use super::election_id_in_use;
    use p4rt::ClientError;

    fn refused(code: tonic::Code, message: &str) -> ClientError {
        ClientError::StreamRefused {
            code: Some(code),
            message: message.into(),
        }
    }

    #[test]
    fn the_election_id_refusals_of_the_known_targets_are_recognised() {
        for m in [
            // dvipa-switch
            "stream error: InvalidArgument: election id 1 is already used by another controller \
             of the default role",
            // simple_switch_grpc (PI)
            "stream error: InvalidArgument: Election id already exists",
            // Stratum
            "stream error: InvalidArgument: Election ID is already used by another connection \
             with the same role.",
        ] {
            assert!(
                election_id_in_use(&refused(tonic::Code::InvalidArgument, m)),
                "{m}"
            );
        }
        assert!(!election_id_in_use(&refused(
            tonic::Code::InvalidArgument,
            "device id 3 does not match"
        )));
        assert!(!election_id_in_use(&refused(
            tonic::Code::Unavailable,
            "election id already used"
        )));
        assert!(!election_id_in_use(&ClientError::NotConnected));
    }
}
