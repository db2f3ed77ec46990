//! Builds the kernel-side programs (`ebpf/programs`) for the BPF target and leaves the
//! object in OUT_DIR, where `capture::ebpf` embeds it. Needs the nightly toolchain with
//! rust-src and bpf-linker (`.ci/setup` installs them). `AYA_BUILD_SKIP=1` builds the
//! agent without them; `--source ebpf` then reports that the programs are missing.
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../ebpf/common/src");
    let skip = std::env::var_os("AYA_BUILD_SKIP")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    if skip {
        // An empty object: the agent builds and says at run time what is missing.
        std::fs::write(out.join("tapline-ebpf"), [])?;
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tapline-ebpf",
            root_dir: "../ebpf/programs",
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
