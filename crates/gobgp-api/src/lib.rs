//! GoBGP's gRPC API (`apipb.GobgpApi`, GoBGP 3.x), the subset dvipa drives: `GetBgp`,
//! `ListPeer`, `AddPath`, `DeletePath`, `ListPath`, and the attributes `ORIGIN`, `NEXT_HOP`,
//! `MULTI_EXIT_DISC`, `LOCAL_PREF` with the IPv4 prefix NLRI. Generated at build time from the
//! project's own `.proto` files (`proto/gobgp`) with protox and tonic-prost-build.
//!
//! Path attributes travel as `google.protobuf.Any`; [`any`] packs one with its type URL
//! ([`type_url`]) and [`unpack`] reads one back.
#![allow(clippy::all, missing_docs)]

pub mod apipb {
    tonic::include_proto!("apipb");
}

/// `type.googleapis.com/apipb.<name>`, the type URL GoBGP expects in an `Any`.
pub fn type_url(name: &str) -> String {
    format!("type.googleapis.com/apipb.{name}")
}

/// Packs `msg` (of GoBGP message type `name`, e.g. `"NextHopAttribute"`) into an `Any`.
pub fn any<M: prost::Message>(name: &str, msg: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url(name),
        value: msg.encode_to_vec(),
    }
}

/// Decodes `a` as GoBGP message type `name`; `None` if the `Any` holds another type or does not
/// decode.
pub fn unpack<M: prost::Message + Default>(a: &prost_types::Any, name: &str) -> Option<M> {
    if a.type_url != type_url(name) {
        return None;
    }
    M::decode(a.value.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::apipb::*;
    use super::*;

    #[test]
    fn attributes_round_trip_through_any_and_other_types_are_refused() {
        let a = any(
            "MultiExitDiscAttribute",
            &MultiExitDiscAttribute { med: 200 },
        );
        assert_eq!(
            a.type_url,
            "type.googleapis.com/apipb.MultiExitDiscAttribute"
        );
        let m: MultiExitDiscAttribute = unpack(&a, "MultiExitDiscAttribute").unwrap();
        assert_eq!(m.med, 200);
        assert!(unpack::<NextHopAttribute>(&a, "NextHopAttribute").is_none());
    }
}
