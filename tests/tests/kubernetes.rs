//! The Kubernetes manifests (deploy/kubernetes): they render with `kubectl kustomize`,
//! validate against the API schemas of the last three Kubernetes minor versions (offline,
//! with kubernetes-validate from PyPI), and hold together (the Service and the
//! ServiceMonitor find the DaemonSet's pods and port). No cluster runs here: what a cluster
//! would add (scheduling, the kubelet's probes) is not tested.

use std::{io::Write, process::Command};

use integration_tests::{mcp_env, object, rendered, repo_root};

/// The last three Kubernetes minor versions kubernetes-validate knows.
const KUBERNETES_VERSIONS: [&str; 3] = ["1.35.0", "1.36.0", "1.37.0"];

#[test]
fn the_manifests_validate_against_the_kubernetes_api_schemas() {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo_root().join("deploy/kubernetes"))
        .output()
        .expect("kubectl kustomize");
    assert!(out.status.success());
    let file =
        std::env::temp_dir().join(format!("mcp-probe-manifests-{}.yaml", std::process::id()));
    std::fs::File::create(&file)
        .and_then(|mut f| f.write_all(&out.stdout))
        .expect("write the rendered manifests");
    for version in KUBERNETES_VERSIONS {
        let check = Command::new(mcp_env().join("k8s/bin/kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", version])
            .arg(&file)
            .output()
            .expect("kubernetes-validate (tests/mcp/setup.sh installs it)");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(check.status.success(), "Kubernetes {version}:\n{report}");
        // Every object was checked against a schema (none skipped as unknown).
        assert_eq!(
            report.matches("passed for resource").count(),
            4,
            "Kubernetes {version}: {report}"
        );
    }
    let _ = std::fs::remove_file(file);
}

#[test]
fn the_daemonset_runs_on_every_node_with_the_least_privileges() {
    let objects = rendered("");
    let ds = object(&objects, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(
        pod["tolerations"][0]["operator"], "Exists",
        "every node, tainted or not"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], serde_json::Value::Null);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    let mut added: Vec<&str> = security["capabilities"]["add"]
        .as_array()
        .expect("added capabilities")
        .iter()
        .map(|c| c.as_str().expect("a name"))
        .collect();
    added.sort_unstable();
    assert_eq!(added, ["BPF", "DAC_READ_SEARCH", "PERFMON", "SYS_PTRACE"]);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    let node_name = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    for resource in ["cpu", "memory"] {
        assert!(container["resources"]["requests"][resource].is_string());
        assert!(container["resources"]["limits"][resource].is_string());
    }
    // Nothing from the Kubernetes API: no role, no binding.
    assert!(objects
        .iter()
        .all(|o| !o["kind"].as_str().unwrap_or("").contains("Role")));
}

#[test]
fn prometheus_and_datadog_find_the_agents() {
    let objects = rendered("prometheus-operator");
    let ds = object(&objects, "DaemonSet");
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let service = object(&objects, "Service");
    let monitor = object(&objects, "ServiceMonitor");
    // The Service selects the DaemonSet's pods and exposes their metrics port.
    for (key, value) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&pod_labels[key], value, "Service selector {key}");
    }
    assert_eq!(service["spec"]["clusterIP"], "None");
    let port = &ds["spec"]["template"]["spec"]["containers"][0]["ports"][0];
    assert_eq!(port["name"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    // The ServiceMonitor selects the Service and scrapes that port.
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "ServiceMonitor selector {key}"
        );
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    // The PrometheusRule carries every group of the shipped rules.
    let rule = object(&objects, "PrometheusRule");
    let groups: Vec<&str> = rule["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["name"].as_str().expect("a group name"))
        .collect();
    for file in ["mcp-probe.rules.yml", "mcp-probe.alerts.yml"] {
        let text = std::fs::read_to_string(repo_root().join("mcp-probe/rules").join(file))
            .expect("read the rules");
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("  - name: ") {
                assert!(groups.contains(&name), "group {name} of {file}");
            }
        }
    }
    // Datadog's Autodiscovery annotation names an OpenMetrics check on the metrics port.
    let annotation = ds["spec"]["template"]["metadata"]["annotations"]
        ["ad.datadoghq.com/mcp-probe.checks"]
        .as_str()
        .expect("the Autodiscovery annotation");
    let checks: serde_json::Value = serde_json::from_str(annotation).expect("JSON");
    let instance = &checks["openmetrics"]["instances"][0];
    assert_eq!(
        instance["openmetrics_endpoint"],
        "http://%%host%%:9464/metrics"
    );
    assert!(mcp_env().join("k8s/bin/python").exists());
}
