use which::which;

/// Rebuild the eBPF object when bpf-linker changes (aya-template does the same).
fn main() {
    let bpf_linker =
        which("bpf-linker").expect("bpf-linker is not on PATH: run `cargo xtask setup`");
    println!(
        "cargo:rerun-if-changed={}",
        bpf_linker.to_str().expect("bpf-linker path is UTF-8")
    );
}
