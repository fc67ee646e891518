//! Arbitration per (device, role name): the primary is the highest election id among the
//! role's open streams; role configs are refused; a primary change is announced to the role.

use super::*;

/// A live controller: a StreamChannel that sent an accepted `MasterArbitrationUpdate`.
pub(super) struct Controller {
    pub(super) conn: u64,
    /// Role name; empty = the default role.
    pub(super) role: String,
    /// `None`: no election id was sent. Such a client is lower than any election id and never
    /// becomes primary (P4Runtime spec, arbitration).
    pub(super) election_id: Option<u128>,
    pub(super) tx: StreamTx,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) program: Option<Arc<Program>>,
    pub(super) config: Option<p4::ForwardingPipelineConfig>,
    pub(super) saved: Option<(Arc<Program>, p4::ForwardingPipelineConfig)>,
    pub(super) controllers: Vec<Controller>,
    /// Highest election id seen per role (answered as `election_id` while a role has no primary).
    pub(super) highest_election: HashMap<String, u128>,
    pub(super) digest: Option<DigestConfig>,
}

impl State {
    /// The primary of `role`: its live controller with the highest election id (bmv2/PI rule:
    /// when the primary leaves, the next highest live controller takes over).
    pub(super) fn primary(&self, role: &str) -> Option<&Controller> {
        self.controllers
            .iter()
            .filter(|c| c.role == role && c.election_id.is_some())
            .max_by_key(|c| c.election_id)
    }

    /// Identity of `role`'s primary, to detect primary changes.
    pub(super) fn primary_key(&self, role: &str) -> Option<(u64, Option<u128>)> {
        self.primary(role).map(|p| (p.conn, p.election_id))
    }

    /// The primary of every role that has one: where digests and idle notifications go (no role
    /// config is supported, so every role has full pipeline access and receives them).
    pub(super) fn primaries(&self) -> impl Iterator<Item = &Controller> {
        self.controllers
            .iter()
            .filter(|c| self.primary(&c.role).is_some_and(|p| p.conn == c.conn))
    }
}

pub(super) fn role_desc(role: &str) -> String {
    if role.is_empty() {
        "the default role".into()
    } else {
        format!("role {role:?}")
    }
}

/// Checks the role fields of a unary request: the deprecated numeric role id is not supported.
pub(super) fn check_role_fields(role_id: u64) -> Result<(), Status> {
    if role_id != 0 {
        return Err(Status::unimplemented(
            "numeric role ids (deprecated role_id) are not supported; name the role in `role`",
        ));
    }
    Ok(())
}

/// An election id as sent: `None` when the field is unset.
pub(super) fn election_of(e: &Option<p4::Uint128>) -> Option<u128> {
    e.as_ref()
        .map(|e| (u128::from(e.high) << 64) | u128::from(e.low))
}

pub(super) fn uint128(v: u128) -> p4::Uint128 {
    p4::Uint128 {
        high: (v >> 64) as u64,
        low: v as u64,
    }
}

impl SwitchServer {
    pub(super) fn check_primary(
        &self,
        role: &str,
        election_id: &Option<p4::Uint128>,
    ) -> Result<(), Status> {
        let st = self.inner.state.lock();
        let id = election_of(election_id);
        match st.primary(role) {
            Some(p) if id.is_some() && p.election_id == id => Ok(()),
            Some(p) => Err(Status::permission_denied(format!(
                "election id {} is not the primary's ({}) for {}",
                id.map_or("(unset)".to_string(), |i| i.to_string()),
                p.election_id.unwrap_or(0),
                role_desc(role)
            ))),
            None => Err(Status::permission_denied(format!(
                "no primary controller for {}: open a StreamChannel and send a \
                 MasterArbitrationUpdate with this role and election id first",
                role_desc(role)
            ))),
        }
    }

    /// The `MasterArbitrationUpdate` a live controller is sent (spec, "Client Arbitration
    /// Notifications"): OK for the role's primary, ALREADY_EXISTS for its backups, NOT_FOUND when
    /// the role has no primary; `election_id` is the primary's, else the highest seen (unset if
    /// none).
    pub(super) fn arbitration_update(
        st: &State,
        device_id: u64,
        c: &Controller,
    ) -> p4::stream_message_response::Update {
        let primary = st.primary(&c.role);
        let (code, msg) = match primary {
            Some(p) if p.conn == c.conn => (tonic::Code::Ok, "primary".to_string()),
            Some(_) => (
                tonic::Code::AlreadyExists,
                format!(
                    "backup: a controller with a higher election id is primary for {}",
                    role_desc(&c.role)
                ),
            ),
            None => (
                tonic::Code::NotFound,
                format!("backup: {} has no primary", role_desc(&c.role)),
            ),
        };
        let election_id = primary
            .and_then(|p| p.election_id)
            .or_else(|| st.highest_election.get(&c.role).copied());
        p4::stream_message_response::Update::Arbitration(p4::MasterArbitrationUpdate {
            device_id,
            role: (!c.role.is_empty()).then(|| p4::Role {
                name: c.role.clone(),
                ..Default::default()
            }),
            election_id: election_id.map(uint128),
            status: Some(rpc::Status {
                code: code as i32,
                message: msg,
                details: vec![],
            }),
        })
    }

