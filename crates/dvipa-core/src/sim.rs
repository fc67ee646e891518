//! A deterministic simulation around [`Core`] for tests: in-memory switches that apply
//! [`Action::Write`] batches (with P4Runtime-like per-update outcomes and an optional CRT
//! capacity), answer [`Action::ReadSwitch`], and check after every write that no entry names a
//! missing target. Time only moves when the test says so. No I/O.
//!
//! Writes are normally applied as soon as the core emits them. With [`Sim::hold_writes`] they
//! are held (in flight) until the test releases them with [`Sim::release`], in any order, so
//! several batches can be outstanding per switch. Every write is checked against the phase
//! order: batches outstanding on one switch at once are all CRT batches of the same phase with
//! disjoint keys.

use crate::core::{Action, Core, Event, Time, WriteOutcome};
use crate::entries::{self, Key, Tables, Update, UpdateKind};
use std::collections::{BTreeMap, BTreeSet};

/// One simulated switch.
#[derive(Debug, Default, Clone)]
pub struct SimSwitch {
    /// Its tables.
    pub tables: Tables,
    /// Reachable (writes and reads are answered).
    pub up: bool,
    /// CRT capacity (None = unlimited).
    pub crt_capacity: Option<usize>,
    /// Number of write batches applied.
    pub writes: usize,
}

/// Core + simulated switches.
#[derive(Debug)]
pub struct Sim {
    /// The core under test.
    pub core: Core,
    /// Switches by name.
    pub switches: BTreeMap<String, SimSwitch>,
    /// Simulated time.
    pub now: Time,
    /// Every action that is not a switch write/read (advertisements, acks, VIPA lists …), in
    /// order.
    pub out: Vec<Action>,
    /// For each action of `out`: how many write batches had been applied when it was emitted
    /// (orders advertisements against writes).
    pub out_at: Vec<usize>,
    /// Every write batch: (switch, updates applied).
    pub write_log: Vec<(String, Vec<entries::Update>)>,
    /// Hold write batches until [`Sim::release`] (default: apply them right away).
    pub hold_writes: bool,
    /// Write batches emitted and not applied yet: (switch, batch id, updates).
    pub held: Vec<(String, u64, Vec<Update>)>,
    /// Most batches seen outstanding on one switch at once.
    pub max_outstanding: usize,
}

impl Sim {
    /// Wrap a core; one [`SimSwitch`] (down) per configured switch.
    pub fn new(core: Core) -> Sim {
        let switches = core
            .cluster()
            .config
            .switches
            .iter()
            .map(|s| (s.name.clone(), SimSwitch::default()))
            .collect();
        Sim {
            core,
            switches,
            now: Time(0),
            out: Vec::new(),
            out_at: Vec::new(),
            write_log: Vec::new(),
            hold_writes: false,
            held: Vec::new(),
            max_outstanding: 0,
        }
    }

    /// Applies held write `i` (of [`Sim::held`]) and runs.
    pub fn release(&mut self, i: usize) {
        let (switch, batch, updates) = self.held.remove(i);
        self.apply_write(switch, batch, updates);
        self.run();
    }

    /// Releases every held write, choosing each time the index `pick(number held)` (taken
    /// modulo the number held), until none is left.
    pub fn release_all(&mut self, mut pick: impl FnMut(usize) -> usize) {
        while !self.held.is_empty() {
            let i = pick(self.held.len()) % self.held.len();
            self.release(i);
        }
    }

    /// Checks a new batch against the batches outstanding on its switch: one phase per batch;
    /// only CRT batches of the same phase with disjoint keys may be outstanding together.
    fn check_phase_order(&mut self, switch: &str, batch: u64, updates: &[Update]) {
        let Some(first) = updates.first() else {
            panic!("switch {switch}: empty batch {batch}");
        };
        let phase = entries::phase(first);
        assert!(
            updates.iter().all(|u| entries::phase(u) == phase),
            "switch {switch}: batch {batch} mixes phases: {updates:?}"
        );
        let keys: BTreeSet<Key> = updates.iter().map(|u| u.key).collect();
        assert_eq!(keys.len(), updates.len(), "batch {batch}: a key twice");
        let mut outstanding = 1;
        for (s, b, ups) in &self.held {
            if s != switch {
                continue;
            }
            outstanding += 1;
            let p = entries::phase(&ups[0]);
            assert!(
                p == phase && matches!(p, 1 | 6),
                "switch {switch}: batch {batch} (phase {phase}) written while batch {b} (phase {p}) is in flight"
            );
            assert!(
                ups.iter().all(|u| !keys.contains(&u.key)),
                "switch {switch}: batches {b} and {batch} share a key"
            );
        }
        self.max_outstanding = self.max_outstanding.max(outstanding);
    }

