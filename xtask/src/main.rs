//! Developer commands: `cargo xtask setup | run | test | fuzz`.
//!
//! Every command first installs what is missing (quietly when it is already there): the
//! nightly `rust-src` component and `bpf-linker` that building the eBPF object needs, for
//! `test` the real MCP SDKs the integration tests drive, and for `fuzz` cargo-fuzz.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod image;
mod manifests;

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
    /// Run one real MCP stdio session (Python SDK 2.x) for a running agent to measure, and
    /// show what it counted. Installs only that SDK, into tests/.mcp-env/py2, when missing.
    Demo {
        /// Where the agent serves /metrics.
        #[arg(long, default_value = "127.0.0.1:9464")]
        agent: String,
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
        /// Seconds each fuzz target runs after the tests (0 skips fuzzing).
        #[arg(long, default_value_t = 60)]
        fuzz_seconds: u64,
    },
    /// Fuzz the parsers (cargo-fuzz, nightly): every target, or one, for a while each.
    /// Fails if any target finds a crash or a broken property.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (`cargo +nightly fuzz list` in mcp-probe/fuzz names them).
        #[arg(long)]
        target: Option<String>,
    },
    /// Build the agent's container image (FROM scratch: the agent and the libraries it
    /// loads) with podman.
    Image {
        /// The tag of `localhost/mcp-probe`.
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        tag: String,
        /// Also write the image here as an OCI archive (`ctr image import`, `podman load`).
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// Write the Kubernetes manifests generated from other files (the PrometheusRule,
    /// from mcp-probe/rules/).
    Manifests,
    /// Measure what the agent costs, with and without it in one run (needs root), and
    /// write the tables to BENCHMARKS.md.
    Bench {
        /// Passes with the agent (there is one more without).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds each workload runs in each pass.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Where to write the report, relative to the repository.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
    },
}