    /// Sends the arbitration update to every live controller of `role`.
    pub(super) fn notify_role(&self, st: &State, role: &str) {
        for c in st.controllers.iter().filter(|c| c.role == role) {
            send(
                &self.inner.stats,
                &c.tx,
                Self::arbitration_update(st, self.inner.device_id, c),
            );
        }
    }

    /// Applies a `MasterArbitrationUpdate` received on stream `conn` (spec, "Rules for Handling
    /// MasterArbitrationUpdate Messages"). An `Err` terminates the stream with that status.
    #[allow(deprecated)] // Role.id is refused by name
    pub(super) fn handle_arbitration(
        &self,
        conn: u64,
        tx: &StreamTx,
        a: p4::MasterArbitrationUpdate,
    ) -> Result<(), Status> {
        let role = a.role.clone().unwrap_or_default();
        let id = election_of(&a.election_id);
        let mut st = self.inner.state.lock();
        let live = st.controllers.iter().position(|c| c.conn == conn);
        if let Some(i) = live {
            if a.device_id != self.inner.device_id {
                return Err(Status::failed_precondition(format!(
                    "device id {} does not match this stream's device id {}",
                    a.device_id, self.inner.device_id
                )));
            }
            if role.name != st.controllers[i].role {
                return Err(Status::failed_precondition(format!(
                    "this stream is for {}; to change roles, open a new StreamChannel",
                    role_desc(&st.controllers[i].role)
                )));
            }
        } else {
            self.check_device(a.device_id)?;
        }
        if role.id != 0 && role.name.is_empty() {
            return Err(Status::unimplemented(
                "numeric role ids (deprecated Role.id) are not supported; set Role.name",
            ));
        }
        if role.config.is_some() {
            return Err(Status::invalid_argument(format!(
                "role configs are not supported by dvipa-switch ({} sent Role.config of type \
                 {:?}); leave Role.config unset: every role has full pipeline access",
                role_desc(&role.name),
                role.config
                    .as_ref()
                    .map(|c| c.type_url.as_str())
                    .unwrap_or("")
            )));
        }
        let role = role.name;
        if let Some(id) = id
            && st
                .controllers
                .iter()
                .any(|c| c.role == role && c.election_id == Some(id) && c.conn != conn)
        {
            return Err(Status::invalid_argument(format!(
                "election id {id} is already used by another controller of {}",
                role_desc(&role)
            )));
        }
        let before = st.primary_key(&role);
        match live {
            Some(i) => st.controllers[i].election_id = id,
            None => st.controllers.push(Controller {
                conn,
                role: role.clone(),
                election_id: id,
                tx: tx.clone(),
            }),
        }
        if let Some(id) = id {
            let h = st.highest_election.entry(role.clone()).or_insert(id);
            *h = (*h).max(id);
        }
        let after = st.primary_key(&role);
        info!(
            conn,
            role = %role,
            election_id = ?id,
            primary = after.is_some_and(|(c, _)| c == conn),
            "arbitration"
        );
        if before != after {
            self.notify_role(&st, &role);
        } else if let Some(c) = st.controllers.iter().find(|c| c.conn == conn) {
            send(
                &self.inner.stats,
                tx,
                Self::arbitration_update(&st, self.inner.device_id, c),
            );
        }
        Ok(())
    }

    pub(super) fn disconnect(&self, conn: u64) {
        let mut st = self.inner.state.lock();
        let Some(i) = st.controllers.iter().position(|c| c.conn == conn) else {
            return;
        };
        let role = st.controllers[i].role.clone();
        let before = st.primary_key(&role);
        st.controllers.remove(i);
        let after = st.primary_key(&role);
        info!(conn, role = %role, "controller stream closed");
        if before != after {
            self.notify_role(&st, &role);
        }
    }

    /// Whether stream `conn` is its role's primary.
    pub(super) fn is_primary_conn(&self, conn: u64) -> bool {
        let st = self.inner.state.lock();
        st.controllers
            .iter()
            .find(|c| c.conn == conn)
            .and_then(|c| st.primary(&c.role))
            .is_some_and(|p| p.conn == conn)
    }
}
