//! The stream channel's outputs besides arbitration: `learn_t` digests batched into
//! `DigestList`s per the `DigestEntry` config (with ack timeouts), and idle-timeout
//! notifications for `crt` entries (repeated about once a second while they stay idle, as
//! bmv2 does; or once per idle period, as the P4Runtime specification reads, with
//! `SwitchServer::set_idle_notify_once`).

use super::*;

pub(super) type StreamTx = mpsc::Sender<Result<p4::StreamMessageResponse, Status>>;

/// Interval of the idle-timeout sweep.
pub(super) const IDLE_SWEEP: Duration = Duration::from_millis(100);

/// Repeat period of idle notifications for an entry that stays idle (bmv2: about 1 s).
pub(super) const IDLE_REPEAT_NS: u64 = 1_000_000_000;

pub(super) enum DigestMsg {
    Learn(Learn),
    Ack(u64),
    Reset,
}

pub(super) fn now_unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(super) fn send(stats: &ServerStats, tx: &StreamTx, m: p4::stream_message_response::Update) {
    if tx
        .try_send(Ok(p4::StreamMessageResponse { update: Some(m) }))
        .is_err()
    {
        stats.stream_drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// A configured duration in ns, clamped to one day (so deadlines never overflow).
pub(super) fn cfg_duration(ns: i64) -> Duration {
    Duration::from_nanos(ns.clamp(0, 86_400_000_000_000) as u64)
}

pub(super) struct Unacked {
    learns: Vec<Learn>,
    sent: Instant,
}

pub(super) async fn digest_task(inner: std::sync::Weak<Inner>, mut rx: mpsc::Receiver<DigestMsg>) {
    let mut batch: Vec<Learn> = Vec::new();
    let mut batch_start = Instant::now();
    let mut outstanding: HashSet<Learn> = HashSet::new();
    let mut unacked: HashMap<u64, Unacked> = HashMap::new();
    let mut next_list: u64 = 1;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let flavor = strong.opts.flavor;
        let cfg = flavor.digest_config(strong.state.lock().digest);
        drop(strong);
        // Next deadline: batch flush or ack expiry.
        let mut deadline: Option<Instant> = None;
        if let Some(c) = cfg {
            if !batch.is_empty() {
                deadline = Some(batch_start + cfg_duration(c.max_timeout_ns));
            }
            if let Some(oldest) = unacked.values().map(|u| u.sent).min() {
                let d = oldest + cfg_duration(c.ack_timeout_ns);
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
        }
        let wait = deadline.unwrap_or_else(|| Instant::now() + Duration::from_millis(200));
        let msg = tokio::select! {
            m = rx.recv() => match m { Some(m) => Some(m), None => return },
            _ = tokio::time::sleep_until(wait.into()) => None,
        };
        let Some(inner) = inner.upgrade() else { return };
        let mut msgs = Vec::new();
        if let Some(m) = msg {
            msgs.push(m);
            while msgs.len() < 4096 {
                match rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
        }
        let cfg = flavor.digest_config(inner.state.lock().digest);
        for m in msgs {
            match m {
                DigestMsg::Reset => {
                    batch.clear();
                    outstanding.clear();
                    unacked.clear();
                }
                DigestMsg::Ack(_) if flavor.acks_digests_itself() => {}
                DigestMsg::Ack(id) => {
                    if let Some(u) = unacked.remove(&id) {
                        for l in u.learns {
                            outstanding.remove(&l);
                        }
                    }
                }
                DigestMsg::Learn(l) => {
                    let Some(c) = cfg else {
                        inner
                            .stats
                            .digests_unconfigured
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    if !outstanding.insert(l) {
                        inner
                            .stats
                            .digests_suppressed
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if batch.is_empty() {
                        batch_start = Instant::now();
                    }
                    batch.push(l);
                    if c.max_list_size > 0 && batch.len() >= c.max_list_size as usize {
                        flush(&inner, &mut batch, &mut unacked, &mut next_list);
                    }
                }
            }
        }
        let now = Instant::now();
        match cfg {
            None => {
                batch.clear();
                outstanding.clear();
                unacked.clear();
            }
            Some(c) => {
                if !batch.is_empty() && now >= batch_start + cfg_duration(c.max_timeout_ns) {
                    flush(&inner, &mut batch, &mut unacked, &mut next_list);
                }
                if flavor.acks_digests_itself() {
                    // Acked by the server at once: never re-sent; a flow's next packet
                    // digests again.
                    for (_, u) in unacked.drain() {
                        for l in &u.learns {
                            outstanding.remove(l);
                        }
                    }
                }
                let ack = cfg_duration(c.ack_timeout_ns);
                unacked.retain(|_, u| {
                    if now >= u.sent + ack {
                        for l in &u.learns {
                            outstanding.remove(l);
                        }
                        false
                    } else {
                        true
                    }
                });
            }
        }
    }
}

pub(super) fn flush(
    inner: &Inner,
    batch: &mut Vec<Learn>,
    unacked: &mut HashMap<u64, Unacked>,
    next_list: &mut u64,
) {
    let learns = std::mem::take(batch);
    let id = *next_list;
    *next_list += 1;
    let st = inner.state.lock();
    let Some(prog) = st.program.as_ref() else {
        return;
    };
    let list = p4::DigestList {
        digest_id: prog.learn,
        list_id: id,
        data: learns.iter().map(Program::encode_learn).collect(),
        timestamp: now_unix_ns(),
    };
    let mut sent = false;
    for p in st.primaries() {
        send(
            &inner.stats,
            &p.tx,
            p4::stream_message_response::Update::Digest(list.clone()),
        );
        sent = true;
    }
    if sent {
        inner.stats.digest_lists.fetch_add(1, Ordering::Relaxed);
    }
    unacked.insert(
        id,
        Unacked {
            learns,
            sent: Instant::now(),
        },
    );
}

pub(super) async fn idle_task(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(IDLE_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When each idle entry was last notified. Kept here rather than in the entry (keeps a CRT
    // entry within one cache line with its key); a refresh (MODIFY or hit) moves the entry's
    // last-hit time past its notification, which re-arms it.
    let mut notified: HashMap<crate::tables::CrtKey, u64, crate::tables::Hasher> =
        HashMap::default();
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if !inner.opts.flavor.sends_idle_notifications() {
            continue;
        }
        let once = inner.idle_once.load(Ordering::Relaxed);
        let (prog, txs) = {
            let st = inner.state.lock();
            let txs: Vec<StreamTx> = st.primaries().map(|p| p.tx.clone()).collect();
            match st.program.clone() {
                // Once per idle period: sent (and spent) even with nobody to receive it.
                Some(p) if once || !txs.is_empty() => (p, txs),
                _ => continue,
            }
        };
        let now = inner.pipeline.now_ns();
        if once {
            // Spent until the entry is hit again; forgotten when the entry is gone.
            let tables = inner.pipeline.tables();
            notified.retain(|k, _| tables.crt.get(k).is_some());
        } else {
            notified.retain(|_, t| now.saturating_sub(*t) < IDLE_REPEAT_NS);
        }
        let mut entries = Vec::new();
        {
            // Only inline fields of each entry are read until one is found idle: the scan holds
            // the tables shared, which holds up every Write (and the data path behind a waiting
            // writer), so it must not take a cache miss per entry.
            let tables = inner.pipeline.tables();
            for (k, e) in tables.crt.iter() {
                let timeout = e.idle_timeout_ns;
                if timeout <= 0 {
                    continue;
                }
                let last = e.last_hit_ns.load(Ordering::Relaxed);
                if now.saturating_sub(last) < timeout as u64 {
                    continue;
                }
                if notified.get(k).is_some_and(|&n| n > last) {
                    continue;
                }
                notified.insert(*k, now);
                let act = match e.action {
                    SelectAction::ToTarget(t) => Act::Select(SelectAction::ToTarget(t)),
                    SelectAction::NoAction => Act::Select(SelectAction::NoAction),
                };
                entries.push(prog.entry(&prog.crt, &Key::Crt(*k), &act, &e.meta));
            }
        }
        if !entries.is_empty() {
            debug!(n = entries.len(), "idle timeout notification");
            inner
                .stats
                .idle_notifications
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            let n = p4::IdleTimeoutNotification {
                table_entry: entries,
                timestamp: now_unix_ns(),
            };
            for tx in &txs {
                send(
                    &inner.stats,
                    tx,
                    p4::stream_message_response::Update::IdleTimeoutNotification(n.clone()),
                );
            }
        }
    }
}
