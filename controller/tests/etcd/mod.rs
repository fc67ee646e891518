//! The 3-member etcd of the HA tests ([`dvipa::demo::etcd`]) in a temp dir removed on drop.
#![allow(dead_code)]

/// The cluster and its directory.
pub struct Etcd {
    inner: dvipa::demo::etcd::Etcd,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts it (fails the test without etcd: scripts/install-test-deps.sh installs it).
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let inner = dvipa::demo::etcd::Etcd::start_in(dir.path()).unwrap();
        Etcd { inner, _dir: dir }
    }
}

impl std::ops::Deref for Etcd {
    type Target = dvipa::demo::etcd::Etcd;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for Etcd {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}
