//! `[ha.tls]` and etcd authentication on a real 3-member etcd (issue 17 follow-up): over
//! mutual TLS three replicas elect one leader and replace a killed one; a replica with a
//! client certificate from another CA, without one, or trusting another CA never leads and
//! says why, while the others carry on; with etcd's user/password authentication on, the
//! right password leads and a wrong one is refused by name. Figures are printed. Unusable
//! `[ha]` files are refused by `dvipa check-config` and at start-up with `file:line:col`.

use dvipa::demo::etcd::{Etcd, EtcdTls};
use dvipa::ha::{HaState, Role, election};
use dvipa_core::config::{HaCfg, HaTlsCfg};
use dvipa_tls::testing::TestCa;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod common;

const LEASE_MS: u64 = 2000;

struct Replica {
    name: String,
    rx: watch::Receiver<HaState>,
    task: tokio::task::JoinHandle<()>,
    _shutdown: watch::Sender<bool>,
}

fn spawn(cfg: HaCfg) -> Replica {
    let name = cfg.replica.clone();
    let (tx, rx) = watch::channel(HaState::new(&name));
    let (sd, sd_rx) = watch::channel(false);
    let task = tokio::spawn(election::run(cfg, None, tx, sd_rx));
    Replica {
        name,
        rx,
        task,
        _shutdown: sd,
    }
}

fn leaders(rs: &[Replica]) -> Vec<usize> {
    (0..rs.len())
        .filter(|&i| rs[i].rx.borrow().role == Role::Leader && !rs[i].task.is_finished())
        .collect()
}

