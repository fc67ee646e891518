//! Time: the start-up holds and the stacks' leases, and when the core must be woken next.

use super::*;

impl Core {
    /// When [`Core::handle_timeout`] must be called next (earliest lease expiry).
    pub fn poll_timeout(&self) -> Option<Time> {
        self.stacks
            .iter()
            .filter(|s| s.alive)
            .filter_map(|s| s.lease_until)
            .chain(self.hold_until.filter(|_| !self.hold_done))
            .chain(self.switch_hold_until.filter(|_| !self.switch_hold_done))
            .min()
    }

    /// Expire leases due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = self.now.max(now);
        let mut changed = false;
        match self.hold_until {
            None => {
                self.hold_until = Some(self.now.plus(self.timers.lease_ms));
                self.switch_hold_until = Some(
                    self.now
                        .plus(self.timers.lease_ms)
                        .plus(self.timers.liveness_ms),
                );
            }
            Some(h) if !self.hold_done && h <= self.now => {
                // Start-up hold over: adopted targets whose stacks never attached leave the slots.
                self.hold_done = true;
                changed = true;
                for s in &mut self.services {
                    for d in s.dpt.values_mut().filter(|d| d.adopted) {
                        d.not_ready = Some((h, "not_reattached"));
                    }
                }
            }
            _ => {}
        }
        for s in &mut self.stacks {
            if s.alive && s.lease_until.is_some_and(|t| t <= now) {
                s.alive = false;
                s.lease_expired_at = Some(now);
                changed = true;
                *self.counters.entry("lease_expired").or_default() += 1;
            }
        }
        if changed {
            self.note_not_ready_for_dead_stacks(now);
            self.structural_change();
        }
        if !self.switch_hold_done && self.switch_hold_until.is_some_and(|h| h <= self.now) {
            // Switches' start-up hold over: one never heard of is down (the shell only reports
            // a switch down after it was up), so its DVIPAs go to their live backups.
            self.switch_hold_done = true;
            let never: Vec<usize> = (0..self.switches.len())
                .filter(|&si| self.switches[si].live == SwitchLiveness::Unknown)
                .collect();
            for si in never {
                self.count("switch_not_up_after_start_up_hold");
                self.mark_down(si);
            }
        }
        self.flush_all();
        self.note_owners();
    }

    pub(super) fn in_hold(&self) -> bool {
        !self.hold_done && self.hold_until.is_some_and(|h| self.now < h)
    }
}
