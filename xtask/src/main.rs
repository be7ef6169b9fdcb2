//! Developer commands: `cargo xtask setup | run | test`.
//!
//! Every command first installs what is missing (quietly when it is already there): the
//! nightly `rust-src` component and `bpf-linker` that building the eBPF object needs, and
//! for `test` the real MCP SDKs the integration tests drive.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "mcp-probe developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the build prerequisites (and with --tests, the test environment).
    Setup {
        #[arg(long)]
        tests: bool,
    },
    /// Build and start the agent (needs root). Arguments after `--` go to the agent.
    Run {
        #[arg(long)]
        debug: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run every test: formatting, lints, unit tests, and the root integration tests that
    /// load the eBPF programs and drive real MCP SDKs.
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Only run integration tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
    },
}

/// bpf-linker 0.10.x links with the LLVM inside the rustc toolchain (newer ones need a
/// system LLVM this platform cannot install; see PLATFORM.md).
const BPF_LINKER_VERSION: &str = "0.10.0";

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Cmd::Setup { tests } => {
            setup_build()?;
            if tests {
                setup_tests(&root)?;
            }
        }
        Cmd::Run { debug, args } => {
            setup_build()?;
            let bin = build_agent(&root, !debug)?;
            let status = Command::new(&bin)
                .args(&args)
                .status()
                .with_context(|| format!("starting {}", bin.display()))?;
            if !status.success() {
                bail!("mcp-probe exited with {status}");
            }
        }
        Cmd::Test { no_lint, filter } => {
            setup_build()?;
            setup_tests(&root)?;
            if !no_lint {
                run(
                    Command::new("cargo")
                        .args(["fmt", "--all", "--", "--check"])
                        .current_dir(&root),
                    "cargo fmt --check",
                )?;
                run(
                    Command::new("cargo")
                        .args(["clippy", "--all-targets", "--", "-D", "warnings"])
                        .current_dir(&root),
                    "cargo clippy",
                )?;
                // The kernel crate only builds for the BPF target with nightly and build-std.
                run(
                    Command::new("cargo")
                        .args([
                            "+nightly",
                            "clippy",
                            "-p",
                            "mcp-probe-ebpf",
                            "--target",
                            "bpfel-unknown-none",
                            "-Z",
                            "build-std=core",
                            "--",
                            "-D",
                            "warnings",
                        ])
                        .current_dir(&root),
                    "cargo clippy (eBPF crate)",
                )?;
            }
            let bin = build_agent(&root, true)?;
            let mut cmd = Command::new("cargo");
            cmd.args(["test"])
                .current_dir(&root)
                .env("MCP_PROBE_BIN", &bin)
                .env("MCP_ENV_DIR", root.join("tests/.mcp-env"));
            if let Some(f) = filter {
                cmd.args(["--", &f]);
            }
            run(&mut cmd, "cargo test")?;
        }
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn setup_build() -> Result<()> {
    let has_rust_src = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("rust-src"))
        })
        .unwrap_or(false);
    if !has_rust_src {
        eprintln!("setup: installing nightly rust-src (needed to build the eBPF object)");
        let toolchains = Command::new("rustup")
            .args(["toolchain", "list"])
            .output()
            .context("rustup is required")?;
        let has_nightly = String::from_utf8_lossy(&toolchains.stdout)
            .lines()
            .any(|l| l.starts_with("nightly"));
        if has_nightly {
            // Add the component to the nightly that is there; never update the toolchain.
            run(
                Command::new("rustup").args([
                    "component",
                    "add",
                    "rust-src",
                    "--toolchain",
                    "nightly",
                ]),
                "rustup component add rust-src",
            )?;
        } else {
            run(
                Command::new("rustup").args([
                    "toolchain",
                    "install",
                    "nightly",
                    "--profile",
                    "minimal",
                    "--component",
                    "rust-src",
                ]),
                "rustup toolchain install nightly",
            )?;
        }
    }
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
        .unwrap_or(false);
    if !linker_ok {
        eprintln!("setup: installing bpf-linker {BPF_LINKER_VERSION} (about a minute)");
        run(
            Command::new("cargo").args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--force",
            ]),
            "cargo install bpf-linker",
        )?;
    }
    Ok(())
}

fn setup_tests(root: &Path) -> Result<()> {
    run(
        Command::new("bash")
            .arg(root.join("tests/mcp/setup.sh"))
            .env("MCP_ENV_DIR", root.join("tests/.mcp-env")),
        "tests/mcp/setup.sh",
    )
}

fn build_agent(root: &Path, release: bool) -> Result<PathBuf> {
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--package", "mcp-probe"])
        .current_dir(root);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd, "cargo build -p mcp-probe")?;
    Ok(root
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("mcp-probe"))
}
