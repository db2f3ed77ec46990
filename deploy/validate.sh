#!/usr/bin/env bash
# Validates what deploy/ ships, offline:
# - every Kubernetes manifest under deploy/kubernetes/ against the Kubernetes API schemas
#   (kubernetes-validate, strict: unknown fields fail; schemas ship in the package), for
#   the oldest and newest Kubernetes versions we support, each file on its own (no
#   kustomize needed); kustomization.yaml must list exactly the manifests beside it;
# - the TOML embedded in the ConfigMaps parses (and, when a built tapline-agent is
#   around, the agent's configuration loads in the agent itself: unknown keys fail);
# - the systemd units with `systemd-analyze verify` (any warning fails) when it exists.
# Exits non-zero on the first kind of failure found. Usage: bash deploy/validate.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
k8s_dir=${1:-deploy/kubernetes}
unit_dir=deploy/systemd
kube_versions=(1.30.0 1.37.0)

kv=${KUBERNETES_VALIDATE:-}
if [ -z "$kv" ]; then
  for c in target/deploy-venv/bin/kubernetes-validate "$(command -v kubernetes-validate || true)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then kv=$c; break; fi
  done
fi
if [ -z "$kv" ]; then
  echo "deploy/validate.sh: kubernetes-validate not found (bash .ci/setup installs it in target/deploy-venv)" >&2
  exit 1
fi

failed=0
manifests=()
for f in "$k8s_dir"/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] && continue
  manifests+=("$f")
done

# Kubernetes schemas. A kind without a schema is only a warning for kubernetes-validate:
# treat it (and any other warning) as a failure.
for v in "${kube_versions[@]}"; do
  for f in "${manifests[@]}"; do
    if ! out=$("$kv" --strict -k "$v" "$f" 2>&1) || grep -qE '^(WARN|ERROR)' <<<"$out"; then
      echo "FAIL $f (Kubernetes $v):" >&2
      echo "$out" | grep -vE '^INFO' >&2 || true
      failed=1
    fi
  done
done

# kustomization.yaml lists exactly the manifests of its directory.
if [ -f "$k8s_dir/kustomization.yaml" ]; then
  listed=$(python3 - "$k8s_dir/kustomization.yaml" <<'PY'
import sys
lines, on = [], False
for l in open(sys.argv[1]):
    if l.startswith("resources:"):
        on = True
        continue
    if on and l.startswith("  - "):
        lines.append(l[4:].strip())
    elif on and l.strip() and not l.startswith(" "):
        on = False
print("\n".join(sorted(lines)))
PY
)
  present=$(for f in "${manifests[@]}"; do basename "$f"; done | sort)
  if [ "$listed" != "$present" ]; then
    echo "FAIL $k8s_dir/kustomization.yaml: resources differ from the manifests present:" >&2
    diff <(echo "$listed") <(echo "$present") >&2 || true
    failed=1
  fi
fi

# The TOML files inside the ConfigMaps.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! python3 - "$tmp" "${manifests[@]}" <<'PY'
import re, sys, tomllib
out, files = sys.argv[1], sys.argv[2:]
bad = 0
for f in files:
    text = open(f).read()
    if "kind: ConfigMap" not in text:
        continue
    # `  name.toml: |` blocks, indented four spaces.
    for m in re.finditer(r"^  ([\w.-]+\.toml): \|\n((?:    .*\n|\s*\n)*)", text, re.M):
        body = "".join(l[4:] if l.startswith("    ") else "\n" for l in m.group(2).splitlines(True))
        open(f"{out}/{m.group(1)}", "w").write(body)
        try:
            tomllib.loads(body)
        except tomllib.TOMLDecodeError as e:
            print(f"FAIL {f}: {m.group(1)}: {e}", file=sys.stderr)
            bad = 1
sys.exit(bad)
PY
then
  failed=1
fi
agent=${TAPLINE_AGENT:-}
for c in ${agent:+"$agent"} target/debug/tapline-agent target/release/tapline-agent; do
  [ -x "$c" ] && agent=$c && break
done
if [ -f "$tmp/agent.toml" ] && [ -n "$agent" ]; then
  # An empty pcap (header only): the agent loads the configuration and reads nothing.
  printf '\xd4\xc3\xb2\xa1\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\x00\x00\x01\x00\x00\x00' >"$tmp/empty.pcap"
  if ! out=$(RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 "$agent" read --config "$tmp/agent.toml" "$tmp/empty.pcap" 2>&1); then
    echo "FAIL agent.toml of the agent's ConfigMap: $out" >&2
    failed=1
  fi
elif [ -f "$tmp/agent.toml" ]; then
  echo "note: no built tapline-agent: agent.toml checked as TOML only"
fi

# systemd units: verified with the ExecStart binaries replaced by ones that exist (the
# built ones, else /bin/true), since they are not installed here.
units="systemd units not verified (no systemd-analyze)"
if command -v systemd-analyze >/dev/null 2>&1; then
  units="systemd units verified"
  udir=$tmp/units
  mkdir -p "$udir"
  for u in "$unit_dir"/*.service; do
    sed -E "s#/usr/local/bin/(tapline-[a-z]+)#$(pwd)/target/debug/\1#" "$u" >"$udir/$(basename "$u")"
    for b in tapline-agent tapline-collector; do
      [ -x "target/debug/$b" ] || sed -i "s#$(pwd)/target/debug/$b#/bin/true#" "$udir/$(basename "$u")"
    done
  done
  if ! out=$(systemd-analyze verify "$udir"/*.service 2>&1) || [ -n "$out" ]; then
    echo "FAIL systemd units:" >&2
    echo "$out" >&2
    failed=1
  else
    for u in "$udir"/*.service; do
      systemd-analyze security --offline=true "$u" 2>/dev/null | grep 'Overall exposure' || true
    done
  fi
else
  echo "note: systemd-analyze not found: systemd units not verified"
fi

if [ "$failed" != 0 ]; then
  echo "deploy: validation failed" >&2
  exit 1
fi
echo "deploy: ${#manifests[@]} Kubernetes manifests valid for ${kube_versions[*]}; ConfigMap TOML parses; $units"
