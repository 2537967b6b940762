"""Checks what deploy/ ships, with the tools themselves: `helm lint` and `helm template` on
deploy/helm/beacon (the rendered manifests parsed as YAML, their required fields checked, and
the rendered beacon.toml validated by `beacon check`), and hadolint on deploy/Dockerfile.

Usage: deploy_check.py <path to the beacon binary>; prints one JSON object on stdout and exits
non-zero with the failed checks on stderr.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "beacon"
BIN = pathlib.Path(sys.executable).parent
HELM = str(BIN / "helm")
HADOLINT = str(BIN / "hadolint")
ADMIN = "chart-admin-token-0123456789"
SECRET = "ab" * 32
DB = "postgres://beacon:pw@db.internal:5432/beacon"
SETS = [f"secrets.databaseUrl={DB}", f"secrets.adminToken={ADMIN}", f"secrets.secretKey={SECRET}",
        "secrets.providerKeys.OPENAI_API_KEY=sk-test"]

failures: list[str] = []


def check(cond: bool, what: str) -> None:
    if not cond:
        failures.append(what)


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(args, capture_output=True, text=True)
    if ok and p.returncode != 0:
        failures.append(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def render(*sets: str) -> dict:
    args = [HELM, "template", "rel", str(CHART), "--namespace", "llm"]
    for s in sets:
        args += ["--set", s]
    out = run(*args).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def main() -> None:
    beacon = sys.argv[1]
    out: dict = {}

    # helm lint, strict: warnings fail too.
    lint = run(HELM, "lint", "--strict", str(CHART), *sum((["--set", s] for s in SETS), []))
    out["lint"] = lint.stdout.strip().splitlines()[-1] if lint.stdout.strip() else ""

    # Without the required secrets the chart refuses to render, naming the value.
    missing = run(HELM, "template", "rel", str(CHART), ok=False)
    check(missing.returncode != 0 and "secrets.databaseUrl is required" in missing.stderr,
          f"rendering without secrets.databaseUrl must fail naming it: {missing.stderr}")

    m = render(*SETS)
    out["kinds"] = sorted(k for k, _ in m)
    name = "rel-beacon"
    for kind in ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Secret"]:
        check((kind, name) in m, f"{kind} {name} is rendered")
    check(("ServiceMonitor", name) not in m, "no ServiceMonitor unless enabled")
    dep = m[("Deployment", name)]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness on /readyz")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness on /healthz")
    check(c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep", "a preStop sleep")
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    toml = m[("ConfigMap", name)]["data"]["beacon.toml"]
    import tomllib
    cfg = tomllib.loads(toml)
    drain = cfg["server"]["drain_delay_secs"]
    grace = cfg["server"]["shutdown_grace_secs"]
    flush = cfg["broadcast"]["shutdown_deadline_secs"]
    tgp = pod["terminationGracePeriodSeconds"]
    out["termination"] = {"terminationGracePeriodSeconds": tgp, "preStop": pre_stop, "drain": drain, "grace": grace, "flush": flush}
    check(tgp > pre_stop + drain + grace + flush,
          f"terminationGracePeriodSeconds {tgp} above preStop {pre_stop} + drain {drain} + grace {grace} + flush {flush}")
    sc = c["securityContext"]
    check(sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
          and sc["capabilities"]["drop"] == ["ALL"], f"container hardening: {sc}")
    check(pod["securityContext"]["runAsNonRoot"] is True, "runAsNonRoot")
    check("replicas" not in dep["spec"], "replicas left to the HPA")
    check(c["envFrom"][0]["secretRef"]["name"] == name, "environment from the Secret")
    check(c["args"] == ["serve", "--config", "/etc/beacon/beacon.toml"], f"args: {c['args']}")
    mounts = {v["mountPath"] for v in c["volumeMounts"]}
    check({"/etc/beacon", "/var/lib/beacon", "/tmp"} <= mounts, f"mounts: {mounts}")
    check(len(dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]) == 64, "config checksum")
    svc = m[("Service", name)]
    check(svc["spec"]["ports"][0]["targetPort"] == "http", "service targets the http port")
    check(svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"], "service selects the pods")
    check(m[("PodDisruptionBudget", name)]["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"],
          "PDB selects the pods")
    hpa = m[("HorizontalPodAutoscaler", name)]["spec"]
    check(hpa["scaleTargetRef"]["name"] == name and hpa["minReplicas"] >= 2, f"HPA: {hpa}")
    secret = m[("Secret", name)]["stringData"]
    check(secret == {"BEACON_DATABASE_URL": DB, "BEACON_ADMIN_TOKEN": ADMIN, "BEACON_SECRET_KEY": SECRET,
                     "OPENAI_API_KEY": "sk-test"}, f"secret keys: {sorted(secret)}")

    # The rendered beacon.toml is a valid config with the Secret's environment.
    with tempfile.TemporaryDirectory() as d:
        path = pathlib.Path(d) / "beacon.toml"
        path.write_text(toml)
        env = {**os.environ, **secret}
        p = subprocess.run([beacon, "check", "--config", str(path)], capture_output=True, text=True, env=env)
        out["beacon_check"] = p.stderr.strip()
        check(p.returncode == 0, f"beacon check on the rendered config: {p.stderr}")

    # Options: a fixed replica count, a ServiceMonitor, an existing Secret.
    m2 = render(*SETS, "autoscaling.enabled=false", "replicaCount=3", "serviceMonitor.enabled=true")
    check(m2[("Deployment", name)]["spec"]["replicas"] == 3, "replicaCount without the HPA")
    check(("HorizontalPodAutoscaler", name) not in m2, "no HPA when disabled")
    sm = m2.get(("ServiceMonitor", name))
    check(sm is not None and sm["spec"]["endpoints"][0]["path"] == "/metrics", "ServiceMonitor scrapes /metrics")
    m3 = render("secrets.existingSecret=beacon-env")
    check(("Secret", name) not in m3, "no Secret with secrets.existingSecret")
    c3 = m3[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]
    check(c3["envFrom"][0]["secretRef"]["name"] == "beacon-env", "the existing Secret is used")

    # The container image's Dockerfile passes hadolint.
    h = run(HADOLINT, str(ROOT / "deploy" / "Dockerfile"))
    out["hadolint"] = h.stdout.strip() or "clean"

    out["failures"] = failures
    print(json.dumps(out))
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
