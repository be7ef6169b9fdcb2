//! `cargo xtask image`: the agent as a container image `FROM scratch`
//! (`deploy/container/Containerfile`), built with podman from Debian's packages. The image
//! holds the release agent the tests run, and the few files of the host it loads (the C
//! library and the dynamic loader, as `ldd` lists them): no shell, no package manager. No
//! image registry is needed, to build or to run it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::run;

/// The image's name (a local one: nothing is pushed).
pub const IMAGE: &str = "localhost/mcp-probe";

/// Builds the image `IMAGE:tag` from the release agent at `agent`; with `save`, also
/// writes it as an OCI archive (for `ctr image import`, or a node without podman).
/// Returns the reference.
pub fn build(root: &Path, agent: &Path, tag: &str, save: Option<&Path>) -> Result<String> {
    ensure_podman()?;
    // The build context: the Containerfile and the image's files under rootfs/.
    let context = root.join("target/image");
    let _ = std::fs::remove_dir_all(&context);
    let rootfs = context.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    std::fs::copy(agent, rootfs.join("mcp-probe")).context("copy the agent")?;
    for library in libraries(agent)? {
        let to = rootfs.join(library.strip_prefix("/").unwrap_or(&library));
        std::fs::create_dir_all(to.parent().expect("a library is in a directory"))?;
        // The file itself, not the symlink (the loader is one on Debian).
        std::fs::copy(&library, &to).with_context(|| format!("copy {}", library.display()))?;
    }
    std::fs::copy(
        root.join("deploy/container/Containerfile"),
        context.join("Containerfile"),
    )
    .context("copy the Containerfile")?;
    let reference = format!("{IMAGE}:{tag}");
    run(
        Command::new("podman")
            .args(["build", "--quiet", "--tag", &reference])
            .args([
                "--build-arg",
                &format!("VERSION={}", env!("CARGO_PKG_VERSION")),
            ])
            .args(["--file", "Containerfile", "."])
            .current_dir(&context),
        "podman build",
    )?;
    if let Some(path) = save {
        let _ = std::fs::remove_file(path);
        run(
            Command::new("podman")
                .args(["save", "--format", "oci-archive", "--output"])
                .arg(path)
                .arg(&reference),
            "podman save",
        )?;
    }
    eprintln!("image: built {reference}");
    Ok(reference)
}

/// The shared libraries `binary` loads, and its dynamic loader, as `ldd` names them.
fn libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("ldd (Debian package libc-bin)")?;
    if !out.status.success() {
        bail!("ldd {} failed", binary.display());
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, to)) => to.trim(),
            None => line.trim(),
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            found.push(PathBuf::from(path));
        } else if line.contains("not found") {
            bail!("{}: {line}", binary.display());
        }
    }
    if found.is_empty() {
        bail!("ldd listed no library for {}", binary.display());
    }
    Ok(found)
}

/// podman, and runc: podman's default runtime (crun) refuses this kind of host's hybrid
/// cgroups (docs/platform.md).
fn ensure_podman() -> Result<()> {
    let have = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have("podman") && have("runc") {
        return Ok(());
    }
    eprintln!("setup: installing podman and runc (Debian packages)");
    run(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "podman", "runc"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install podman runc",
    )
}
