//! Time: one table of the core's timers (the two start-up holds and each stack's lease),
//! [`TimerTable::next_timeout`] for [`Core::poll_timeout`], and what each does when it fires.

use super::*;

/// A timer of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Timer {
    /// Start-up hold of the targets (one lease after the first call): until it ends, targets
    /// adopted from a switch's DPT count as ready although their stacks have not attached.
    TargetHold,
    /// Start-up hold of the switches (`lease_ms` + `liveness_ms`): a switch not heard of by
    /// then is treated as down.
    SwitchHold,
    /// A stack's lease (by target id): renewed by its agent's messages.
    Lease(u16),
}

/// The armed timers, ordered by deadline (O(log n) to arm, fire or find the next).
#[derive(Debug, Default)]
pub(super) struct TimerTable {
    /// The holds were armed (first call into the core).
    started: bool,
    at: HashMap<Timer, Time>,
    queue: BTreeSet<(Time, Timer)>,
}

impl TimerTable {
    /// Arms `t` for `when` (re-arming moves it).
    pub(super) fn set(&mut self, t: Timer, when: Time) {
        if let Some(old) = self.at.insert(t, when) {
            self.queue.remove(&(old, t));
        }
        self.queue.insert((when, t));
    }

    /// When `t` fires, if armed.
    pub(super) fn get(&self, t: Timer) -> Option<Time> {
        self.at.get(&t).copied()
    }

    /// The earliest deadline.
    pub(super) fn next_timeout(&self) -> Option<Time> {
        self.queue.first().map(|(when, _)| *when)
    }

    /// Disarms and returns every timer that `due` says has fired, earliest first.
    fn take_due(&mut self, due: impl Fn(Timer, Time) -> bool) -> Vec<(Timer, Time)> {
        let fired: Vec<(Time, Timer)> = self
            .queue
            .iter()
            .copied()
            .filter(|&(when, t)| due(t, when))
            .collect();
        for (when, t) in &fired {
            self.queue.remove(&(*when, *t));
            self.at.remove(t);
        }
        fired.into_iter().map(|(when, t)| (t, when)).collect()
    }
}

impl Core {
    /// When [`Core::handle_timeout`] must be called next (a hold ending or a lease expiring).
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timer_table.next_timeout()
    }

    /// Fire the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = self.now.max(now);
        if !self.timer_table.started {
            self.timer_table.started = true;
            let hold = self.now.plus(self.timers.lease_ms);
            self.timer_table.set(Timer::TargetHold, hold);
            self.timer_table
                .set(Timer::SwitchHold, hold.plus(self.timers.liveness_ms));
        }
        // Holds follow the core's clock; a lease the caller's `now`.
        let core_now = self.now;
        let fired = self.timer_table.take_due(|t, when| match t {
            Timer::Lease(_) => when <= now,
            Timer::TargetHold | Timer::SwitchHold => when <= core_now,
        });
        let mut changed = false;
        for &(t, when) in &fired {
            match t {
                Timer::TargetHold => {
                    // Adopted targets whose stacks never attached leave the slots.
                    changed = true;
                    for s in &mut self.services {
                        for d in s.dpt.values_mut().filter(|d| d.adopted) {
                            d.not_ready = Some((when, "not_reattached"));
                        }
                    }
                }
                Timer::Lease(target) => {
                    let s = &mut self.stacks[TargetId(target)];
                    s.alive = false;
                    s.lease_expired_at = Some(now);
                    changed = true;
                    self.count("lease_expired");
                }
                Timer::SwitchHold => {}
            }
        }
        if changed {
            self.note_not_ready_for_dead_stacks(now);
            self.structural_change();
        }
        if fired.iter().any(|(t, _)| *t == Timer::SwitchHold) {
            // One never heard of is down (the shell only reports a switch down after it was
            // up), so its DVIPAs go to their live backups.
            let never: Vec<SwitchIdx> = self
                .switches
                .ids()
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

    /// A replica that becomes the leader (controller HA): from `now` on it treats its switches
    /// as a restarted controller does — the first read of each switch adopts the connections
    /// and slot fill it does not know for the DVIPAs that switch holds (another leader pinned
    /// them), instead of removing them — and the start-up holds run again from `now`.
    ///
    /// A switch this core does not hold as up (a follower's core never saw one come up, so its
    /// own start-up hold marked them all down) is not heard of yet again: its DVIPAs are not
    /// taken over just because another switch of their chain answers the new leader first (an
    /// operator's move restored from etcd would be undone for a moment). One that is still
    /// not connected `2 × liveness_ms` after the promotion is down, and its DVIPAs go to their
    /// live backups then. The drivers connect within milliseconds of the promotion, so that
    /// hold costs a real double failure (leader and routing switch) `2 × liveness_ms`.
    pub fn restart_as_leader(&mut self, now: Time) {
        self.now = self.now.max(now);
        let all: Vec<SwitchIdx> = self.switches.ids().collect();
        for si in all {
            let sw = &mut self.switches[si];
            sw.read_once = false;
            if sw.live != SwitchLiveness::Up {
                sw.live = SwitchLiveness::Unknown;
            }
        }
        self.idle_in_hold.clear();
        self.timer_table.started = true;
        let hold = self.now.plus(self.timers.lease_ms);
        self.timer_table.set(Timer::TargetHold, hold);
        self.timer_table.set(
            Timer::SwitchHold,
            self.now.plus(2 * self.timers.liveness_ms),
        );
        self.count("restarted_as_leader");
        self.handle_timeout(now);
    }

    /// In the targets' start-up hold.
    pub(super) fn in_hold(&self) -> bool {
        self.timer_table
            .get(Timer::TargetHold)
            .is_some_and(|h| self.now < h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rearming_moves_a_timer_and_the_earliest_fires_first() {
        let mut tt = TimerTable::default();
        assert_eq!(tt.next_timeout(), None);
        tt.set(Timer::Lease(2), Time(300));
        tt.set(Timer::Lease(1), Time(100));
        tt.set(Timer::TargetHold, Time(200));
        assert_eq!(tt.next_timeout(), Some(Time(100)));
        // A renewed lease: its old deadline is gone.
        tt.set(Timer::Lease(1), Time(400));
        assert_eq!(tt.next_timeout(), Some(Time(200)));
        let fired = tt.take_due(|_, when| when <= Time(300));
        assert_eq!(
            fired,
            vec![(Timer::TargetHold, Time(200)), (Timer::Lease(2), Time(300))]
        );
        assert_eq!(tt.get(Timer::TargetHold), None);
        assert_eq!(tt.next_timeout(), Some(Time(400)));
        assert!(tt.take_due(|_, when| when <= Time(399)).is_empty());
    }
}
