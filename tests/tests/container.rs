//! Root tests of the container image (`cargo xtask image`): the agent runs from it under
//! podman with the DaemonSet's security context, capabilities and mounts (read from the
//! rendered manifests), and counts exactly the MCP traffic of processes in another
//! container and on the host.

use integration_tests::{
    agent_image, assert_clean, assert_matches_wire, exclusive, harness, object, podman,
    podman_options_of, py2, rendered, run_client, run_client_through, Agent, ContainerName,
    Metrics, CLIENT, SERVER, ULIMITS,
};

#[test]
fn the_image_holds_the_agent_alone_under_30_mb() {
    let image = agent_image();
    let inspect = podman()
        .args(["image", "inspect", "--format", "{{.Size}}", &image])
        .output()
        .expect("podman image inspect");
    let size: u64 = String::from_utf8_lossy(&inspect.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no size for {image}"));
    println!("{image}: {:.1} MB", size as f64 / 1e6);
    assert!(size < 30_000_000, "{image} is {size} bytes");
    // Nothing but the agent: no shell to start.
    let shell = podman()
        .args(["run", "--rm", "--entrypoint", "/bin/sh"])
        .args(ULIMITS)
        .args([&image, "-c", "true"])
        .output()
        .expect("podman run");
    assert!(!shell.status.success(), "{image} has a shell");
}

#[test]
fn the_agent_in_its_container_counts_another_container_and_the_host() {
    let _guard = exclusive();
    let daemonset = object(&rendered(""), "DaemonSet").clone();
    let options = podman_options_of(&daemonset);
    for expected in [
        "--pid=host",
        "--read-only",
        "--cap-drop=ALL",
        "--cap-add=CAP_BPF",
    ] {
        assert!(
            options.iter().any(|o| o == expected),
            "{expected} in {options:?}"
        );
    }
    let name = ContainerName(format!("mcp-probe-test-{}", std::process::id()));
    let agent = Agent::start_in_container(&name.0, &options);

    // 1. A stdio session in a container of its own (its own pid, mount and network
    //    namespaces, a cgroup of its own), with the host's files as its root (an overlay:
    //    no image registry is reachable here).
    let other = ContainerName(format!("mcp-probe-test-peer-{}", std::process::id()));
    let mut wrapper: Vec<String> = ["podman", "--runtime", "runc", "run", "--rm", "--name"]
        .map(String::from)
        .to_vec();
    wrapper.push(other.0.clone());
    wrapper.extend(ULIMITS.map(String::from));
    // `--rootfs` comes last: what follows it is the command.
    wrapper.extend(
        [
            "--network=none",
            "--env=PYTHONDONTWRITEBYTECODE=1",
            "--rootfs",
            "/:O",
        ]
        .map(String::from),
    );
    let contained = run_client_through(
        &wrapper,
        &py2(),
        &["--scenario", "basic", "--mode", "legacy"],
        &[py2().display().to_string(), harness("py2_server.py")],
    );
    let calls = |m: &Metrics| {
        [CLIENT, SERVER].map(|side| {
            m.sum(
                &format!("{side}_requests_total"),
                &[
                    ("mcp_server_name", "probe-py2"),
                    ("mcp_method_name", "tools/call"),
                ],
            )
        })
    };
    let sent_calls = contained["wire"]["sent"]["requests"]["tools/call"]
        .as_f64()
        .expect("tools/call sent");
    let m = agent.wait_for("the contained session's calls, both sides", |m| {
        calls(m).iter().all(|&n| n >= sent_calls)
    });
    assert_matches_wire(&m, "probe-py2", &contained);
    assert_clean(&m);

    // 2. The same session on the host: counted as well, and nothing twice.
    let on_host = run_client(
        &py2(),
        &["--scenario", "basic", "--mode", "legacy"],
        &[py2().display().to_string(), harness("py2_server.py")],
    );
    let both = sent_calls
        + on_host["wire"]["sent"]["requests"]["tools/call"]
            .as_f64()
            .expect("tools/call sent");
    let m = agent.wait_for("the host session's calls too", |m| {
        calls(m).iter().all(|&n| n >= both)
    });
    assert_eq!(calls(&m), [both, both], "{}", m.dump("mcp_"));
    assert_clean(&m);
    agent.stop();
}
