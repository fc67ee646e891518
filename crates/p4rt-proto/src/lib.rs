//! P4Runtime v1 protocol types, generated at build time from the project's own `.proto` files
//! (`proto/p4/v1`, `proto/p4/config/v1`, `proto/google/rpc`) with protox and tonic-prost-build.
//!
//! Layout:
//! - [`p4::v1`]: the `P4Runtime` service (tonic client in `p4_runtime_client`, server trait in
//!   `p4_runtime_server`), entities, write/read, the stream messages and `P4Data`.
//! - [`p4::config::v1`]: `P4Info` and its type descriptions.
//! - [`stratum::hal::barefoot`]: `BfPipelineConfig`, the Tofino device config of Stratum.
//! - [`google::rpc`]: `Status` (the rich error carried in `grpc-status-details-bin`) and `Code`.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors of all of the above (plus
//!   `google/protobuf/any.proto`), for prost-reflect (e.g. parsing `.p4info.txtpb` text format).
#![allow(clippy::all, missing_docs)]

pub mod p4 {
    pub mod v1 {
        tonic::include_proto!("p4.v1");
    }
    pub mod config {
        pub mod v1 {
            tonic::include_proto!("p4.config.v1");
        }
    }
}

/// The Tofino compiler's P4Info extern payloads (`proto/tofino/barefoot_p4info.proto`).
pub mod barefoot {
    tonic::include_proto!("barefoot");
}

/// Stratum's Tofino device config (`proto/tofino/bf_pipeline_config.proto`).
pub mod stratum {
    pub mod hal {
        pub mod barefoot {
            tonic::include_proto!("stratum.hal.barefoot");
        }
    }
}

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of every P4Runtime proto file this crate compiles.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/p4runtime_fds.bin"));
