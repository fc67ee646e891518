//! A real 3-member etcd cluster on loopback for the HA tests and `dvipa demo --ha` (Debian's
//! `etcd-server`, scripts/install-test-deps.sh): its own data dirs under a given directory,
//! fast elections (heartbeat 50 ms, election timeout 500 ms), killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One member.
#[derive(Debug)]
pub struct Member {
    /// Member name (`m0`..`m2`).
    pub name: String,
    /// Client port on 127.0.0.1.
    pub client: u16,
    /// Peer port on 127.0.0.1.
    pub peer: u16,
    child: Option<Child>,
}

/// The cluster.
#[derive(Debug)]
pub struct Etcd {
    /// The members.
    pub members: Vec<Member>,
    dir: PathBuf,
}

/// `n` distinct free ports below the kernel's ephemeral range
/// ([`dvipa_testbed::netns::free_local_port`]), so an outgoing connection cannot take one
/// between this choice and etcd's bind.
pub fn ports(n: usize) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::with_capacity(n);
    while out.len() < n {
        let p = dvipa_testbed::netns::free_local_port().expect("a free local port");
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

impl Etcd {
    /// Starts 3 members with their data under `dir` and waits until the cluster answers.
    pub fn start_in(dir: &Path) -> anyhow::Result<Etcd> {
        if Command::new("etcd").arg("--version").output().is_err() {
            anyhow::bail!(
                "etcd is not installed: run scripts/install-test-deps.sh (Debian package etcd-server)"
            );
        }
        let p = ports(6);
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir)?;
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
            e.start_member(i)?;
        }
        e.wait_healthy(Duration::from_secs(20))?;
        Ok(e)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn start_member(&mut self, i: usize) -> anyhow::Result<()> {
        let ic = self.initial_cluster();
        let data = self.dir.join(&self.members[i].name);
        let log = std::fs::File::create(self.dir.join(format!("{}.log", self.members[i].name)))?;
        let m = &mut self.members[i];
        let child = Command::new("etcd")
            .args([
                "--name",
                &m.name,
                "--data-dir",
                &data.to_string_lossy(),
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
            .spawn()?;
        m.child = Some(child);
        Ok(())
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

    /// Waits until every running member answers `etcdctl endpoint health`.
    pub fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
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
                return Ok(());
            }
            if t0.elapsed() > within {
                let logs: String = self
                    .members
                    .iter()
                    .map(|m| {
                        std::fs::read_to_string(self.dir.join(format!("{}.log", m.name)))
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
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(c.id() as i32, libc::SIGSTOP) };
            }
        }
    }

    /// SIGCONT every member.
    pub fn thaw(&self) {
        for m in &self.members {
            if let Some(c) = &m.child {
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            }
        }
    }

    /// Stops every member (SIGKILL); their data stays.
    pub fn stop_all(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Starts the stopped members again on their data.
    pub fn restart_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.start_member(i)?;
            }
        }
        Ok(())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.thaw();
        self.stop_all();
    }
}
