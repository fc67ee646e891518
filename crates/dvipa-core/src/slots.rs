//! Weighted slot fill: which target each of a service's 256 DPT slots points to.
//!
//! The switch picks a slot per new connection (CRC-32 of the 5-tuple, or round robin) and the
//! slot names the target. The fill must (1) give each target a share of slots proportional to
//! its weight and (2) move as few slots as possible when a target joins, leaves or changes
//! weight, because a moved slot sends the *unpinned* part of the traffic elsewhere.
//!
//! Algorithm (Maglev-style, with the previous fill as tie-breaker):
//! 1. Quotas by largest remainder: `q_i = floor(256·w_i/W)`, the remaining slots go to the
//!    targets with a fractional share, preferring those that held more than `floor` slots
//!    before, then the larger fraction, then the lower id. Hence `|q_i − 256·w_i/W| < 1` for every target: **each target is within one slot
//!    (1/256 ≈ 0.39 % of the traffic) of its exact weighted share** — this is the tolerance the
//!    property tests assert.
//! 2. Every target keeps its previous slots up to its quota; surplus slots are released in the
//!    reverse order of the target's Maglev preference permutation.
//! 3. Free slots are claimed in turns by targets below quota, each walking its own permutation
//!    of `0..256` (`offset + k·skip mod 256`, `skip` odd, both from a hash of service and
//!    target) — Maglev's population, restricted to the free slots.
//!
//! Only targets below their previous count gain slots, so the number of slots that change owner
//! is `Σ max(0, new_i − old_i)`: the minimum for any fill with these counts.

/// Slots per service (pipeline contract `N_SLOTS`).
pub const N_SLOTS: usize = 256;

/// A slot fill: `None` = no target (the service has no current actual target).
pub type Fill = [Option<u16>; N_SLOTS];

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maglev preference permutation of `target` within `service`: `(offset, skip)`.
fn perm(service: u16, target: u16) -> (usize, usize) {
    let h = mix((u64::from(service) << 16) | u64::from(target));
    let offset = (h % N_SLOTS as u64) as usize;
    let skip = (((h >> 32) % (N_SLOTS as u64 / 2)) * 2 + 1) as usize;
    (offset, skip)
}

/// Exact quotas by largest remainder (see module docs). `targets`: `(id, weight)`, weight > 0;
/// `prev_count(id)` breaks ties.
pub fn quotas(targets: &[(u16, u32)], prev_count: impl Fn(u16) -> usize) -> Vec<(u16, usize)> {
    let total: u64 = targets.iter().map(|t| u64::from(t.1)).sum();
    if total == 0 {
        return Vec::new();
    }
    let n = N_SLOTS as u64;
    let mut q: Vec<(u16, usize, u64)> = targets
        .iter()
        .map(|&(id, w)| {
            let num = n * u64::from(w);
            (id, (num / total) as usize, num % total)
        })
        .collect();
    let assigned: usize = q.iter().map(|x| x.1).sum();
    // Only targets with a fractional share may round up (else |q - exact| would reach 1).
    // Prefer those that already held the extra slot, then the larger fraction, then the id.
    let mut order: Vec<usize> = (0..q.len()).filter(|&i| q[i].2 > 0).collect();
    let had_extra = |i: usize| prev_count(q[i].0) > q[i].1;
    order.sort_by(|&a, &b| {
        had_extra(b)
            .cmp(&had_extra(a))
            .then(q[b].2.cmp(&q[a].2))
            .then(q[a].0.cmp(&q[b].0))
    });
    for &i in order.iter().take(N_SLOTS - assigned) {
        q[i].1 += 1;
    }
    q.into_iter().map(|(id, c, _)| (id, c)).collect()
}

/// Fill the 256 slots of `service` for `targets` (`(target_id, weight)`; weight-0 targets
/// and duplicates are ignored), keeping as much of `prev` as the quotas allow.
pub fn weighted_fill(service: u16, targets: &[(u16, u32)], prev: &Fill) -> Fill {
    let mut ts: Vec<(u16, u32)> = targets.iter().copied().filter(|t| t.1 > 0).collect();
    ts.sort();
    ts.dedup_by_key(|t| t.0);
    let mut fill: Fill = [None; N_SLOTS];
    if ts.is_empty() {
        return fill;
    }
    let prev_count = |id: u16| prev.iter().filter(|s| **s == Some(id)).count();
    let q = quotas(&ts, prev_count);
    let mut need: Vec<(u16, usize, (usize, usize), usize)> = Vec::with_capacity(q.len());
    for (id, quota) in q {
        let (off, skip) = perm(service, id);
        // Previous slots of this target, in its preference order; keep the first `quota`.
        let mut kept = 0;
        for k in 0..N_SLOTS {
            let s = (off + k * skip) % N_SLOTS;
            if prev[s] == Some(id) && kept < quota {
                fill[s] = Some(id);
                kept += 1;
            }
        }
        need.push((id, quota - kept, (off, skip), 0));
    }
    // Claim free slots in turns.
    loop {
        let mut progressed = false;
        for (id, left, (off, skip), next) in need.iter_mut() {
            if *left == 0 {
                continue;
            }
            while *next < N_SLOTS {
                let s = (*off + *next * *skip) % N_SLOTS;
                *next += 1;
                if fill[s].is_none() {
                    fill[s] = Some(*id);
                    *left -= 1;
                    progressed = true;
                    break;
                }
            }
        }
        if !progressed {
            break;
        }
    }
    fill
}

