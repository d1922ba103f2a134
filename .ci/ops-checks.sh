#!/usr/bin/env bash
# Checks of what operators load as is, without cargo (tools: scripts/install-deps):
#
# - deploy/prometheus: `promtool check config` on the example prometheus.yml (it loads the rule
#   file), `promtool check rules` on the rule file, `promtool test rules` on the unit tests in
#   deploy/prometheus/tests (every alert fires above its threshold and not below);
# - deploy/kubernetes: .ci/validate_kubernetes.py, the manifests as kustomize assembles them,
#   validated strictly against the Kubernetes API schemas (the versions the README names) with
#   the pinned kubernetes-validate, offline.
#
# The consistency of the manifests with proxy.yaml, of the PrometheusRule with the rule file,
# and of the dashboard and rules with the real /metrics is checked by tests/deploy_files.rs and
# tests/prometheus.rs (cargo test).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${OPS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/session-sidecar/ops-venv}"
for tool in promtool "$venv/bin/python"; do
  if ! command -v "$tool" >/dev/null; then
    echo "ops-checks: ERROR: $tool is missing; run scripts/install-deps" >&2
    exit 1
  fi
done

echo "ops-checks: $(promtool --version 2>&1 | head -1)"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/session-sidecar.rules.yml
promtool test rules deploy/prometheus/tests/*.yml
"$venv/bin/python" .ci/validate_kubernetes.py
echo "ops-checks: ok"
