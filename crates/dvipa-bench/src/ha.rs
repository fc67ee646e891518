//! Controller HA leader failover time (issue 17): three `dvipa::controller::Controller`
//! replicas in-process with `[ha]` on a real 3-member etcd on loopback
//! (`dvipa::demo::etcd`), one embedded switch. The leader is killed (its tasks end at once,
//! no resignation: what SIGKILL does) 10 times (12 with `--size large`); each time the clock
//! runs from the kill until the switch's primary is a client whose election id carries a
//! higher term (the new leader can write: the switch arbitrated it primary). The killed
//! replica is started again, so three always run. Lease 2 s (the default).
//!
//! Needs the `etcd` binary (Debian `etcd-server`; scripts/install-test-deps.sh); without it
//! the section prints why and yields no figure.

use crate::Size;
use crate::embedded::{self, Embedded};
use crate::harness;
use crate::report::{Better, Figure};
use anyhow::Context;
use dvipa::advertise::RecordingAdvertiser;
use dvipa::controller::{self, Controller, Options};
use dvipa::demo::etcd::Etcd;
use p4rt::{ClientConfig, Mastership, Session};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LEASE_MS: u64 = 2000;
const REPLICAS: [&str; 3] = ["ctl-a", "ctl-b", "ctl-c"];

async fn start_replica(
    dir: &Path,
    name: &str,
    sw: &Embedded,
    etcd: &Etcd,
) -> anyhow::Result<Controller> {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let (mut toml, profiles) = harness::config_text(false, false, &[sw.addr.to_string()]);
    // `[ha]` is a table: it must follow the top-level keys, so it goes before `[agent]`.
    let ha = format!(
        "state_dir = \"\"\n\n[ha]\netcd = {}\nelection = \"/dvipa/bench/leader\"\nlease_ms = {LEASE_MS}\nreplica = \"{name}\"\n\n[agent]",
        etcd.toml_list()
    );
    toml = toml.replacen("[agent]", &ha, 1);
    std::fs::write(dir.join("bench.toml"), toml)?;
    for (n, text) in profiles {
        std::fs::write(dir.join(format!("{n}.profile")), text)?;
    }
    std::fs::write(dir.join("dvipa.p4info.txtpb"), embedded::P4INFO)?;
    std::fs::write(dir.join("device.json"), b"{}")?;
    let loaded = controller::load(&dir.join("bench.toml")).context("replica config")?;
    let opts = Options {
        insecure: true,
        metrics: false,
        ..Options::default()
    };
    let agent_l = controller::bind("127.0.0.1:0".parse()?).await?;
    let admin_l = controller::bind("127.0.0.1:0".parse()?).await?;
    Controller::start(
        loaded,
        opts,
        agent_l,
        admin_l,
        Arc::new(RecordingAdvertiser::default()),
    )
    .await
    .with_context(|| format!("starting replica {name}"))
}

fn primary_id(m: &tokio::sync::watch::Receiver<Mastership>) -> Option<u128> {
    match *m.borrow() {
        Mastership::Backup {
            primary_election_id,
        } => primary_election_id,
        _ => None,
    }
}

fn leader(rs: &[Option<Controller>]) -> Option<(usize, u64)> {
    rs.iter().enumerate().find_map(|(i, c)| {
        let s = c.as_ref()?.shared().ha()?.now();
        s.is_leader().then_some((i, s.term))
    })
}

async fn run_async(kills: usize) -> anyhow::Result<Vec<Duration>> {
    let tmp = std::env::temp_dir().join(format!("dvipa-bench-ha-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let etcd = Etcd::start_in(&tmp.join("etcd")).context("starting etcd")?;
    let sw = Embedded::start(1, 1024).await?;
    let mut rs = Vec::new();
    for n in REPLICAS {
        rs.push(Some(start_replica(&tmp, n, &sw, &etcd).await?));
    }
    // An observer (election id 1, always backup) sees who is primary on the switch.
    let mut cc = ClientConfig::new(sw.addr.to_string(), sw.device_id);
    cc.election_id = 1;
    let (_obs, _q) = Session::connect(cc).await.context("observer session")?;
    let m = _obs.watch_mastership();
    let mut took = Vec::new();
    for kill in 0..kills {
        let t = Instant::now();
        let (l, term) = loop {
            if let Some(x) = leader(&rs)
                && primary_id(&m).is_some_and(|id| id >> 64 == u128::from(x.1))
            {
                break x;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(20),
                "no leader primary on the switch within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let dead = rs[l].take().expect("leader alive");
        let t0 = Instant::now();
        dead.kill();
        let d = loop {
            if primary_id(&m).is_some_and(|id| id >> 64 > u128::from(term)) {
                break t0.elapsed();
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(15),
                "no new primary on the switch within 15 s of kill {kill}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        println!(
            "  kill {kill}: {} (term {term}) -> new leader primary on the switch after {} ms",
            REPLICAS[l],
            d.as_millis()
        );
        took.push(d);
        rs[l] = Some(start_replica(&tmp, REPLICAS[l], &sw, &etcd).await?);
    }
    for c in rs.into_iter().flatten() {
        c.shutdown().await;
    }
    drop(etcd);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(took)
}

fn etcd_installed() -> bool {
    std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the section.
pub fn run(size: Size) -> anyhow::Result<Vec<Figure>> {
    if !etcd_installed() {
        println!(
            "  SKIPPED: `etcd` is not installed (Debian package etcd-server; scripts/install-test-deps.sh): no HA figure"
        );
        return Ok(Vec::new());
    }
    let kills = match size {
        Size::Large => 12,
        _ => 10,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut took = rt.block_on(run_async(kills))?;
    rt.shutdown_timeout(Duration::from_secs(2));
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let n = took.len();
    let note = format!(
        "3 replicas in-process, real 3-member etcd on loopback, lease_ms {LEASE_MS}; kill (no resignation) -> a client with a higher term primary on the switch; {n} kills"
    );
    Ok(vec![
        Figure::new(
            "ha",
            "leader failover, min",
            ms(took[0]),
            "ms",
            Better::Lower,
        )
        .note(note.clone()),
        Figure::new(
            "ha",
            "leader failover, median",
            ms(took[n / 2]),
            "ms",
            Better::Lower,
        )
        .goal(
            (LEASE_MS + 1000) as f64,
            "a new leader within lease_ms + 1 s (issue 17)",
        )
        .note(note.clone()),
        Figure::new(
            "ha",
            "leader failover, max",
            ms(took[n - 1]),
            "ms",
            Better::Lower,
        )
        .goal(
            (LEASE_MS + 1000) as f64,
            "a new leader within lease_ms + 1 s (issue 17)",
        )
        .note(note),
    ])
}
