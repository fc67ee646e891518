//! Issue 16: the controller with a `target = "tofino"` switch served by the embedded switch's
//! `stratum-bfrt` flavour (TNA P4Info, BfPipelineConfig, digests acked by the server, no
//! idle-timeout notifications): connections are pinned from digests it never acks, and an idle
//! connection is removed by the controller's CRT counter reads while a busy one is kept.
use dvipa::advertise::RecordingAdvertiser;
use dvipa_switch::server::{Flavor, ServerOptions, SwitchServer};
use dvipa_switch::{Pipeline, Verdict};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod common;

const DVIPA: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

const PROFILE: &str = "\
VIPADYNAMIC
  VIPADEFINE MOVEABLE IMMEDIATE 255.255.255.0 203.0.113.10
  VIPADISTRIBUTE 203.0.113.10 PORT 60 DESTIP 10.0.0.1
ENDVIPADYNAMIC
";

fn tcp_frame(sport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 9, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&CLIENT.octets());
    f.extend_from_slice(&DVIPA.octets());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&60u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tofino_switch_pins_from_self_acked_digests_and_ages_the_crt_by_counter_reads() {
    let sw = SwitchServer::with_options(
        0,
        Arc::new(Pipeline::new()),
        ServerOptions {
            flavor: Flavor::StratumBfrt,
            ..Default::default()
        },
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sw_addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(sw.service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    let dir = tempfile::tempdir().unwrap();
    common::write_inputs(dir.path(), &[("sw1.profile", PROFILE)]);
    let tna = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../p4src/tna/dvipa.p4info.txtpb"
    ))
    .unwrap();
    p4rt::tofino::write_stand_in_output(&dir.path().join("tofino-out"), &tna, "dvipa").unwrap();
    let text = format!(
        r#"
controller_id = "test"
p4info = "{p4info}"
device_config = "{dir}/device.json"
agent = {{ listen = "127.0.0.1:0" }}
timers = {{ heartbeat_ms = 200, lease_ms = 5000, idle_timeout_ms = 1000, liveness_ms = 500 }}

[[switch]]
name = "SW1"
p4runtime = "{sw_addr}"
device_id = 0
election_id = 10
profile = "sw1.profile"
target = "tofino"
pipeline_dir = "tofino-out"
routes = [{{ prefix = "0.0.0.0/0", port = 1, dmac = "02:00:00:00:fe:01", smac = "02:00:00:00:01:01" }}]

[[stack]]
name = "MVS1"
underlay = "10.0.0.1"
mac = "02:00:00:00:00:01"
ports = {{ SW1 = 2 }}
"#,
        p4info = common::P4INFO,
        dir = dir.path().display()
    );
    let cfg = common::write_toml(dir.path(), &text);
    let ctl = common::start_insecure(&cfg, RecordingAdvertiser::default()).await;
    let (tx, _rx) = common::plaintext_agent(ctl.agent_addr()).await;
    let hb = tokio::spawn(async move {
        loop {
            if tx.send(common::heartbeat()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    common::wait_until("slots on the Tofino-flavoured switch", 10, 50, || async {
        let t = sw.pipeline().tables();
        t.dpt.len() == 256 && t.dvipa.len() == 1
    })
    .await;
    // Slots written: the controller pushed the TNA P4Info with a BfPipelineConfig (the flavour
    // refuses anything else).

    // Two handshakes; the server acks their digests itself.
    for sport in [41000, 41001] {
        assert_eq!(sw.inject(1, &tcp_frame(sport, 0x02)).0, Verdict::Forward(2));
        assert_eq!(sw.inject(1, &tcp_frame(sport, 0x10)).0, Verdict::Forward(2));
    }
    common::wait_until("both connections pinned", 10, 50, || async {
        sw.pipeline().tables().crt.len() == 2
    })
    .await;
    // 41001 keeps sending; 41000 is idle and goes after about idle_timeout + one read interval.
    let t0 = Instant::now();
    let mut removed_after = None;
    while t0.elapsed() < Duration::from_secs(8) {
        sw.inject(1, &tcp_frame(41001, 0x10));
        let ports: Vec<u16> = {
            let t = sw.pipeline().tables();
            t.crt.iter().map(|(k, _)| k.sport).collect()
        };
        assert!(
            ports.contains(&41001),
            "the busy connection was aged out: {ports:?}"
        );
        if !ports.contains(&41000) {
            removed_after = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let removed_after = removed_after.expect("the idle connection was never aged out");
    eprintln!(
        "idle connection removed {removed_after:?} after its last packet (idle timeout 1 s, reads every 1 s)"
    );
    assert!(
        removed_after >= Duration::from_millis(900),
        "{removed_after:?}"
    );
    assert_eq!(sw.stats().idle_notifications.load(Ordering::Relaxed), 0);
    // netstat vipadyn shows the target and what the controller works around.
    let c = dvipa::cli::Common::plaintext(format!("http://{}", ctl.admin_addr()));
    let cmd = dvipa::cli::OpCmd::Netstat {
        report: dvipa::cli::Report::Vipadyn,
    };
    let Ok(dvipa::cli::Reply::Table(t)) = dvipa::cli::run(&c, &cmd).await else {
        panic!("no vipadyn table");
    };
    let col = t.columns.iter().position(|c| c == "TARGET").unwrap();
    assert_eq!(t.rows[0].cells[col], "tofino -acks -idle");
    hb.abort();
    ctl.shutdown().await;

    // A restarted controller finds the pipeline it installed (same cookie) and leaves it and
    // the tables alone. The TNA P4Info has two structs in `type_info`; while proto maps were
    // HashMaps their encoding order, and so the cookie, changed from one process to the next
    // (in CI a restart re-pushed the pipeline, emptying the CRT, and 9 connections were reset).
    // Five restarts: with a random order each has an even chance to differ.
    assert_eq!(sw.stats().pipeline_resets.load(Ordering::Relaxed), 1);
    for round in 1..=5 {
        let ctl = common::start_insecure(&cfg, RecordingAdvertiser::default()).await;
        common::wait_until(
            "the restarted controller has read the switch",
            10,
            50,
            || async {
                let st = &ctl.shared().stats;
                st.get("switch_pipeline_alreadyinstalled") + st.get("switch_pipeline_pushed") > 0
            },
        )
        .await;
        assert_eq!(
            sw.stats().pipeline_resets.load(Ordering::Relaxed),
            1,
            "restart {round} re-pushed the pipeline (counters: {:?})",
            ctl.shared().stats.snapshot()
        );
        let ports: Vec<u16> = sw
            .pipeline()
            .tables()
            .crt
            .iter()
            .map(|(k, _)| k.sport)
            .collect();
        assert!(
            ports.contains(&41001),
            "restart {round}: the pin is gone: {ports:?}"
        );
        ctl.shutdown().await;
    }
}
