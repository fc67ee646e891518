//! A real 3-member etcd cluster on loopback for the HA tests (Debian's `etcd-server`,
//! scripts/install-test-deps.sh): own data dirs in a temp dir, killed and removed on drop.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One member.
pub struct Member {
    pub name: String,
    pub client: u16,
    pub peer: u16,
    child: Option<Child>,
}

/// The cluster.
pub struct Etcd {
    pub members: Vec<Member>,
    dir: tempfile::TempDir,
}

/// `n` ports the kernel picked, bound together (so no two are the same).
pub fn ports(n: usize) -> Vec<u16> {
    let ls: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

impl Etcd {
    /// Starts 3 members and waits until the cluster answers.
    pub fn start() -> Etcd {
        assert!(
            Command::new("etcd").arg("--version").output().is_ok(),
            "etcd is not installed: run scripts/install-test-deps.sh (Debian package etcd-server)"
        );
        let p = ports(6);
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: p[i],
                peer: p[3 + i],
                child: None,
            })
            .collect();
        let mut e = Etcd { members, dir };
        for i in 0..3 {
            e.start_member(i, true);
        }
        e.wait_healthy(Duration::from_secs(20));
        e
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn start_member(&mut self, i: usize, _new: bool) {
        let ic = self.initial_cluster();
        let data = self.dir.path().join(&self.members[i].name);
        let log = std::fs::File::create(
            self.dir
                .path()
                .join(format!("{}.log", self.members[i].name)),
        )
        .unwrap();
        let m = &mut self.members[i];
        let child = Command::new("etcd")
            .args([
                "--name",
                &m.name,
                "--data-dir",
                data.to_str().unwrap(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-cluster",
                &ic,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "dvipa-ha-test",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .env("ETCD_UNSUPPORTED_ARCH", "arm64")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        m.child = Some(child);
    }

    /// The client endpoints, `http://127.0.0.1:port`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    /// `etcd = [...]` for a TOML.
    pub fn toml_list(&self) -> String {
        let v: Vec<String> = self.endpoints().iter().map(|e| format!("{e:?}")).collect();
        format!("[{}]", v.join(", "))
    }

    /// Waits until every running member answers `/health` with `true`.
    pub fn wait_healthy(&self, within: Duration) {
        let t0 = Instant::now();
        loop {
            let ok = self.members.iter().filter(|m| m.child.is_some()).all(|m| {
                Command::new("etcdctl")
                    .args([
                        "--endpoints",
                        &format!("http://127.0.0.1:{}", m.client),
                        "--command-timeout=1s",
                        "endpoint",
                        "health",
                    ])
                    .env("ETCDCTL_API", "3")
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            });
            if ok {
                return;
            }
            if t0.elapsed() > within {
                let logs: String = self
                    .members
                    .iter()
                    .map(|m| {
                        std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join("\n---\n");
                panic!(
                    "etcd not healthy within {within:?}:\n{}",
                    &logs[logs.len().saturating_sub(4000)..]
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGSTOP every member (etcd unavailable, its data kept).
    pub fn freeze(&self) {
        for m in &self.members {
            if let Some(c) = &m.child {
                unsafe { libc::kill(c.id() as i32, libc::SIGSTOP) };
            }
        }
    }

    /// SIGCONT every member.
    pub fn thaw(&self) {
        for m in &self.members {
            if let Some(c) = &m.child {
                unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            }
        }
    }

    /// Stops every member (SIGKILL) and starts them again on the same data.
    pub fn stop_all(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Starts the stopped members again on their data.
    pub fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.start_member(i, false);
            }
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.thaw();
        self.stop_all();
    }
}
