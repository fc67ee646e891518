//! A real 3-member etcd cluster on loopback for the HA tests and `dvipa demo --ha` (Debian's
//! `etcd-server`, scripts/install-test-deps.sh): its own data dirs under a given directory,
//! fast elections (heartbeat 50 ms, election timeout 500 ms), killed on drop.
//!
//! With [`EtcdTls`] ([`Etcd::start_tls_in`]) the client URLs are `https://` with the given
//! server certificate, and with `client_cert_auth` etcd requires a client certificate from
//! the CA (`--client-cert-auth --trusted-ca-file`); the peer URLs stay plaintext on loopback.

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

/// TLS on the members' client URLs (PEM files).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA of the client certificates (`--trusted-ca-file`); also the one that signed
    /// `cert`, for the health checks.
    pub ca: PathBuf,
    /// The members' server certificate (names `127.0.0.1`) and key.
    pub cert: PathBuf,
    /// The server certificate's key.
    pub key: PathBuf,
    /// `--client-cert-auth`: refuse clients without a certificate from `ca`.
    pub client_cert_auth: bool,
    /// A client certificate and key from `ca`, for `etcdctl`'s health checks.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The cluster.
#[derive(Debug)]
pub struct Etcd {
    /// The members.
    pub members: Vec<Member>,
    dir: PathBuf,
    tls: Option<EtcdTls>,
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
        Self::start_tls_in(dir, None)
    }

    /// [`Etcd::start_in`] with TLS on the client URLs (`None`: plaintext).
    pub fn start_tls_in(dir: &Path, tls: Option<EtcdTls>) -> anyhow::Result<Etcd> {
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
        let mut e = Etcd { members, dir, tls };
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
        let scheme = self.scheme();
        let mut tls_args: Vec<String> = Vec::new();
        if let Some(t) = &self.tls {
            tls_args.extend([
                "--cert-file".into(),
                t.cert.display().to_string(),
                "--key-file".into(),
                t.key.display().to_string(),
            ]);
            if t.client_cert_auth {
                tls_args.extend([
                    "--client-cert-auth".into(),
                    "--trusted-ca-file".into(),
                    t.ca.display().to_string(),
                ]);
            }
        }
        let m = &mut self.members[i];
        let child = Command::new("etcd")
            .args(&tls_args)
            .args([
                "--name",
                &m.name,
                "--data-dir",
                &data.to_string_lossy(),
                "--listen-client-urls",
                &format!("{scheme}://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("{scheme}://127.0.0.1:{}", m.client),
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

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The client endpoints, `http://127.0.0.1:port` (`https://` with TLS).
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client))
            .collect()
    }

    /// `etcdctl` with this cluster's TLS flags, against member `m`'s client URL.
    pub fn etcdctl(&self, m: &Member) -> Command {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3").args([
            "--endpoints",
            &format!("{}://127.0.0.1:{}", self.scheme(), m.client),
            "--command-timeout=1s",
        ]);
        if let Some(t) = &self.tls {
            c.arg(format!("--cacert={}", t.ca.display()));
            if let Some((cert, key)) = &t.client {
                c.arg(format!("--cert={}", cert.display()));
                c.arg(format!("--key={}", key.display()));
            }
        }
        c
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
            let mut ok = true;
            for m in self.members.iter().filter(|m| m.child.is_some()) {
                match self.etcdctl(m).args(["endpoint", "health"]).output() {
                    Ok(o) if o.status.success() => {}
                    Ok(_) => ok = false,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                        "etcdctl is not installed: run scripts/install-test-deps.sh (Debian package etcd-client)"
                    ),
                    Err(_) => ok = false,
                }
            }
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
