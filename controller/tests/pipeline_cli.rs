//! `dvipa pipeline pack --target tofino DIR -o device_config.bin` and `dvipa pipeline unpack`:
//! the real sample's compiler output (+ a fake tofino.bin) round-trips through the binary, in
//! both formats, and a directory without a binary is refused with the reason.
use std::path::Path;
use std::process::Command;

fn dvipa(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dvipa"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn pack_unpack_pack_gives_the_same_device_config() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(out.join("pipe")).unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/p4c-out/tofino-sample");
    if sample.join("bfrt.json").is_file() {
        std::fs::copy(sample.join("bfrt.json"), out.join("bfrt.json")).unwrap();
        std::fs::copy(sample.join("manifest.json"), out.join("manifest.json")).unwrap();
        std::fs::copy(sample.join("context.json"), out.join("pipe/context.json")).unwrap();
    } else {
        std::fs::write(out.join("bfrt.json"), br#"{"tables":[]}"#).unwrap();
        std::fs::write(
            out.join("manifest.json"),
            br#"{"programs":[{"program_name":"features.p4"}]}"#,
        )
        .unwrap();
        std::fs::write(out.join("pipe/context.json"), br#"{"tables":[]}"#).unwrap();
    }
    std::fs::write(out.join("pipe/tofino.bin"), vec![0x5a; 4096]).unwrap();
    for format in ["bfrt", "pi"] {
        let a = tmp.path().join(format!("a-{format}.bin"));
        let b = tmp.path().join(format!("b-{format}.bin"));
        let un = tmp.path().join(format!("un-{format}"));
        let (ok, text) = dvipa(&[
            "pipeline",
            "pack",
            "--target",
            "tofino",
            "--format",
            format,
            out.to_str().unwrap(),
            "-o",
            a.to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        assert!(text.contains("features"), "{text}");
        let (ok, text) = dvipa(&[
            "pipeline",
            "unpack",
            a.to_str().unwrap(),
            "-o",
            un.to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        assert!(text.contains("pipe/tofino.bin"), "{text}");
        if format == "pi" {
            // PI has no bfrt.json: give the sample's back for the repack.
            std::fs::copy(out.join("bfrt.json"), un.join("bfrt.json")).unwrap();
        }
        let (ok, text) = dvipa(&[
            "pipeline",
            "pack",
            "--format",
            format,
            un.to_str().unwrap(),
            "-o",
            b.to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{format}"
        );
    }
    std::fs::remove_file(out.join("pipe/tofino.bin")).unwrap();
    let (ok, text) = dvipa(&[
        "pipeline",
        "pack",
        out.to_str().unwrap(),
        "-o",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(text.contains("context.json without tofino.bin"), "{text}");
}
