//! Compiles the project's GoBGP API subset (`proto/gobgp/*.proto`) with protox (pure Rust, no
//! system `protoc`) into prost messages and a tonic client (no server: gobgpd is the server).
use std::path::PathBuf;

const FILES: &[&str] = &["gobgp.proto", "attribute.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto/gobgp");
    for f in FILES {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(FILES, [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