async fn one_leader(rs: &[Replica], within: Duration) -> usize {
    let t0 = Instant::now();
    loop {
        let l = leaders(rs);
        assert!(l.len() <= 1, "two leaders at once: {l:?}");
        if l.len() == 1 {
            return l[0];
        }
        assert!(t0.elapsed() < within, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The PEM files of the test: etcd's CA and server certificate, and client certificates.
struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: TestCa::new("etcd test CA").unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A client certificate named `name` from `ca`, written under `prefix`: (ca, cert, key).
    fn client(&self, ca: &TestCa, prefix: &str, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let p = ca
            .client_bundle(name)
            .unwrap()
            .write_files(self.path(), prefix)
            .unwrap();
        (p.ca, p.cert, p.key)
    }

    /// A cluster with TLS on its client URLs (mutual TLS when `client_cert_auth`).
    fn etcd(&self, client_cert_auth: bool) -> Etcd {
        let server = self
            .ca
            .server_bundle(&["127.0.0.1", "localhost"])
            .unwrap()
            .write_files(self.path(), "etcd-server")
            .unwrap();
        let (_, cert, key) = self.client(&self.ca, "etcdctl", "etcdctl");
        Etcd::start_tls_in(
            &self.path().join("etcd"),
            Some(EtcdTls {
                ca: server.ca,
                cert: server.cert,
                key: server.key,
                client_cert_auth,
                client: Some((cert, key)),
            }),
        )
        .unwrap()
    }
}

fn cfg(name: &str, etcd: &Etcd, election: &str, tls: Option<HaTlsCfg>) -> HaCfg {
    HaCfg {
        etcd: etcd.endpoints(),
        election: election.into(),
        lease_ms: LEASE_MS,
        replica: name.into(),
        tls,
        ..Default::default()
    }
}

fn mtls(ca: PathBuf, cert: PathBuf, key: PathBuf) -> Option<HaTlsCfg> {
    Some(HaTlsCfg {
        ca,
        cert: Some(cert),
        key: Some(key),
        domain: None,
    })
}

/// Waits until `r` has failed a session and returns (reason, error).
async fn etcd_error(r: &Replica, within: Duration) -> (&'static str, String) {
    let t0 = Instant::now();
    loop {
        if let Some(e) = r.rx.borrow().etcd_error.clone() {
            return e;
        }
        assert!(
            t0.elapsed() < within,
            "{}: no etcd error within {within:?}",
            r.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_over_mutual_tls_elect_one_leader_and_replace_a_killed_one() {
    let pki = Pki::new();
    let etcd = pki.etcd(true);
    let mut alive: Vec<Replica> = ["ctl-a", "ctl-b", "ctl-c"]
        .iter()
        .map(|n| {
            let (ca, cert, key) = pki.client(&pki.ca, n, n);
            spawn(cfg(n, &etcd, "/dvipa/tls1/leader", mtls(ca, cert, key)))
        })
        .collect();
    let t0 = Instant::now();
    let mut l = one_leader(&alive, Duration::from_secs(10)).await;
    println!(
        "mutual TLS: {} leader {:?} after the start",
        alive[l].name,
        t0.elapsed()
    );
    let term = alive[l].rx.borrow().term;
    let dead = alive.remove(l);
    dead.task.abort();
    let t0 = Instant::now();
    l = one_leader(&alive, Duration::from_millis(LEASE_MS + 5000)).await;
    let took = t0.elapsed();
    let new_term = alive[l].rx.borrow().term;
    println!(
        "mutual TLS: {} killed (term {term}); {} leader after {took:?} (term {new_term})",
        dead.name, alive[l].name
    );
    assert!(new_term > term, "term {new_term} after {term}");
    assert!(
        took <= Duration::from_millis(LEASE_MS + 1000),
        "new leader after {took:?}, more than lease_ms + 1 s"
    );
    for r in &alive {
        assert_eq!(r.rx.borrow().etcd_error, None, "{}", r.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_a_foreign_or_missing_client_cert_or_ca_never_lead_and_say_why() {
    let pki = Pki::new();
    let etcd = pki.etcd(true);
    let other = TestCa::new("another CA").unwrap();
    let (ca, cert, key) = pki.client(&pki.ca, "good", "ctl-good");
    let good = spawn(cfg(
        "ctl-good",
        &etcd,
        "/dvipa/tls2/leader",
        mtls(ca.clone(), cert.clone(), key.clone()),
    ));
    // A client certificate from another CA (it trusts etcd's CA).
    let (_, ocert, okey) = pki.client(&other, "foreign", "ctl-foreign");
    let foreign = spawn(cfg(
        "ctl-foreign",
        &etcd,
        "/dvipa/tls2/leader",
        mtls(ca.clone(), ocert, okey),
    ));
    // No client certificate at all.
    let bare = spawn(cfg(
        "ctl-bare",
        &etcd,
        "/dvipa/tls2/leader",
        Some(HaTlsCfg {
            ca: ca.clone(),
            ..Default::default()
        }),
    ));
    // A good client certificate, but it trusts another CA: etcd's certificate is not trusted.
    let (other_ca, _, _) = pki.client(&other, "other-ca", "x");
    let distrust = spawn(cfg(
        "ctl-distrust",
        &etcd,
        "/dvipa/tls2/leader",
        mtls(other_ca, cert, key),
    ));
    let rs = [good, foreign, bare, distrust];
    let l = one_leader(&rs, Duration::from_secs(10)).await;
    assert_eq!(rs[l].name, "ctl-good");
    let mut shown = Vec::new();
    for r in &rs[1..] {
        let (reason, e) = etcd_error(r, Duration::from_secs(10)).await;
        println!("{}: reason {reason}: {e}", r.name);
        assert_eq!(reason, "tls", "{}: {e}", r.name);
        shown.push(e);
    }
    for e in &shown[..2] {
        assert!(
            e.contains("received fatal alert")
                && e.contains("etcd refused this replica's client certificate"),
            "the refused client certificate is named: {e}"
        );
    }
    assert!(
        shown[2].contains("UnknownIssuer")
            && shown[2].contains("etcd's server certificate is not trusted"),
        "etcd's certificate not trusted is named: {}",
        shown[2]
    );
    // The refused ones keep trying and never lead; the leader is undisturbed (same term).
    let term = rs[0].rx.borrow().term;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(3 * LEASE_MS) {
        assert_eq!(leaders(&rs), vec![0]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rs[0].rx.borrow().term, term);
    for r in &rs[1..] {
        assert_eq!(r.rx.borrow().elections, 0, "{}", r.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_user_auth_the_right_password_leads_and_a_wrong_one_is_refused() {
    let pki = Pki::new();
    // Server verification only: with --client-cert-auth etcd would take the user from the
    // certificate's common name instead of the password.
    let etcd = pki.etcd(false);
    let (ca, _, _) = pki.client(&pki.ca, "auth", "x");
    let tls = Some(HaTlsCfg {
        ca: ca.clone(),
        ..Default::default()
    });
    // root (needed to enable auth) and `dvipa`, allowed the cluster's prefix only.
    let mut admin = election::connect(&cfg("setup", &etcd, "/dvipa/auth/leader", tls.clone()))
        .await
        .unwrap();
    use etcd_client::{Permission, PermissionType};
    admin.user_add("root", "rootpw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("dvipa").await.unwrap();
    admin
        .role_grant_permission(
            "dvipa",
            Permission::new(PermissionType::Readwrite, "/dvipa/auth/").with_prefix(),
        )
        .await
        .unwrap();
    admin.user_add("dvipa", "s3cret", None).await.unwrap();
    admin.user_grant_role("dvipa", "dvipa").await.unwrap();
    admin.auth_enable().await.unwrap();
    let pw = |name: &str, text: &str| {
        let p = pki.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let with_user = |name: &str, user: &str, file: PathBuf| {
        let mut c = cfg(name, &etcd, "/dvipa/auth/leader", tls.clone());
        c.username = Some(user.into());
        c.password_file = Some(file);
        c
    };
    let rs = [
        spawn(with_user("ctl-right", "dvipa", pw("right", "s3cret\n"))),
        spawn(with_user("ctl-wrong", "dvipa", pw("wrong", "guess\n"))),
        spawn(cfg("ctl-anon", &etcd, "/dvipa/auth/leader", tls.clone())),
    ];
    let t0 = Instant::now();
    let l = one_leader(&rs, Duration::from_secs(10)).await;
    println!("auth: {} leader after {:?}", rs[l].name, t0.elapsed());
    assert_eq!(rs[l].name, "ctl-right");
    for r in &rs[1..] {
        let (reason, e) = etcd_error(r, Duration::from_secs(10)).await;
        println!("{}: reason {reason}: {e}", r.name);
        assert_eq!(reason, "auth", "{}: {e}", r.name);
    }
    let (_, e) = rs[1].rx.borrow().etcd_error.clone().unwrap();
    assert!(e.contains("invalid user ID or password"), "{e}");
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(2 * LEASE_MS) {
        assert_eq!(leaders(&rs), vec![0]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes a controller TOML with `ha` (an `[ha]` section) next to etcd PEM files and a
/// password file; returns the TOML's path.
fn ha_toml(dir: &Path, ha: &str) -> PathBuf {
    let ca = TestCa::new("etcd CA").unwrap();
    ca.client_bundle("ctl-a")
        .unwrap()
        .write_files(dir, "ctl")
        .unwrap();
    std::fs::write(dir.join("pw"), "s3cret\n").unwrap();
    std::fs::write(dir.join("empty-pw"), "").unwrap();
    std::fs::write(dir.join("huge.pem"), vec![b'A'; 2 << 20]).unwrap();
    common::unreachable_switch_config(
        dir,
        r#"agent = { listen = "127.0.0.1:0", insecure = true }"#,
        &format!("\n[ha]\n{ha}\n"),
    )
}

const HA_OK: &str = r#"etcd = ["https://127.0.0.1:2379"]
election = "/dvipa/p/leader"
replica = "ctl-a"
username = "dvipa"
password_file = "pw"
[ha.tls]
ca = "ctl-ca.pem"
cert = "ctl.pem"
key = "ctl-key.pem""#;

#[tokio::test]
async fn unusable_ha_files_are_refused_by_check_config_and_at_start_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ha_toml(dir.path(), HA_OK);
    let (ok, out, err) = common::dvipa(&["check-config", "-c", cfg.to_str().unwrap()]).await;
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("ha.tls.ca") && out.contains("ctl-ca.pem"),
        "{out}"
    );
    assert!(
        out.contains("ha.username") && out.contains("dvipa"),
        "{out}"
    );
    assert!(
        !out.contains("s3cret"),
        "the password is never shown: {out}"
    );
    dvipa::controller::load(&cfg).unwrap();
    let cases = [
        (
            "ca = \"ctl-ca.pem\"",
            "ca = \"nope.pem\"",
            "ha.tls.ca: ",
            "nope.pem",
        ),
        (
            "cert = \"ctl.pem\"",
            "cert = \"huge.pem\"",
            "ha.tls.cert: ",
            "huge.pem",
        ),
        (
            "key = \"ctl-key.pem\"",
            "key = \"ctl.pem\"",
            "ha.tls.key: ",
            "private key",
        ),
        (
            "password_file = \"pw\"",
            "password_file = \"empty-pw\"",
            "ha.password_file: ",
            "empty",
        ),
    ];
    for (from, to, field, what) in cases {
        let toml = HA_OK.replace(from, to);
        let cfg = ha_toml(dir.path(), &toml);
        let text = std::fs::read_to_string(&cfg).unwrap();
        // The value's (or the [ha.tls] table's) position.
        let needle = if field.starts_with("ha.tls (") {
            "[ha.tls]"
        } else {
            to
        };
        let (line, l) = text
            .lines()
            .enumerate()
            .find(|(_, l)| l.contains(needle))
            .unwrap();
        let col = if needle == "[ha.tls]" {
            1
        } else {
            l.find('=').unwrap() + 3
        };
        let want = format!("dvipa.toml:{}:{col}: {field}", line + 1);
        let (ok, out, err) = common::dvipa(&["check-config", "-c", cfg.to_str().unwrap()]).await;
        assert!(!ok, "check-config accepted {to}:\n{out}");
        assert!(
            err.contains(&want) && err.contains(what),
            "check-config: want `{want}` and `{what}`, got:\n{err}"
        );
        let e = dvipa::controller::load(&cfg).err().unwrap().to_string();
        assert!(
            e.contains(&want) && e.contains(what),
            "start-up: want `{want}`, got:\n{e}"
        );
        println!("refused: {}", e.lines().next().unwrap_or_default());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_an_etcd_user_starts_while_etcd_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let port = dvipa::demo::etcd::ports(1)[0];
    let ha = HA_OK.replace("2379", &port.to_string());
    let cfg = ha_toml(dir.path(), &ha);
    let ctl = common::start_insecure(&cfg, dvipa::advertise::RecordingAdvertiser::default()).await;
    let shared = ctl.shared();
    common::wait_until("a failed etcd session", 10, 20, || async {
        shared.ha().unwrap().now().etcd_error.is_some()
    })
    .await;
    let st = shared.ha().unwrap().now();
    let (reason, e) = st.etcd_error.clone().unwrap();
    println!("etcd down: reason {reason}: {e}");
    assert_eq!(reason, "unavailable", "{e}");
    assert!(!st.is_leader());
    ctl.shutdown().await;
}
