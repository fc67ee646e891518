//! P4Runtime write rate: batched CRT inserts (1, 100 and 1000 updates per Write) through
//! `p4rt::Session` into the embedded switch's P4Runtime server, in-process on loopback.
//! Baseline in the same run: one update per Write. Reference (not this run): bmv2
//! `simple_switch_grpc` ≈ 720 entries/s one per Write, ≈ 9.6k/s at 100 per Write.
//!
//! Also: a slot change written to the switch (recompute the fill on a join with 10 targets,
//! then one Write of the moved slots' DPT MODIFYs), baseline = the moved slots one per Write.

use crate::Size;
use crate::embedded::{self, Embedded};
use crate::harness;
use crate::report::{Better, Figure};
use dvipa_core::entries::{Key, Update, UpdateKind, Value};
use dvipa_core::slots::{N_SLOTS, weighted_fill};
use p4rt::proto::p4::v1 as p4;
use p4rt::{Schema, Session, delete, insert};
use std::time::Instant;

fn crt_updates(schema: &Schema, range: std::ops::Range<u32>) -> anyhow::Result<Vec<p4::Update>> {
    range
        .map(|i| {
            let e = dvipa_contract::table_entry(
                schema,
                &Key::Crt(harness::conn(i)),
                &Value::ToTarget {
                    target: 1 + (i % 4) as u16,
                },
                0,
            )?;
            Ok(insert(e))
        })
        .collect()
}

async fn timed_writes(s: &Session, ups: Vec<p4::Update>, batch: usize) -> anyhow::Result<f64> {
    let n = ups.len();
    let t = Instant::now();
    let mut it = ups.into_iter().peekable();
    while it.peek().is_some() {
        let b: Vec<p4::Update> = it.by_ref().take(batch).collect();
        s.write(b).await?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Runs the section.
pub fn run(size: Size) -> anyhow::Result<Vec<Figure>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(size))
}

async fn run_async(size: Size) -> anyhow::Result<Vec<Figure>> {
    let (n_single, n_batched) = match size {
        Size::Smoke => (1000u32, 10_000u32),
        Size::Default => (5000, 60_000),
        Size::Large => (10_000, 200_000),
    };
    let schema = embedded::schema()?;
    let sw = Embedded::start(1, n_batched as usize + 1).await?;
    let (session, _queues) = embedded::connect(&sw, &schema).await?;
    let mut out = Vec::new();
    let mut base = 0u32;
    let mut single = 0.0;
    for batch in [1usize, 100, 1000] {
        let n = if batch == 1 { n_single } else { n_batched };
        let ups = crt_updates(&schema, base..base + n)?;
        let dels: Vec<p4::Update> = ups
            .iter()
            .map(|u| delete(u.entity.clone().expect("entity")))
            .collect();
        let rate = timed_writes(&session, ups, batch).await?;
        anyhow::ensure!(sw.crt_len() == n as usize, "switch holds {}", sw.crt_len());
        let del_rate = timed_writes(&session, dels, batch).await?;
        anyhow::ensure!(sw.crt_len() == 0, "deletes left {}", sw.crt_len());
        base += n;
        if batch == 1 {
            single = rate;
        }
        let bmv2 = if batch == 1 { 720.0 } else { 9600.0 };
        let f = Figure::new(
            "p4rt_write",
            format!("CRT inserts, {batch} per Write ({})", crate::memory::count(n)),
            rate,
            "entries/s",
            Better::Higher,
        )
        .note(format!(
            "deletes {del_rate:.0}/s; {:.1}x the bmv2 reference ({bmv2:.0}/s at {} per Write, measured elsewhere)",
            rate / bmv2,
            if batch == 1 { 1 } else { 100 }
        ));
        out.push(if batch == 1 {
            f.note(format!(
                "this is the baseline; deletes {del_rate:.0}/s; {:.1}x the bmv2 reference (720/s one per Write, p4runtime-shell, measured elsewhere)",
                rate / 720.0
            ))
        } else {
            f.baseline(single, "1 update per Write, same run")
        });
    }

    // A slot change written: 10 targets, one joins.
    let svc = 7u16;
    let ts: Vec<(u16, u32)> = (1..=10).map(|i| (i, 1)).collect();
    let f0 = weighted_fill(svc, &ts, &[None; N_SLOTS]);
    let dpt = |slot: usize, t: u16| Update {
        kind: UpdateKind::Insert,
        key: Key::Dpt {
            service: svc,
            slot: slot as u16,
        },
        value: Value::ToTarget { target: t },
    };
    let init: Vec<p4::Update> = f0
        .iter()
        .enumerate()
        .map(|(s, t)| {
            Ok(dvipa_contract::to_p4_update(
                &schema,
                &dpt(s, t.expect("filled")),
                0,
            )?)
        })
        .collect::<anyhow::Result<_>>()?;
    session.write(init).await?;
    let mut join = ts.clone();
    join.push((11, 1));
    let reps = if size == Size::Smoke { 5 } else { 50 };
    let mut batched = Vec::new();
    let mut singles = Vec::new();
    let mut moved = 0;
    for r in 0..reps {
        // Alternate join and leave so every round moves the same slots back and forth.
        let (from, to_ts) = if r % 2 == 0 {
            (f0, join.clone())
        } else {
            (weighted_fill(svc, &join, &f0), ts.clone())
        };
        let t = Instant::now();
        let f1 = weighted_fill(svc, &to_ts, &from);
        let ups: Vec<p4::Update> = (0..N_SLOTS)
            .filter(|&s| f1[s] != from[s])
            .map(|s| {
                let mut u = dpt(s, f1[s].expect("filled"));
                u.kind = UpdateKind::Modify;
                Ok(dvipa_contract::to_p4_update(&schema, &u, 0)?)
            })
            .collect::<anyhow::Result<_>>()?;
        moved = ups.len();
        let one_by_one = r % 4 >= 2;
        if one_by_one {
            for u in ups {
                session.write(vec![u]).await?;
            }
            singles.push(t.elapsed());
        } else {
            session.write(ups).await?;
            batched.push(t.elapsed());
        }
    }
    batched.sort();
    singles.sort();
    let med = |v: &Vec<std::time::Duration>| v[v.len() / 2].as_secs_f64() * 1e6;
    out.push(
        Figure::new(
            "slot_fill",
            "10 targets, join/leave: recompute + write moved slots (one Write)",
            med(&batched),
            "us",
            Better::Lower,
        )
        .baseline(med(&singles), "same moved slots, one DPT MODIFY per Write")
        .note(format!(
            "{moved} DPT MODIFYs per change through p4rt::Session into the embedded switch; median of {}",
            batched.len()
        )),
    );
    Ok(out)
}
