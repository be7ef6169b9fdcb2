//! The Kubernetes manifests as objects (rendered by `kubectl kustomize`, read with the
//! YAML parser of the `k8s` venv), and the agent's container run the way the DaemonSet
//! runs it.

use super::*;

/// The objects `kubectl kustomize deploy/kubernetes/<dir>` renders, as JSON.
pub fn rendered(dir: &str) -> Vec<serde_json::Value> {
    let path = repo_root().join("deploy/kubernetes").join(dir);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut python = Command::new(mcp_env().join("k8s/bin/python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the k8s venv's python (tests/mcp/setup.sh installs it)");
    python
        .stdin
        .take()
        .expect("stdin")
        .write_all(&out.stdout)
        .expect("write the manifests");
    let json = python.wait_with_output().expect("yaml to json");
    assert!(json.status.success(), "the rendered manifests are not YAML");
    serde_json::from_slice(&json.stdout).expect("JSON from the YAML")
}

/// The object of `kind` among `objects`.
pub fn object<'a>(objects: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

/// podman options giving a container what the DaemonSet's pod gives the agent: the host's
/// pid namespace, the user, the capabilities (all others dropped), no privilege escalation,
/// the seccomp profile, a read-only root filesystem, the hostPath mounts, and the memory
/// limit. The network is the host's (the test scrapes it on loopback; the pod has its own).
pub fn podman_options_of(daemonset: &serde_json::Value) -> Vec<String> {
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    let mut options = vec!["--network=host".to_owned()];
    if pod["hostPID"] == true {
        options.push("--pid=host".into());
    }
    let id = |v: &serde_json::Value| v.as_u64().map(|n| n.to_string());
    if let Some(user) = id(&security["runAsUser"]) {
        let group = id(&security["runAsGroup"]).unwrap_or_else(|| user.clone());
        options.push(format!("--user={user}:{group}"));
    }
    for drop in security["capabilities"]["drop"]
        .as_array()
        .into_iter()
        .flatten()
    {
        options.push(format!("--cap-drop={}", drop.as_str().expect("a name")));
    }
    for add in security["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
    {
        options.push(format!("--cap-add=CAP_{}", add.as_str().expect("a name")));
    }
    if security["allowPrivilegeEscalation"] == false {
        options.push("--security-opt=no-new-privileges".into());
    }
    if security["seccompProfile"]["type"] == "Unconfined" {
        options.push("--security-opt=seccomp=unconfined".into());
    }
    if security["readOnlyRootFilesystem"] == true {
        options.push("--read-only".into());
    }
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == mount["name"])
            .expect("the mount's volume");
        let host = volume["hostPath"]["path"].as_str().expect("a hostPath");
        let at = mount["mountPath"].as_str().expect("a mountPath");
        let mode = if mount["readOnly"] == true {
            "ro"
        } else {
            "rw"
        };
        options.push(format!("--volume={host}:{at}:{mode}"));
    }
    if let Some(memory) = container["resources"]["limits"]["memory"].as_str() {
        let mib = memory.strip_suffix("Mi").expect("a limit in Mi");
        options.push(format!("--memory={mib}m"));
    }
    options
}

/// The image `cargo xtask test` built (`MCP_PROBE_IMAGE`).
pub fn agent_image() -> String {
    std::env::var("MCP_PROBE_IMAGE")
        .expect("MCP_PROBE_IMAGE: run the tests with `cargo xtask test`, which builds the image")
}

/// podman with the runtime this kind of host needs (runc; crun refuses hybrid cgroups)
/// and ulimits within the host's hard limits.
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc"]);
    cmd
}

/// The ulimits of every test container (podman's defaults exceed this host's hard limits).
pub const ULIMITS: [&str; 2] = ["--ulimit=nofile=1024:1024", "--ulimit=nproc=1024:1024"];

/// A container that is removed when the test ends, however it ends.
pub struct ContainerName(pub String);

impl Drop for ContainerName {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "--force", "--time", "2", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Agent {
    /// The agent from its image, run by podman with `options`, listening on loopback.
    pub fn start_in_container(name: &str, options: &[String]) -> Self {
        let port = next_test_port();
        let mut cmd = podman();
        cmd.args(["run", "--rm", "--name", name])
            .args(ULIMITS)
            .args(options)
            .args(["--env=RUST_LOG=info", "--env=NO_COLOR=1"])
            .arg(agent_image())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null());
        Self::spawn(cmd, port, "agent container")
    }
}
