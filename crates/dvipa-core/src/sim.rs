//! A deterministic simulation around [`Core`] for tests: in-memory switches that apply
//! [`Action::Write`] batches (with P4Runtime-like per-update outcomes and an optional CRT
//! capacity), answer [`Action::ReadSwitch`], and check after every write that no entry names a
//! missing target. Time only moves when the test says so. No I/O.

use crate::core::{Action, Core, Event, Time, WriteOutcome};
use crate::entries::{self, Key, Tables, UpdateKind};
use std::collections::BTreeMap;

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
        }
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
        self.event(Event::SwitchUp {
            switch: name.into(),
        });
    }

    /// Take a switch down (as the shell would after the detection time).
    pub fn switch_down(&mut self, name: &str) {
        self.switches.get_mut(name).expect("switch").up = false;
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
                    let sw = self.switches.get_mut(&switch).expect("switch");
                    if !sw.up {
                        continue; // lost; the shell reports SwitchDown
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
