//! `p4rt::tofino`: the Tofino compiler's output (the real sample in `../shared/p4c-out/
//! tofino-sample/`, or a copy of p4src's bfrt-less layout when absent) packed in both formats and
//! unpacked again, byte for byte; broken device configs are refused with the field named.
use std::path::{Path, PathBuf};

use p4rt::tofino::{Compiled, Format};

fn sample_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/p4c-out/tofino-sample");
    p.join("bfrt.json").is_file().then_some(p)
}

/// A compiler output directory: the sample's bfrt.json/manifest.json/context.json (real
/// compiler output) and a fake 1 MiB `pipe/tofino.bin` (the real one is not copied).
fn compiler_dir(tmp: &Path) -> PathBuf {
    let out = tmp.join("out");
    std::fs::create_dir_all(out.join("pipe")).unwrap();
    match sample_dir() {
        Some(s) => {
            std::fs::copy(s.join("bfrt.json"), out.join("bfrt.json")).unwrap();
            std::fs::copy(s.join("manifest.json"), out.join("manifest.json")).unwrap();
            std::fs::copy(s.join("context.json"), out.join("pipe/context.json")).unwrap();
        }
        None => {
            eprintln!("tofino-sample not found: using a small synthetic directory");
            std::fs::write(
                out.join("bfrt.json"),
                br#"{"tables":[{"name":"pipe.Ingress.forward"}]}"#,
            )
            .unwrap();
            std::fs::write(
                out.join("manifest.json"),
                br#"{"programs":[{"program_name":"features.p4"}]}"#,
            )
            .unwrap();
            std::fs::write(out.join("pipe/context.json"), br#"{"tables":[]}"#).unwrap();
        }
    }
    let fake: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(out.join("pipe/tofino.bin"), fake).unwrap();
    out
}

#[test]
fn both_formats_round_trip_the_compiler_output_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = compiler_dir(tmp.path());
    let c = Compiled::from_dir(&dir, None).unwrap();
    assert_eq!(c.p4_name, "features");
    assert_eq!(c.pipes.len(), 1);
    assert_eq!(c.pipes[0].name, "pipe");
    assert_eq!(c.pipes[0].binary.len(), 1 << 20);

    let bf = c.pack(Format::BfPipelineConfig).unwrap();
    let (fmt, back) = Compiled::unpack(&bf).unwrap();
    assert_eq!(fmt, Format::BfPipelineConfig);
    assert_eq!(back, c);
    // unpack -> directory -> pack gives the same bytes.
    let again = tmp.path().join("again");
    back.write_dir(&again).unwrap();
    let re = Compiled::from_dir(&again, None).unwrap();
    assert_eq!(re.pack(Format::BfPipelineConfig).unwrap(), bf);
    for f in ["bfrt.json", "pipe/context.json", "pipe/tofino.bin"] {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f}"
        );
    }

    let pi = c.pack(Format::Pi).unwrap();
    assert_eq!(&pi[..4], &8u32.to_le_bytes(), "name length, little-endian");
    assert_eq!(&pi[4..12], b"features");
    assert_eq!(&pi[12..16], &(1u32 << 20).to_le_bytes());
    let (fmt, back) = Compiled::unpack(&pi).unwrap();
    assert_eq!(fmt, Format::Pi);
    assert_eq!(back.pipes, c.pipes);
    assert!(back.bfrt.is_empty(), "PI carries no bfrt.json");
    eprintln!(
        "device config: BfPipelineConfig {} bytes, PI {} bytes (context {} bytes, binary {} bytes)",
        bf.len(),
        pi.len(),
        c.pipes[0].context.len(),
        c.pipes[0].binary.len()
    );
    if sample_dir().is_some() {
        assert!(
            c.bfrt_tables()
                .unwrap()
                .contains(&"pipe.Ingress.forward".to_string())
        );
        assert!(
            c.missing_tables(["pipe.Ingress.forward", "Ingress.smac"])
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            c.missing_tables(["pipe.IngressImpl.crt"]).unwrap(),
            vec!["pipe.IngressImpl.crt".to_string()]
        );
    }
}

#[test]
fn broken_device_configs_are_refused_naming_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = compiler_dir(tmp.path());
    let c = Compiled::from_dir(&dir, None).unwrap();

    // Truncated PI: not PI any more, and not a BfPipelineConfig either.
    let pi = c.pack(Format::Pi).unwrap();
    let err = Compiled::unpack(&pi[..pi.len() - 1])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("neither PI-packed nor a BfPipelineConfig"),
        "{err}"
    );

    // A BfPipelineConfig without a binary.
    let mut no_bin = c.clone();
    no_bin.pipes[0].binary.clear();
    let bytes = p4rt_proto_bytes(&no_bin);
    let err = Compiled::unpack(&bytes).unwrap_err().to_string();
    assert!(err.contains("profiles[0] (pipe): binary is empty"), "{err}");

    // A directory without the binary.
    std::fs::remove_file(dir.join("pipe/tofino.bin")).unwrap();
    let err = Compiled::from_dir(&dir, None).unwrap_err().to_string();
    assert!(err.contains("context.json without tofino.bin"), "{err}");

    // A broken bfrt.json names the file, line and column.
    std::fs::write(dir.join("bfrt.json"), b"{\n  \"tables\": [,]\n}").unwrap();
    let err = Compiled::from_dir(&dir, None).unwrap_err().to_string();
    assert!(err.contains("bfrt.json: not JSON (line 2 column"), "{err}");
}

/// Encodes through the generated type without `pack`'s validation (to build a broken config).
fn p4rt_proto_bytes(c: &Compiled) -> Vec<u8> {
    use p4rt_proto::stratum::hal::barefoot::{BfPipelineConfig, bf_pipeline_config::Profile};
    use prost::Message;
    BfPipelineConfig {
        p4_name: c.p4_name.clone(),
        bfruntime_info: c.bfrt.clone(),
        profiles: c
            .pipes
            .iter()
            .map(|p| Profile {
                profile_name: p.name.clone(),
                context: p.context.clone(),
                binary: p.binary.clone(),
                pipe_scope: p.scope.clone(),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// The real Tofino compiler's P4Info (the sample, with `barefoot.*` externs in `Any`s) loads:
/// names resolve by suffix, the extern-only objects are simply not standard objects.
#[test]
fn the_tofino_compilers_p4info_loads() {
    let Some(dir) = sample_dir() else {
        eprintln!("tofino-sample not found: skipped");
        return;
    };
    let s = p4rt::Schema::from_file(dir.join("p4info.txtpb")).unwrap();
    assert_eq!(
        p4rt::schema::name_of(&s.table("Ingress.forward").unwrap().preamble),
        "pipe.Ingress.forward"
    );
    assert!(s.action("Ingress.set_port").is_ok());
}