/// HOTSTANDBY: all slots to one target (or none).
pub fn single_fill(target: Option<u16>) -> Fill {
    [target; N_SLOTS]
}

/// Slots per target in a fill.
pub fn counts(fill: &Fill) -> std::collections::BTreeMap<u16, usize> {
    let mut m = std::collections::BTreeMap::new();
    for t in fill.iter().flatten() {
        *m.entry(*t).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn targets() -> impl Strategy<Value = Vec<(u16, u32)>> {
        proptest::collection::btree_map(1u16..200, 1u32..100, 1..20)
            .prop_map(|m| m.into_iter().collect())
    }

    fn check_balance(ts: &[(u16, u32)], fill: &Fill) {
        let total: u64 = ts.iter().map(|t| u64::from(t.1)).sum();
        let c = counts(fill);
        assert_eq!(fill.iter().filter(|s| s.is_some()).count(), N_SLOTS);
        for (id, w) in ts {
            let exact = N_SLOTS as f64 * f64::from(*w) / total as f64;
            let got = *c.get(id).unwrap_or(&0) as f64;
            assert!(
                (got - exact).abs() < 1.0,
                "target {id}: {got} slots, exact share {exact}"
            );
        }
    }

    /// The lower bound on moved slots for going from `a` to `b` counts.
    fn min_moves(a: &Fill, b: &Fill) -> usize {
        let (ca, cb) = (counts(a), counts(b));
        cb.iter()
            .map(|(id, n)| n.saturating_sub(*ca.get(id).unwrap_or(&0)))
            .sum()
    }

    fn moved(a: &Fill, b: &Fill) -> usize {
        a.iter().zip(b.iter()).filter(|(x, y)| x != y).count()
    }

    proptest! {
        #[test]
        fn balance_within_one_slot(ts in targets(), svc in 0u16..1024) {
            let f = weighted_fill(svc, &ts, &[None; N_SLOTS]);
            check_balance(&ts, &f);
        }

        #[test]
        fn join_moves_only_what_the_newcomer_takes(ts in targets(), new_w in 1u32..100, svc in 0u16..1024) {
            let f0 = weighted_fill(svc, &ts, &[None; N_SLOTS]);
            let mut ts1 = ts.clone();
            ts1.push((500, new_w));
            let f1 = weighted_fill(svc, &ts1, &f0);
            check_balance(&ts1, &f1);
            let newcomer = counts(&f1).get(&500).copied().unwrap_or(0);
            prop_assert_eq!(moved(&f0, &f1), newcomer);
            prop_assert_eq!(moved(&f0, &f1), min_moves(&f0, &f1));
        }

        #[test]
        fn leave_moves_only_the_leavers_slots(ts in targets(), svc in 0u16..1024, pick in any::<proptest::sample::Index>()) {
            prop_assume!(ts.len() >= 2);
            let f0 = weighted_fill(svc, &ts, &[None; N_SLOTS]);
            let gone = ts[pick.index(ts.len())].0;
            let ts1: Vec<_> = ts.iter().copied().filter(|t| t.0 != gone).collect();
            let f1 = weighted_fill(svc, &ts1, &f0);
            check_balance(&ts1, &f1);
            let had = counts(&f0).get(&gone).copied().unwrap_or(0);
            prop_assert_eq!(moved(&f0, &f1), had);
        }

        #[test]
        fn weight_change_is_minimal(ts in targets(), svc in 0u16..1024, pick in any::<proptest::sample::Index>(), w in 1u32..100) {
            let f0 = weighted_fill(svc, &ts, &[None; N_SLOTS]);
            let mut ts1 = ts.clone();
            let i = pick.index(ts1.len());
            ts1[i].1 = w;
            let f1 = weighted_fill(svc, &ts1, &f0);
            check_balance(&ts1, &f1);
            prop_assert_eq!(moved(&f0, &f1), min_moves(&f0, &f1));
        }

        #[test]
        fn refill_is_stable(ts in targets(), svc in 0u16..1024) {
            let f0 = weighted_fill(svc, &ts, &[None; N_SLOTS]);
            prop_assert_eq!(weighted_fill(svc, &ts, &f0), f0);
        }
    }

    #[test]
    fn equal_weights_and_empty() {
        let f = weighted_fill(7, &[(1, 1), (2, 1), (3, 1)], &[None; N_SLOTS]);
        let c = counts(&f);
        let mut v: Vec<usize> = c.values().copied().collect();
        v.sort();
        assert_eq!(v, vec![85, 85, 86]);
        assert_eq!(weighted_fill(7, &[], &f), [None; N_SLOTS]);
        assert_eq!(weighted_fill(7, &[(4, 0)], &f), [None; N_SLOTS]);
        // Slots of different targets interleave (round robin walks slots in order).
        assert!(f.windows(2).filter(|w| w[0] != w[1]).count() > 100);
    }
}
