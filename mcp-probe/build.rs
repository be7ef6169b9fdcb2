use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

/// Builds `mcp-probe-ebpf` for the BPF target (nightly + build-std) and leaves the object in
/// OUT_DIR, where `loader.rs` embeds it. Without the `kernel` feature (fuzz targets) there
/// is no loader and nothing to build.
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_KERNEL");
    if std::env::var_os("CARGO_FEATURE_KERNEL").is_none() {
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "mcp-probe-ebpf")
        .ok_or_else(|| anyhow!("mcp-probe-ebpf package not found"))?;
    let cargo_metadata::Package {
        name,
        manifest_path,
        ..
    } = ebpf_package;
    let root_dir = manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?
        .as_str();
    let ebpf_package = aya_build::Package {
        name: name.as_str(),
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf_package], Toolchain::default())
}
