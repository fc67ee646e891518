//! dvipa's own gRPC protocols, generated from `proto/dvipa/v1/`.
//!
//! - `agent.proto`: the server-stack protocol (Hello, VIPA list, SRVSTAT, NEWCONN, TERMCONN).
#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("dvipa.v1");
}
