//! What deploy/ ships, checked with the real tools (issue 16): Helm itself lints and renders
//! deploy/helm/beacon, the rendered manifests are parsed as YAML and their required fields
//! checked (probes, shutdown timing, hardening, selectors, HPA, PDB, Secret, ServiceMonitor),
//! the rendered beacon.toml passes `beacon check`, and hadolint passes deploy/Dockerfile.
//! The checks are in tests/py/deploy_check.py; Helm and hadolint come from the venv
//! (tests/py/requirements.txt).

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed assertion

use beacon_e2e::{beacon_bin, python, workspace_root};

#[test]
fn the_helm_chart_renders_and_the_dockerfile_lints() {
    let out = std::process::Command::new(python())
        .arg(workspace_root().join("tests/py/deploy_check.py"))
        .arg(beacon_bin())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "deploy checks failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["failures"], serde_json::json!([]));
    assert!(report["beacon_check"]
        .as_str()
        .unwrap()
        .ends_with("ok (2 providers, 0 tenants, 0 keys, 0 price overrides)"));
    assert_eq!(report["hadolint"], "clean");
}
