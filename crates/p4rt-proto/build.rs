//! Compiles the project's P4Runtime protos (`proto/p4/**`, `proto/google/rpc/**`) with protox
//! (pure Rust, no system `protoc`), generates prost messages plus tonic client and server, and
//! writes the encoded `FileDescriptorSet` to `OUT_DIR/p4runtime_fds.bin` for prost-reflect.
use std::path::PathBuf;

use prost::Message;

const FILES: &[&str] = &[
    "p4/v1/p4runtime.proto",
    "p4/v1/p4data.proto",
    "p4/config/v1/p4info.proto",
    "p4/config/v1/p4types.proto",
    "google/rpc/status.proto",
    "google/rpc/code.proto",
    "tofino/bf_pipeline_config.proto",
    "tofino/barefoot_p4info.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    for f in FILES {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(FILES, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("p4runtime_fds.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Proto maps (P4Info's `type_info`) as BTreeMap: the encoding is then the same in every
        // process, so the pipeline cookie (a hash of the encoded P4Info) is stable across
        // controller restarts. With HashMap a P4Info with two or more structs (the TNA one, any
        // p4c output of a larger program) encoded in a random order, the cookie differed, and a
        // restarted controller re-pushed the pipeline, wiping the switch's tables.
        .btree_map(".")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