/// bpf-linker 0.10.x links with the LLVM inside the rustc toolchain (newer ones need a
/// system LLVM this platform cannot install; see docs/platform.md).
const BPF_LINKER_VERSION: &str = "0.10.0";
/// cargo-fuzz, pinned like bpf-linker; 0.13.2 builds with this toolchain and nightly.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

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
        Cmd::Test {
            no_lint,
            filter,
            fuzz_seconds,
        } => {
            setup_build()?;
            setup_tests(&root)?;
            manifests::check(&root)?;
            // Every crate that builds for the host, the root integration tests included
            // (no default member, see the root Cargo.toml); the eBPF crate only builds for
            // the BPF target (the agent's build script builds it).
            const HOST_PACKAGES: [&str; 3] = ["--workspace", "--exclude", "mcp-probe-ebpf"];
            if !no_lint {
                run(
                    Command::new("cargo")
                        .args(["fmt", "--all", "--", "--check"])
                        .current_dir(&root),
                    "cargo fmt --check",
                )?;
                run(
                    Command::new("cargo")
                        .args(["clippy", "--all-targets"])
                        .args(HOST_PACKAGES)
                        .args(["--", "-D", "warnings"])
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
            // The container tests run the agent from its image.
            let image = image::build(&root, &bin, "test", None)?;
            let mut cmd = Command::new("cargo");
            cmd.args(["test"])
                .args(HOST_PACKAGES)
                .current_dir(&root)
                .env("MCP_PROBE_BIN", &bin)
                .env("MCP_PROBE_IMAGE", &image)
                .env("MCP_ENV_DIR", root.join("tests/.mcp-env"));
            if let Some(f) = filter {
                cmd.args(["--", &f]);
            }
            run(&mut cmd, "cargo test")?;
            if fuzz_seconds > 0 {
                fuzz(&root, fuzz_seconds, None)?;
            }
        }
        Cmd::Demo { agent } => demo::demo(&root, &agent)?,
        Cmd::Manifests => manifests::write(&root)?,
        Cmd::Image { tag, save } => {
            setup_build()?;
            let agent = build_agent(&root, true)?;
            image::build(&root, &agent, &tag, save.as_deref())?;
        }
        Cmd::Fuzz { seconds, target } => fuzz(&root, seconds, target.as_deref())?,
        Cmd::Bench {
            rounds,
            seconds,
            out,
        } => {
            setup_build()?;
            setup_tests(&root)?;
            let agent = build_agent(&root, true)?;
            run(
                Command::new("cargo")
                    .args([
                        "build",
                        "--release",
                        "--package",
                        "integration-tests",
                        "--bin",
                        "mcp-bench",
                    ])
                    .current_dir(&root),
                "cargo build mcp-bench",
            )?;
            // The test-support library finds the agent through this variable.
            std::env::set_var("MCP_PROBE_BIN", &agent);
            let workloads = root.join("target/release/mcp-bench");
            bench::bench(
                &root,
                &workloads,
                &bench::Options {
                    rounds,
                    seconds,
                    out,
                },
            )?;
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

/// Builds the fuzz targets once, then runs each for `seconds`, as many at a time as there
/// are cores. New inputs go to a scratch corpus under `mcp-probe/fuzz/target/`; the seeds
/// and regressions in the repository are only read.
fn fuzz(root: &Path, seconds: u64, only: Option<&str>) -> Result<()> {
    let started = Instant::now();
    setup_fuzz()?;
    let dir = root.join("mcp-probe/fuzz");
    run(
        Command::new("cargo")
            .args(["+nightly", "fuzz", "build"])
            .current_dir(&dir),
        "cargo fuzz build",
    )?;
    let list = Command::new("cargo")
        .args(["+nightly", "fuzz", "list"])
        .current_dir(&dir)
        .output()
        .context("cargo fuzz list")?;
    if !list.status.success() {
        bail!("cargo fuzz list failed ({})", list.status);
    }
    let mut targets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    if let Some(only) = only {
        if !targets.iter().any(|t| t == only) {
            bail!("no fuzz target {only}; there are: {}", targets.join(", "));
        }
        targets.retain(|t| t == only);
    }
    let jobs = std::thread::available_parallelism().map_or(2, usize::from);
    let logs = dir.join("target/fuzz-logs");
    std::fs::create_dir_all(&logs)?;
    eprintln!(
        "fuzz: {} for {seconds} s each, {jobs} at a time",
        targets.join(", ")
    );
    let mut queue = targets.iter();
    let mut running = VecDeque::new();
    let mut failed = Vec::new();
    loop {
        while running.len() < jobs {
            let Some(target) = queue.next() else { break };
            running.push_back((target, spawn_fuzz(&dir, target, seconds, &logs)?));
        }
        let Some((target, mut child)) = running.pop_front() else {
            break;
        };
        let status = child.wait()?;
        let log = logs.join(format!("{target}.log"));
        if !report_fuzz(&dir, target, &log, status.success()) {
            failed.push(target.as_str());
        }
    }
    let took = started.elapsed().as_secs();
    eprintln!("fuzz: done in {}m {:02}s", took / 60, took % 60);
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Starts `cargo fuzz run` for one target, logging to `logs/<target>.log`.
fn spawn_fuzz(dir: &Path, target: &str, seconds: u64, logs: &Path) -> Result<Child> {
    let scratch = dir.join("target/corpus").join(target);
    std::fs::create_dir_all(&scratch)?;
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz", "run", target])
        .arg(&scratch)
        .arg(dir.join("corpus").join(target));
    let regressions = dir.join("regressions").join(target);
    if regressions.is_dir() {
        cmd.arg(regressions);
    }
    let log = std::fs::File::create(logs.join(format!("{target}.log")))?;
    cmd.args([
        "--",
        &format!("-max_total_time={seconds}"),
        // A unit this slow is a bug too (libFuzzer writes it out like a crash).
        "-timeout=30",
    ])
    .current_dir(dir)
    .stdout(log.try_clone()?)
    .stderr(log);
    cmd.spawn().context("cargo fuzz run")
}

/// Prints a target's outcome; on failure the input that broke it and how to replay it.
fn report_fuzz(dir: &Path, target: &str, log: &Path, ok: bool) -> bool {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    if ok {
        let done = text.lines().rev().find(|l| l.starts_with("Done "));
        eprintln!("fuzz {target}: ok ({})", done.unwrap_or("no summary"));
        return true;
    }
    let lines: Vec<&str> = text.lines().collect();
    let panic = lines
        .iter()
        .position(|l| l.contains("panicked at") || l.contains("ERROR: libFuzzer"));
    let excerpt = panic.map_or(&lines[lines.len().saturating_sub(20)..], |i| {
        &lines[i..lines.len().min(i + 6)]
    });
    eprintln!("fuzz {target}: FAILED (log: {})", log.display());
    for line in excerpt {
        eprintln!("    {line}");
    }
    let artifact = text
        .lines()
        .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()));
    if let Some(path) = artifact {
        eprintln!("  crash input: {path}");
        eprintln!(
            "  reproduce:   (cd {} && cargo +nightly fuzz run {target} {path})",
            dir.display()
        );
        eprintln!(
            "  once fixed, keep it: cp {path} {}/",
            dir.join("regressions").join(target).display()
        );
    }
    false
}

/// cargo-fuzz at the pinned version, and the nightly toolchain it builds with (the one
/// `setup_build` installs for the eBPF object).
fn setup_fuzz() -> Result<()> {
    setup_build()?;
    let fuzz_ok = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)
        });
    if !fuzz_ok {
        eprintln!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} (under a minute)");
        run(
            Command::new("cargo").args([
                "install",
                &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
                "--locked",
                "--force",
            ]),
            "cargo install cargo-fuzz",
        )?;
    }
    Ok(())
}
