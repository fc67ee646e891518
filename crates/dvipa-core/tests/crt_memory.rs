//! Measures the controller's memory per pinned connection (goal: ≤ 100 bytes), counting every
//! heap byte the core holds for the CRT and for the switch's view of it. The only test in this
//! binary, so nothing else allocates concurrently.
mod common;
use common::*;
use dvipa_core::core::{Action, DigestItem, Event, Time, WriteOutcome};
use dvipa_core::entries::{ConnKey, Key, TCP};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn drain(core: &mut dvipa_core::core::Core) {
    while let Some(a) = core.poll_action() {
        if let Action::Write {
            switch,
            batch,
            updates,
        } = a
        {
            let results = vec![WriteOutcome::Ok; updates.len()];
            drop(updates);
            core.handle(
                Time(0),
                Event::WriteResult {
                    switch,
                    batch,
                    results,
                },
            );
        }
    }
}

#[test]
fn bytes_per_pinned_connection() {
    let mut s = sim();
    s.switch_up("MVS1", true);
    attach_fig4(&mut s);
    let mut core = s.core;
    drain(&mut core);
    let svc = core.service_of(DVA1, 60, TCP).unwrap();
    const N: u32 = 60_000;
    let before = LIVE.load(Ordering::Relaxed);
    for batch in 0..(N / 1000) {
        let items: Vec<DigestItem> = (0..1000)
            .map(|i| {
                let n = batch * 1000 + i;
                let conn = ConnKey::new(
                    Ipv4Addr::from(0xC633_0000 | (n >> 16)),
                    n as u16,
                    DVA1,
                    60,
                    TCP,
                );
                DigestItem {
                    conn,
                    service: svc,
                    target: 2,
                    not_syn: false,
                }
            })
            .collect();
        core.handle(
            Time(0),
            Event::Digest {
                switch: "MVS1".into(),
                list_id: batch.into(),
                items,
            },
        );
        drain(&mut core);
    }
    let after = LIVE.load(Ordering::Relaxed);
    assert_eq!(core.crt().len(), N as usize);
    let installed = core.installed("MVS1").unwrap();
    assert_eq!(
        installed
            .keys()
            .filter(|k| matches!(k, Key::Crt(_)))
            .count(),
        N as usize
    );
    drop(installed);
    let per_conn = (after - before) as f64 / f64::from(N);
    println!(
        "CRT memory: {per_conn:.1} bytes per pinned connection ({N} connections, core CRT + one switch's installed view)"
    );
    assert!(
        per_conn <= 100.0,
        "{per_conn:.1} bytes per connection exceeds the 100-byte goal"
    );
}
