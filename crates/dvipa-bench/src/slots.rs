//! Slot fill: recompute a service's 256 slots when a target joins or leaves, with 10, 100 and
//! 1,000 targets; time per recompute and slots moved vs the theoretical minimum.
//!
//! Baselines in the same run: (a) the same Maglev fill computed *without* the previous fill as
//! a hint (what a stateless Maglev table does) for moved slots, (b) a naive modulo fill
//! (`slot s → s mod n`-th target) for both time and moved slots.

use crate::report::{Better, Figure};
use crate::{Size, median_time};
use dvipa_core::slots::{Fill, N_SLOTS, counts, weighted_fill};

const SVC: u16 = 7;

fn moved(a: &Fill, b: &Fill) -> usize {
    a.iter().zip(b.iter()).filter(|(x, y)| x != y).count()
}

/// `Σ max(0, new_i − old_i)`: no fill with these per-target counts can move fewer slots.
fn min_moves(a: &Fill, b: &Fill) -> usize {
    let (ca, cb) = (counts(a), counts(b));
    cb.iter()
        .map(|(id, n)| n.saturating_sub(*ca.get(id).unwrap_or(&0)))
        .sum()
}

fn modulo_fill(targets: &[(u16, u32)]) -> Fill {
    let mut ids: Vec<u16> = targets.iter().map(|t| t.0).collect();
    ids.sort_unstable();
    let mut f: Fill = [None; N_SLOTS];
    if ids.is_empty() {
        return f;
    }
    for (s, slot) in f.iter_mut().enumerate() {
        *slot = Some(ids[s % ids.len()]);
    }
    f
}

/// Runs the slot-fill figures.
pub fn run(size: Size) -> anyhow::Result<Vec<Figure>> {
    let mut out = Vec::new();
    let iters = match size {
        Size::Smoke => 20,
        _ => 200,
    };
    for n in [10u16, 100, 1000] {
        let ts: Vec<(u16, u32)> = (1..=n).map(|i| (i, 1)).collect();
        let f0 = weighted_fill(SVC, &ts, &[None; N_SLOTS]);
        let holding = counts(&f0).len();
        // Join: target n+1.
        let mut join = ts.clone();
        join.push((n + 1, 1));
        // Leave: a target that holds slots (with 1,000 targets most hold none).
        let gone = f0[0].expect("slot 0 filled");
        let leave: Vec<(u16, u32)> = ts.iter().copied().filter(|t| t.0 != gone).collect();
        for (what, ts1) in [("join", &join), ("leave", &leave)] {
            let dt = median_time(iters, || weighted_fill(SVC, ts1, &f0));
            let f1 = weighted_fill(SVC, ts1, &f0);
            let cold = weighted_fill(SVC, ts1, &[None; N_SLOTS]);
            let m0 = modulo_fill(&ts);
            let m1 = modulo_fill(ts1);
            let dt_mod = median_time(iters, || modulo_fill(ts1));
            let (mv, mn) = (moved(&f0, &f1), min_moves(&f0, &f1));
            let c1 = counts(&f1);
            let (lo, hi) = (
                c1.values().min().copied().unwrap_or(0),
                c1.values().max().copied().unwrap_or(0),
            );
            out.push(
                Figure::new(
                    "slot_fill",
                    format!("{n} targets, {what}: recompute time"),
                    dt.as_secs_f64() * 1e6,
                    "us",
                    Better::Lower,
                )
                .baseline(dt_mod.as_secs_f64() * 1e6, "naive modulo fill, same targets")
                .note(format!(
                    "median of {iters}; {holding} of {n} targets hold slots before, {} after (min {lo}, max {hi} slots per holding target)",
                    c1.len()
                )),
            );
            let stateless = moved(&f0, &cold);
            out.push(
                Figure::new(
                    "slot_fill",
                    format!("{n} targets, {what}: slots moved"),
                    mv as f64,
                    "slots",
                    Better::Lower,
                )
                .baseline(
                    stateless as f64,
                    format!(
                        "same fill without the previous fill as hint (naive modulo fill moves {})",
                        moved(&m0, &m1)
                    ),
                )
                .goal_met(mv == mn, format!("= minimum ({mn})"))
                .note(format!("theoretical minimum {mn} slots")),
            );
        }
    }
    Ok(out)
}
