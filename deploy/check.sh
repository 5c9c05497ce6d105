#!/usr/bin/env bash
# Checks everything under deploy/: the Kubernetes manifests, their
# kustomization and start scripts, and the systemd units. Prints each check;
# exits 1 naming every one that failed.
#
# It installs nothing. Install once:
#   pip install kubernetes-validate==1.37.0
#   apt-get install -y systemd
# (kubernetes-validate brings PyYAML, which the checks below use; the systemd
# package brings systemd-analyze.)
#
# Optional:
#   kubectl on PATH   also renders the kustomization (`kubectl kustomize`,
#                     offline) and validates the result; skipped without it.
#   QUARRY=/path/to/quarry
#                     also checks that every command line the manifests and
#                     units run parses with that binary (each is run with
#                     --help appended: clap stops at the first unknown flag or
#                     bad value, and prints help otherwise, starting nothing).
#                     Without it, flags are checked against the #[arg(long)]
#                     fields in cli/src.
#   KUBERNETES_VERSIONS="1.31.0 1.37.0"
#                     the API versions to validate against (strict: unknown
#                     fields fail). The oldest is the oldest cluster these
#                     manifests are meant for.
#
# Usage: deploy/check.sh
set -euo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$DEPLOY")"
K8S="$DEPLOY/kubernetes"
UNITS="$DEPLOY/systemd"
KUBERNETES_VERSIONS="${KUBERNETES_VERSIONS:-1.31.0 1.37.0}"
QUARRY="${QUARRY:-}"

failures=()
fail() {
  echo "FAIL: $*" >&2
  failures+=("$*")
}
ok() { echo "ok:   $*"; }

# --- tools -------------------------------------------------------------------
missing=()
command -v kubernetes-validate >/dev/null || missing+=("kubernetes-validate (pip install kubernetes-validate==1.37.0)")
command -v systemd-analyze >/dev/null || missing+=("systemd-analyze (apt-get install -y systemd)")
command -v python3 >/dev/null && python3 -c 'import yaml' 2>/dev/null ||
  missing+=("python3 with PyYAML (comes with kubernetes-validate)")
