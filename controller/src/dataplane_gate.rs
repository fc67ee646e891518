//! The data-plane gate (issue 13): what the shell's [`Shared`](crate::shared::Shared) holds of
//! the data-plane probe ([`crate::dataplane_probe`]). A leaf module (no `crate::shared`), so the
//! shell's state and the probe that uses it do not import each other.

use std::collections::HashMap;

/// What the gate knows of one switch: is its P4Runtime session up, is it marked down by the
/// data-plane probe.
#[derive(Debug, Default, Clone, Copy)]
pub struct GateSw {
    ctl_up: bool,
    dp_down: bool,
}

/// Combines the driver's `SwitchUp`/`SwitchDown` with the data-plane mark: the core sees a
/// switch up only while both say so. Lives in [`Shared`](crate::shared::Shared), locked before the core.
#[derive(Debug, Default)]
pub struct Gate {
    sw: HashMap<String, GateSw>,
}

impl Gate {
    /// Notes a driver event. Returns the name of a switch whose data-plane mark this event
    /// released (a new session while marked down: probation).
    pub fn observe(&mut self, ev: &dvipa_core::core::Event) -> Option<String> {
        use dvipa_core::core::Event;
        match ev {
            Event::SwitchUp { switch } => {
                let s = self.sw.entry(switch.clone()).or_default();
                s.ctl_up = true;
                std::mem::replace(&mut s.dp_down, false).then(|| switch.clone())
            }
            Event::SwitchDown { switch } => {
                self.sw.entry(switch.clone()).or_default().ctl_up = false;
                None
            }
            _ => None,
        }
    }

    /// Sets the data-plane mark; `Some(event)` for the core when the switch's state as the core
    /// sees it changes (only while its session is up).
    pub fn mark(&mut self, switch: &str, down: bool) -> Option<dvipa_core::core::Event> {
        use dvipa_core::core::Event;
        let s = self.sw.entry(switch.to_string()).or_default();
        if s.dp_down == down {
            return None;
        }
        s.dp_down = down;
        let switch = switch.to_string();
        s.ctl_up.then_some(if down {
            Event::SwitchDown { switch }
        } else {
            Event::SwitchUp { switch }
        })
    }

    /// Whether the switch is marked down by the data-plane probe.
    pub fn dp_down(&self, switch: &str) -> bool {
        self.sw.get(switch).is_some_and(|s| s.dp_down)
    }

    /// Whether the switch's P4Runtime session is up (as its driver last said).
    pub fn ctl_up(&self, switch: &str) -> bool {
        self.sw.get(switch).is_some_and(|s| s.ctl_up)
    }
}
