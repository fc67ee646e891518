//! `[ha]` metrics and admin answers of one replica on a real etcd (issue 17): the leader
//! exports `dvipa_ha_leader 1`, its term and one election; `dvipa counters` says `leader`.
//! Its own process: the Prometheus recorder is global.

use dvipa::advertise::RecordingAdvertiser;
use dvipa::cli::{self, Common, OpCmd, Reply};
use dvipa::controller::Options;
use std::time::Duration;

mod common;
mod etcd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_exports_its_role_term_and_election() {
    let etcd = etcd::Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = dvipa::demo::etcd::ports(1)[0];
    let cfg = common::unreachable_switch_config(
        dir.path(),
        &format!(
            "agent = {{ listen = \"127.0.0.1:0\" }}\nmetrics = {{ listen = \"127.0.0.1:{metrics_port}\" }}"
        ),
        &format!(
            "\n[ha]\netcd = {}\nelection = \"/dvipa/m/leader\"\nreplica = \"solo\"\n",
            etcd.toml_list()
        ),
    );
    let opts = Options {
        insecure: true,
        resync: Duration::from_secs(3600),
        metrics: true,
        ..Options::default()
    };
    let ctl = common::start_with(&cfg, opts, RecordingAdvertiser::default()).await;
    common::wait_until("leader", 10, 20, || async {
        ctl.shared().ha().unwrap().now().is_leader()
    })
    .await;
    let term = ctl.shared().ha().unwrap().now().term;
    let m = common::metrics_when(metrics_port, |m| m.contains("dvipa_ha_leader 1")).await;
    assert!(m.contains(&format!("dvipa_ha_term {term}")), "{m}");
    assert!(m.contains("dvipa_ha_elections_total 1"), "{m}");
    let c = Common::plaintext(format!("http://{}", ctl.admin_addr()));
    let Reply::Table(t) = cli::run(&c, &OpCmd::Counters).await.unwrap() else {
        panic!("counters is a table")
    };
    assert!(
        t.rows
            .iter()
            .any(|r| r.cells == ["ha", "role", "leader"].map(String::from)),
        "{t:?}"
    );
    ctl.shutdown().await;
}