if ((${#missing[@]})); then
  printf 'deploy/check.sh: missing tools:\n' >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi
if [ -n "$QUARRY" ] && [ ! -x "$QUARRY" ]; then
  echo "deploy/check.sh: QUARRY=$QUARRY is not an executable file" >&2
  exit 1
fi
if [ -n "$QUARRY" ]; then
  QUARRY="$(cd "$(dirname "$QUARRY")" && pwd)/$(basename "$QUARRY")"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- Kubernetes: the kustomization --------------------------------------------
# kubernetes-validate knows only API kinds, not kustomize's Kustomization:
# check that every listed resource exists and every manifest is listed.
echo "== deploy/kubernetes/kustomization.yaml"
if manifests="$(python3 - "$K8S" <<'EOF'
import os, sys, yaml
k8s = sys.argv[1]
with open(os.path.join(k8s, "kustomization.yaml")) as f:
    doc = yaml.safe_load(f)
problems = []
if not isinstance(doc, dict) or doc.get("kind") != "Kustomization":
    sys.exit("kustomization.yaml: not a Kustomization")
listed = doc.get("resources") or []
if len(set(listed)) != len(listed):
    problems.append("a resource is listed twice")
for r in listed:
    if not os.path.isfile(os.path.join(k8s, r)):
        problems.append(f"resource {r} does not exist")
present = sorted(f for f in os.listdir(k8s)
                 if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml")
for f in present:
    if f not in listed:
        problems.append(f"{f} is not listed in resources (apply -k would leave it out)")
if problems:
    sys.exit("kustomization.yaml: " + "; ".join(problems))
print("\n".join(listed))
EOF
)"; then
  ok "kustomization.yaml lists $(echo "$manifests" | wc -l) existing manifests, and every manifest"
else
  fail "kustomization.yaml (see above)"
  manifests=""
  for m in "$K8S"/*.yaml; do
    [ "$(basename "$m")" = kustomization.yaml ] || manifests+="$(basename "$m")"$'\n'
  done
fi

# --- Kubernetes: schemas -------------------------------------------------------
# kubernetes-validate exits 0 on a kind it has no schema for (a typo in kind
# or apiVersion) and only warns: any WARN or ERROR line fails the check.
validate() {
  local version="$1" label="$2"
  shift 2
  local out
  if out="$(kubernetes-validate --kubernetes-version "$version" --strict "$@" 2>&1)" &&
    ! grep -qE '^(WARN|ERROR)' <<<"$out"; then
    ok "$label valid against Kubernetes $version (strict): $(grep -c ' passed ' <<<"$out") resources"
  else
    echo "$out" | grep -vE '^INFO' >&2 || true
    fail "$label does not validate against Kubernetes $version"
  fi
}
echo "== Kubernetes manifests (kubernetes-validate $(kubernetes-validate --version 2>&1 | tr -d '\n'))"
for version in $KUBERNETES_VERSIONS; do
  for m in $manifests; do
    validate "$version" "kubernetes/$m" "$K8S/$m"
  done
done
# Manifests kept beside the kustomization but applied by hand.
for version in $KUBERNETES_VERSIONS; do
  for m in "$K8S"/optional/*.yaml; do
    [ -e "$m" ] || continue
    validate "$version" "kubernetes/optional/$(basename "$m")" "$m"
  done
done
if command -v kubectl >/dev/null; then
  if kubectl kustomize "$K8S" >"$work/rendered.yaml" 2>"$work/kustomize.err"; then
    ok "kubectl kustomize renders $(grep -c '^kind:' "$work/rendered.yaml") resources"
    for version in $KUBERNETES_VERSIONS; do
      validate "$version" "the rendered kustomization" "$work/rendered.yaml"
    done
  else
    cat "$work/kustomize.err" >&2
    fail "kubectl kustomize deploy/kubernetes"
  fi
else
  echo "skip: kubectl not on PATH; the kustomization is not rendered"
fi

# --- Kubernetes: what the schemas do not say ------------------------------------
# Hardening of every container, probes, the coordinator group's shape, and the
# command lines: the start scripts run against a stand-in `quarry` that records
# its arguments.
echo "== Kubernetes: hardening, probes, command lines"
mkdir -p "$work/bin"
cat >"$work/bin/quarry" <<'EOF'
#!/bin/sh
printf '%s\n' "$@" >"$STUB_ARGS"
EOF
chmod +x "$work/bin/quarry"
if python3 - "$REPO" "$work" "$QUARRY" <<'EOF'; then
import glob, os, re, subprocess, sys, yaml

repo, work, quarry = sys.argv[1:4]
k8s = os.path.join(repo, "deploy", "kubernetes")
failed = []

def check(ok, what):
    print(("ok:   " if ok else "FAIL: ") + what, file=sys.stdout if ok else sys.stderr)
    if not ok:
        failed.append(what)

docs = {}
for path in sorted(glob.glob(os.path.join(k8s, "*.yaml"))):
    if path.endswith("kustomization.yaml"):
        continue
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc

sts = docs.get(("StatefulSet", "quarry-coordinator"))
ds = docs.get(("DaemonSet", "quarry-worker"))
cm = docs.get(("ConfigMap", "quarry-scripts"))
for kind, name in [("Namespace", "quarry"), ("Service", "quarry-coordinator"),
                   ("Service", "quarry-api"), ("PodDisruptionBudget", "quarry-coordinator"),
                   ("StatefulSet", "quarry-coordinator"), ("DaemonSet", "quarry-worker"),
                   ("ConfigMap", "quarry-scripts")]:
    check((kind, name) in docs, f"{kind} {name} is defined")
if not (sts and ds and cm):
    sys.exit(1)

# Hardening: every container; the one init container that prepares the
# worker's host directory is the documented exception to running as non-root.
ROOT_ALLOWED = {"data-dir-owner"}
for workload in (sts, ds):
    pod = workload["spec"]["template"]["spec"]
    name = workload["metadata"]["name"]
    psc = pod.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
          f"{name}: pod runs as non-root with seccomp RuntimeDefault")
    check(pod.get("automountServiceAccountToken") is False, f"{name}: no service account token")
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        nonroot = sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True
        caps = sc.get("capabilities", {})
        hardened = (sc.get("allowPrivilegeEscalation") is False
                    and sc.get("readOnlyRootFilesystem") is True
                    and caps.get("drop") == ["ALL"]
                    and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
                    and sc.get("privileged") is not True
                    and (nonroot or c["name"] in ROOT_ALLOWED))
        if c["name"] in ROOT_ALLOWED:
            hardened = hardened and set(caps.get("add", [])) <= {"CHOWN", "FOWNER"}
        check(hardened, f"{name}/{c['name']}: hardened securityContext")
        res = c.get("resources", {})
        check(bool(res.get("requests")) and bool(res.get("limits", {}).get("memory")),
              f"{name}/{c['name']}: resource requests and a memory limit")
    for c in pod["containers"]:
        check(all(p in c for p in ("livenessProbe", "readinessProbe", "startupProbe")),
              f"{name}/{c['name']}: startup, liveness and readiness probes")
        for v in c.get("volumeMounts", []):
            if v["name"] in ("tls", "ingest-tls", "host-logs"):
                check(v.get("readOnly") is True, f"{name}/{c['name']}: {v['name']} mounted read-only")

# The coordinator group's shape.
spec = sts["spec"]
env = {e["name"]: e.get("value") for e in spec["template"]["spec"]["containers"][0]["env"]}
check(spec["replicas"] == 3 and env.get("QUARRY_COORDINATORS") == "3",
      "coordinators: 3 replicas, and the start script told so")
check(spec["serviceName"] == "quarry-coordinator", "coordinators: serviceName is the headless Service")
check(spec.get("podManagementPolicy") == "Parallel", "coordinators: start in parallel")
headless = docs.get(("Service", "quarry-coordinator"), {}).get("spec", {})
check(headless.get("clusterIP") == "None" and headless.get("publishNotReadyAddresses") is True,
      "quarry-coordinator Service: headless, publishing pods before they are ready")
pdb = docs.get(("PodDisruptionBudget", "quarry-coordinator"), {}).get("spec", {})
check(pdb.get("maxUnavailable") == 1, "PodDisruptionBudget: maxUnavailable 1")
labels = spec["template"]["metadata"]["labels"]
for (kind, name), doc in docs.items():
    sel = (doc.get("spec") or {}).get("selector")
    if kind in ("Service",) and sel:
        check(all(labels.get(k) == v for k, v in sel.items()), f"Service {name} selects the coordinator pods")

# The long flags clap knows, from cli/src (heuristic; exact with QUARRY).
known = {"help", "version"}
for path in glob.glob(os.path.join(repo, "cli", "src", "**", "*.rs"), recursive=True):
    with open(path) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        s = line.strip()
        if not (s.startswith("#[arg(") and re.search(r"\blong\b", s)):
            continue
        m = re.search(r'\blong\s*=\s*"([^"]+)"', s)
        if m:
            known.add(m.group(1))
            continue
        for nxt in lines[i + 1:]:
            n = nxt.strip()
            if n.startswith(("#[", "///", "//")) or not n:
                continue
            m = re.match(r"(?:pub(?:\([^)]*\))?\s+)?([a-z_][a-z0-9_]*)\s*:", n)
            if m:
                known.add(m.group(1).replace("_", "-"))
            break

def flags_known(args, what):
    unknown = sorted({a[2:].split("=", 1)[0] for a in args if a.startswith("--")} - known)
    check(not unknown, f"{what}: flags exist in cli/src" + (f" (unknown: {unknown})" if unknown else ""))

def parses(args, what):
    if not quarry:
        return
    r = subprocess.run([quarry] + args + ["--help"], capture_output=True, text=True)
    check(r.returncode == 0, f"{what}: parses with {quarry}" +
          ("" if r.returncode == 0 else ": " + (r.stderr.strip().splitlines() or ["?"])[0]))

def run_script(name, extra_env):
    script = os.path.join(work, name)
    with open(script, "w") as f:
        f.write(cm["data"][name])
    syntax = subprocess.run(["sh", "-n", script], capture_output=True, text=True)
    if syntax.returncode != 0:
        return None, syntax.returncode, syntax.stderr
    args_file = os.path.join(work, "args")
    if os.path.exists(args_file):
        os.remove(args_file)
    e = {"PATH": os.path.join(work, "bin") + ":/usr/bin:/bin", "STUB_ARGS": args_file}
    e.update(extra_env)
    r = subprocess.run(["sh", script], env=e, capture_output=True, text=True)
    args = open(args_file).read().splitlines() if os.path.exists(args_file) else None
    return args, r.returncode, r.stderr

# The coordinator start script, for each pod of the group.
pod_spec = spec["template"]["spec"]
base = {"POD_NAMESPACE": "quarry", "CLUSTER_DOMAIN": env["CLUSTER_DOMAIN"],
        "QUARRY_COORDINATORS": env["QUARRY_COORDINATORS"],
        "QUARRY_EXTRA_ARGS": env.get("QUARRY_EXTRA_ARGS") or "",
        "QUARRY_JOIN_FILE": os.path.join(work, "no-join-url")}
domain = f"quarry-coordinator.quarry.svc.{env['CLUSTER_DOMAIN']}"
n = int(env["QUARRY_COORDINATORS"])
for ordinal in range(n):
    pod = f"quarry-coordinator-{ordinal}"
    args, rc, err = run_script("coordinator-start.sh", dict(base, POD_NAME=pod))
    node = ordinal + 1
    peers = [f"{o + 1}=https://quarry-coordinator-{o}.{domain}:7700" for o in range(n) if o != ordinal]
    good = (rc == 0 and args is not None and args[0] == "coordinator"
            and args[args.index("--node-id") + 1] == str(node)
            and [args[i + 1] for i, a in enumerate(args) if a == "--peer"] == peers
            and args[args.index("--advertise-url") + 1] == f"https://{pod}.{domain}:7700"
            and args[args.index("--tls-cert") + 1] == f"/etc/quarry/tls/coordinator-{node}.pem"
            and args[args.index("--tls-key") + 1] == f"/etc/quarry/tls/coordinator-{node}.key"
            and args[args.index("--data-dir") + 1] == "/var/lib/quarry/coordinator")
    check(good, f"coordinator-start.sh as {pod}: node {node}, peers {', '.join(p.split('=')[0] for p in peers)}, its own URL and certificate"
          + ("" if good else f" (exit {rc}: {err.strip()} args {args})"))
    if args and ordinal == 0:
        flags_known(args, "coordinator-start.sh")
        parses(args, "coordinator-start.sh")
args, rc, err = run_script("coordinator-start.sh", dict(base, POD_NAME=f"quarry-coordinator-{n}"))
check(rc != 0 and args is None, f"coordinator-start.sh refuses a pod beyond the {n} founders")
args, rc, err = run_script("coordinator-start.sh", dict(base, POD_NAME="quarry-coordinator-1",
                                                       QUARRY_EXTRA_ARGS="--retain-for 7d --retain-hunts 50"))
check(rc == 0 and args[-4:] == ["--retain-for", "7d", "--retain-hunts", "50"],
      "coordinator-start.sh passes QUARRY_EXTRA_ARGS as separate flags")
if rc == 0:
    flags_known(args, "coordinator-start.sh with QUARRY_EXTRA_ARGS")

# Replacing a member whose volume was lost: --join instead of --peer, but
# only with an empty data directory.
join = "https://quarry-coordinator-0.quarry-coordinator.quarry.svc.cluster.local:7700"
join_file = os.path.join(work, "join-url")
with open(join_file, "w") as f:
    f.write(join + "\n")
empty, full = os.path.join(work, "empty-data"), os.path.join(work, "full-data")
os.makedirs(empty, exist_ok=True)
os.makedirs(os.path.join(full, "raft"), exist_ok=True)
args, rc, err = run_script("coordinator-start.sh", dict(base, POD_NAME="quarry-coordinator-2",
                                                       QUARRY_JOIN_FILE=join_file, QUARRY_DATA_DIR=empty))
check(rc == 0 and args is not None and "--peer" not in args
      and args[args.index("--join") + 1] == join and args[args.index("--node-id") + 1] == "3",
      "coordinator-start.sh with a join URL and an empty data directory joins the group")
if rc == 0:
    flags_known(args, "coordinator-start.sh joining")
    parses(args, "coordinator-start.sh joining")
args, rc, err = run_script("coordinator-start.sh", dict(base, POD_NAME="quarry-coordinator-2",
                                                       QUARRY_JOIN_FILE=join_file, QUARRY_DATA_DIR=full))
check(rc == 0 and args is not None and "--join" not in args and args.count("--peer") == n - 1,
      "coordinator-start.sh with a join URL and a data directory resumes with its peers")
mounts = {v["name"]: v["mountPath"] for v in pod_spec["containers"][0]["volumeMounts"]}
vols = {v["name"]: v for v in pod_spec["volumes"]}
check(mounts.get("join") == "/etc/quarry/join"
      and vols.get("join", {}).get("configMap", {}).get("optional") is True,
      "coordinator: the join URL comes from an optional ConfigMap at /etc/quarry/join")

# The readiness script.
args, rc, err = run_script("coordinator-ready.sh", {"POD_NAME": "quarry-coordinator-2"})
good = (rc == 0 and args is not None and args[:2] == ["cluster", "status"]
        and args[args.index("--tls-cert") + 1] == "/etc/quarry/tls/coordinator-3.pem"
        and args[args.index("--coordinator") + 1] == "https://localhost:7700")
check(good, "coordinator-ready.sh: cluster status over TLS with the pod's own certificate"
      + ("" if good else f" (exit {rc}: {err.strip()} args {args})"))
if args:
    flags_known(args, "coordinator-ready.sh")
    parses(args, "coordinator-ready.sh")

# Every script the pods run is in the ConfigMap.
pod = spec["template"]["spec"]
c = pod["containers"][0]
used = [w for w in c["command"] + c["readinessProbe"]["exec"]["command"] if w.startswith("/etc/quarry/bin/")]
check(all(u.rsplit("/", 1)[1] in cm["data"] for u in used), "coordinator: the scripts it runs are in quarry-scripts")

# The worker's command line, with the kubelet's $(VAR) expansion.
c = ds["spec"]["template"]["spec"]["containers"][0]
wenv = {"NODE_NAME": "node-a", "POD_NAMESPACE": "quarry"}
wenv.update({e["name"]: e["value"] for e in c["env"] if "value" in e})
expanded = [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: wenv.get(m.group(1), m.group(0)), a)
            for a in c["args"]]
check(not any("$(" in a for a in expanded), "worker: every $(VAR) in its args is defined")
check(c["command"] == ["/usr/local/bin/quarry"] and expanded[0] == "worker"
      and "--id=node-a" in expanded and "--tls-cert=/etc/quarry/tls/worker-node-a.pem" in expanded
      and f"--coordinator=https://quarry-api.quarry.svc.{wenv['CLUSTER_DOMAIN']}:7700" in expanded,
      "worker: id and certificate from the node name, coordinator through quarry-api")
flags_known(expanded, "worker args")
parses(expanded, "worker args")

# A worker drains on SIGTERM for --shutdown-grace (default 30s), then hands
# back what still runs, and needs about 20 s more: the kubelet must not kill
# it sooner.
def seconds(text):
    m = re.fullmatch(r"(\d+)(s|m)?", text.strip())
    return None if not m else int(m.group(1)) * (60 if m.group(2) == "m" else 1)
grace = next((a.split("=", 1)[1] for a in expanded if a.startswith("--shutdown-grace=")), "30s")
period = ds["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
check(seconds(grace) is not None and period >= seconds(grace) + 20,
      f"worker: terminationGracePeriodSeconds ({period}) is at least --shutdown-grace ({grace}) + 20 s")

sys.exit(1 if failed else 0)
EOF
  :
else
  fail "Kubernetes hardening, probes or command lines (see above)"
fi

# --- systemd -------------------------------------------------------------------
# `systemd-analyze verify` fails when ExecStart's program does not exist, and
# /usr/local/bin/quarry is not installed where this runs: each unit is
# verified as a temporary copy whose ExecStart runs $QUARRY if set, else
# /bin/true. Everything else in the unit is checked as written.
echo "== systemd units"
program="${QUARRY:-/bin/true}"
for unit in quarry-coordinator.service quarry-worker.service; do
  if [ ! -f "$UNITS/$unit" ]; then
    fail "deploy/systemd/$unit is missing"
    continue
  fi
  sed "s#^ExecStart=/usr/local/bin/quarry #ExecStart=$program #" "$UNITS/$unit" >"$work/$unit"
  if ! grep -q "^ExecStart=$program " "$work/$unit"; then
    fail "$unit: ExecStart does not run /usr/local/bin/quarry"
    continue
  fi
  if out="$(systemd-analyze verify "$work/$unit" 2>&1)" && [ -z "$out" ]; then
    ok "$unit: systemd-analyze verify (ExecStart run as $program)"
  else
    echo "$out" >&2
    fail "$unit: systemd-analyze verify"
  fi
  # The exposure threshold the worker crate's hardening test holds them to.
  if out="$(systemd-analyze security --offline=yes --threshold=25 "$UNITS/$unit" 2>&1)"; then
    ok "$unit: systemd-analyze security: $(tail -n1 <<<"$out" | sed 's/.*exposure level for [^:]*: //')"
  else
    tail -n1 <<<"$out" >&2
    fail "$unit: systemd-analyze security rates it above 2.5"
  fi
done

# The worker drains on SIGTERM for --shutdown-grace, then hands back what
# still runs: systemd must wait longer before it kills it.
unit_grace="$(grep -o -- '--shutdown-grace [0-9]*s' "$UNITS/quarry-worker.service" | grep -o '[0-9]*' || echo 30)"
stop_sec="$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' "$UNITS/quarry-worker.service")"
if [ -n "$stop_sec" ] && [ "$stop_sec" -ge $((unit_grace + 20)) ]; then
  ok "quarry-worker.service: TimeoutStopSec=$stop_sec is at least --shutdown-grace ${unit_grace}s + 20 s"
else
  fail "quarry-worker.service: TimeoutStopSec (${stop_sec:-unset}) must be at least --shutdown-grace (${unit_grace}s) + 20 s"
fi

# The command lines: the coordinator's with the variables of
# coordinator.env.example, expanded as systemd does (${VAR} one word, $VAR
# split on whitespace), %H as a host name.
if python3 - "$UNITS" "$REPO" "$QUARRY" <<'EOF'; then
import glob, os, re, shlex, subprocess, sys
units, repo, quarry = sys.argv[1:4]
failed = []
def check(ok, what):
    print(("ok:   " if ok else "FAIL: ") + what, file=sys.stdout if ok else sys.stderr)
    if not ok:
        failed.append(what)

def env_file(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        k, v = line.split("=", 1)
        env[k.strip()] = " ".join(shlex.split(v)) if v.strip() else ""
    return env

def expand(cmd, env):
    words = []
    for w in shlex.split(cmd.replace("%H", "host-a")):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
        if m:
            words += env.get(m.group(1), "").split()
        else:
            words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), w))
    return words

known = {"help", "version"}
for path in glob.glob(os.path.join(repo, "cli", "src", "**", "*.rs"), recursive=True):
    lines = open(path).read().splitlines()
    for i, line in enumerate(lines):
        s = line.strip()
        if not (s.startswith("#[arg(") and re.search(r"\blong\b", s)):
            continue
        m = re.search(r'\blong\s*=\s*"([^"]+)"', s)
        if m:
            known.add(m.group(1)); continue
        for n in (l.strip() for l in lines[i + 1:]):
            if not n or n.startswith(("#[", "//")):
                continue
            m = re.match(r"(?:pub(?:\([^)]*\))?\s+)?([a-z_][a-z0-9_]*)\s*:", n)
            if m:
                known.add(m.group(1).replace("_", "-"))
            break

example = os.path.join(units, "coordinator.env.example")
check(os.path.isfile(example), "systemd/coordinator.env.example exists")
for unit, env in [("quarry-coordinator.service", env_file(example) if os.path.isfile(example) else {}),
                  ("quarry-worker.service", {})]:
    text = open(os.path.join(units, unit)).read()
    cmd = next(l.split("=", 1)[1] for l in text.splitlines() if l.startswith("ExecStart="))
    used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", cmd))
    if used or env:
        check(used <= set(env), f"{unit}: coordinator.env.example sets every variable ExecStart uses"
              + ("" if used <= set(env) else f" (missing: {sorted(used - set(env))})"))
    args = expand(cmd, env)[1:]
    unknown = sorted({a[2:].split("=", 1)[0] for a in args if a.startswith("--")} - known)
    check(not unknown, f"{unit}: flags exist in cli/src" + (f" (unknown: {unknown})" if unknown else ""))
    if quarry:
        r = subprocess.run([quarry] + args + ["--help"], capture_output=True, text=True)
        check(r.returncode == 0, f"{unit}: command line parses with {quarry}" +
              ("" if r.returncode == 0 else ": " + (r.stderr.strip().splitlines() or ["?"])[0]))
sys.exit(1 if failed else 0)
EOF
  :
else
  fail "systemd command lines (see above)"
fi

# --- result --------------------------------------------------------------------
echo
if ((${#failures[@]})); then
  echo "deploy/check.sh: ${#failures[@]} check(s) failed:" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "deploy/check.sh: all checks passed"