    fn apply_write(&mut self, switch: String, batch: u64, updates: Vec<Update>) {
        let sw = self.switches.get_mut(&switch).expect("switch");
        if !sw.up {
            return; // lost; the shell reports SwitchDown
        }
        let mut results = Vec::new();
        for u in &updates {
            let exists = sw.tables.contains_key(&u.key);
            let crt_count = || {
                sw.tables
                    .keys()
                    .filter(|k| matches!(k, Key::Crt(_)))
                    .count()
            };
            let r = match u.kind {
                UpdateKind::Insert if exists => WriteOutcome::AlreadyExists,
                UpdateKind::Insert
                    if matches!(u.key, Key::Crt(_))
                        && sw.crt_capacity.is_some_and(|c| crt_count() >= c) =>
                {
                    WriteOutcome::ResourceExhausted
                }
                UpdateKind::Insert => {
                    sw.tables.insert(u.key, u.value);
                    WriteOutcome::Ok
                }
                UpdateKind::Modify if !exists => WriteOutcome::NotFound,
                UpdateKind::Modify => {
                    sw.tables.insert(u.key, u.value);
                    WriteOutcome::Ok
                }
                UpdateKind::Delete if !exists => WriteOutcome::NotFound,
                UpdateKind::Delete => {
                    sw.tables.remove(&u.key);
                    WriteOutcome::Ok
                }
            };
            results.push(r);
        }
        sw.writes += 1;
        let d = entries::dangling(&sw.tables);
        assert!(
            d.is_empty(),
            "switch {switch}: entries name missing targets after batch {batch}: {d:?}"
        );
        self.write_log.push((switch.clone(), updates));
        self.core.handle(
            self.now,
            Event::WriteResult {
                switch,
                batch,
                results,
            },
        );
    }

    /// Feed an event and run until no action is left.
    pub fn event(&mut self, ev: Event) {
        self.core.handle(self.now, ev);
        self.run();
    }

    /// Move time forward by `ms` (firing lease timers) and run.
    pub fn advance(&mut self, ms: u64) {
        self.now = self.now.plus(ms);
        self.core.handle_timeout(self.now);
        self.run();
    }

    /// Bring a switch up (its tables are kept unless `wipe`).
    pub fn switch_up(&mut self, name: &str, wipe: bool) {
        let s = self.switches.get_mut(name).expect("switch");
        s.up = true;
        if wipe {
            s.tables.clear();
        }
        // A new session: writes of the old one are lost.
        self.held.retain(|(s, _, _)| s != name);
        self.event(Event::SwitchUp {
            switch: name.into(),
        });
    }

    /// Take a switch down (as the shell would after the detection time).
    pub fn switch_down(&mut self, name: &str) {
        self.switches.get_mut(name).expect("switch").up = false;
        self.held.retain(|(s, _, _)| s != name);
        self.event(Event::SwitchDown {
            switch: name.into(),
        });
    }

    /// Carry out actions until none is left.
    pub fn run(&mut self) {
        while let Some(a) = self.core.poll_action() {
            match a {
                Action::Write {
                    switch,
                    batch,
                    updates,
                } => {
                    if !self.switches[&switch].up {
                        continue; // lost; the shell reports SwitchDown
                    }
                    self.check_phase_order(&switch, batch, &updates);
                    if self.hold_writes {
                        self.held.push((switch, batch, updates));
                    } else {
                        self.apply_write(switch, batch, updates);
                    }
                }
                Action::ReadSwitch { switch } => {
                    let sw = &self.switches[&switch];
                    if !sw.up {
                        continue;
                    }
                    let entries = sw.tables.iter().map(|(k, v)| (*k, *v)).collect();
                    self.core
                        .handle(self.now, Event::SwitchRead { switch, entries });
                }
                other => {
                    self.out.push(other);
                    self.out_at.push(self.write_log.len());
                }
            }
        }
    }

    /// Index in `write_log` order at which the first action matching `f` was emitted.
    pub fn emitted_at(&self, f: impl Fn(&Action) -> bool) -> Option<usize> {
        self.out.iter().position(f).map(|i| self.out_at[i])
    }

    /// Actions of `out` matching a predicate.
    pub fn outputs(&self, f: impl Fn(&Action) -> bool) -> Vec<&Action> {
        self.out.iter().filter(|a| f(a)).collect()
    }
}
