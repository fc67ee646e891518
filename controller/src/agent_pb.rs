//! Every conversion between the agent protocol's protobuf messages and the core's types, in
//! both directions (a leaf module).

use dvipa_core::core::{ConnReport, ItemError, Report, SrvStat, VipaList};
use dvipa_proto::v1 as pb;
use std::net::Ipv4Addr;

/// The Welcome answering a Hello.
pub fn welcome(controller_id: &str, heartbeat_ms: u64, lease_ms: u64) -> pb::ControllerMessage {
    pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::Welcome(pb::Welcome {
            controller_id: controller_id.to_string(),
            heartbeat_interval_ms: heartbeat_ms.min(u32::MAX as u64) as u32,
            lease_ms: lease_ms.min(u32::MAX as u64) as u32,
        })),
    }
}

/// The Ack of a report batch, with the refused items.
pub fn ack(seq: u64, errors: Vec<ItemError>) -> pb::ControllerMessage {
    pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::Ack(pb::Ack {
            seq,
            errors: errors
                .into_iter()
                .map(|e| pb::ItemError {
                    list: e.list.into(),
                    index: e.index,
                    reason: e.reason.into(),
                    detail: e.detail,
                })
                .collect(),
        })),
    }
}

/// A VIPA list message.
pub fn vipa_list_msg(l: &VipaList) -> pb::ControllerMessage {
    pb::ControllerMessage {
        msg: Some(pb::controller_message::Msg::VipaList(vipa_list_pb(l))),
    }
}

/// The core's VIPA list in protobuf form.
pub fn vipa_list_pb(l: &VipaList) -> pb::VipaList {
    pb::VipaList {
        version: l.version,
        vipas: l
            .vipas
            .iter()
            .map(|v| pb::Vipa {
                dvipa: u32::from(v.dvipa),
                prefix_len: u32::from(v.prefix_len),
                ports: v.ports.iter().map(|p| u32::from(*p)).collect(),
                candidates: v.candidates.clone(),
                all_stacks: v.all_stacks,
                owner: v.owner.clone(),
                backups: v.backups.clone(),
                distmethod: v.distmethod.as_str().into(),
            })
            .collect(),
    }
}

fn conn(c: &pb::Conn) -> ConnReport {
    ConnReport {
        client: Ipv4Addr::from(c.client_addr),
        client_port: c.client_port,
        dvipa: Ipv4Addr::from(c.dvipa),
        dvipa_port: c.dvipa_port,
        protocol: c.protocol,
        server_originated: c.server_originated,
    }
}

/// A protobuf Report as the core's./// A protobuf Report as the core's.
pub fn report(seq: u64, r: &pb::Report) -> Report {
    Report {
        seq,
        srvstat: r
            .srvstat
            .iter()
            .map(|s| SrvStat {
                dvipa: Ipv4Addr::from(s.dvipa),
                port: s.port,
                protocol: s.protocol,
                listening: s.listening,
                weight: s.weight,
                draining: s.draining,
            })
            .collect(),
        newconn: r.newconn.iter().map(conn).collect(),
        termconn: r.termconn.iter().map(conn).collect(),
        full_sync: r.full_sync,
        sync_done: r.sync_done,
    }
}
