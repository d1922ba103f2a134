"""Validates deploy/kubernetes against the Kubernetes API schemas, offline.

What `kubectl apply -k deploy/kubernetes/` would send is assembled the way kustomize does it
for the features the example uses (`resources:` files and directories, `components:`), once
as shipped and once with each optional component (a directory whose kustomization is a
`Component`) added. Every object is validated strictly (unknown fields are errors) with
kubernetes-validate against each Kubernetes version in KUBE_VERSIONS (default: the oldest the
README supports and the newest the pinned package ships).

Also:
- every YAML file under deploy/kubernetes holding Kubernetes objects is listed in a
  kustomization, every listed file exists, and no object is defined twice;
- objects of CRDs without a schema here are allowed only for the kinds in CRD_KINDS, which are
  checked otherwise: PrometheusRule's rules with `promtool check rules` (and against
  deploy/prometheus/ by tests/deploy_files.rs), PodMonitor's wiring by tests/deploy_files.rs;
- when kubectl is installed, `kubectl kustomize` builds the same variants and must yield the
  same objects (a check on this script's assembly; skipped, with a note, without kubectl).

Exit status 0 when everything passes, 1 otherwise (every problem printed on its own line).
"""

import os
import shutil
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BASE = os.path.join(ROOT, "deploy", "kubernetes")
KUBE_VERSIONS = os.environ.get("KUBE_VERSIONS", "1.30.0 1.37.0").split()

# Kinds of CustomResourceDefinitions whose schemas kubernetes-validate does not ship.
CRD_KINDS = {("monitoring.coreos.com/v1", "PrometheusRule"), ("monitoring.coreos.com/v1", "PodMonitor")}

# Kustomization keys this assembly implements; anything else must be taught here first.
KNOWN_KEYS = {"apiVersion", "kind", "resources", "components"}

problems = []


def rel(path):
    return os.path.relpath(path, ROOT)


def problem(message):
    problems.append(message)
    print("ERROR " + message)


def load_documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def read_kustomization(directory):
    path = os.path.join(directory, "kustomization.yaml")
    if not os.path.isfile(path):
        problem(f"{rel(directory)}: no kustomization.yaml")
        return {}
    docs = load_documents(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        problem(f"{rel(path)}: not one kustomization")
        return {}
    unknown = set(docs[0]) - KNOWN_KEYS
    if unknown:
        problem(f"{rel(path)}: {sorted(unknown)} not understood by {rel(__file__)}; teach it or drop them")
    return docs[0]


def assemble(directory, listed, extra_components=()):
    """Objects of the kustomization in `directory` (with `extra_components` added), recording
    every file it lists in `listed`."""
    kustomization = read_kustomization(directory)
    objects = []
    for entry in kustomization.get("resources") or []:
        path = os.path.normpath(os.path.join(directory, entry))
        if os.path.isdir(path):
            objects += assemble(path, listed)
        elif os.path.isfile(path):
            listed.add(path)
            objects += [(path, d) for d in load_documents(path)]
        else:
            problem(f"{rel(directory)}/kustomization.yaml lists {entry}, which does not exist")
    for entry in list(kustomization.get("components") or []) + list(extra_components):
        path = os.path.normpath(os.path.join(directory, entry))
        component = read_kustomization(path)
        if component.get("kind") != "Component":
            problem(f"{rel(path)}: listed as a component but its kind is {component.get('kind')!r}")
        objects += assemble(path, listed)
    return objects


def identity(obj):
    meta = obj.get("metadata") or {}
    return (obj.get("apiVersion"), obj.get("kind"), meta.get("namespace", ""), meta.get("name"))


def label(obj):
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def check_prometheus_rule(path, obj):
    groups = (obj.get("spec") or {}).get("groups")
    if not groups:
        problem(f"{rel(path)}: {label(obj)} has no spec.groups")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".rules.yml") as f:
        yaml.safe_dump({"groups": groups}, f)
        f.flush()
        run = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    if run.returncode != 0:
        problem(f"{rel(path)}: promtool check rules on {label(obj)}'s spec:\n{run.stdout}{run.stderr}")
    else:
        print(f"ok    {rel(path)}: {label(obj)}: promtool check rules passed")


def check_unique(variant, objects):
    """Identities of `objects`; an object defined twice is a problem (kustomize refuses it)."""
    seen = {}
    for path, obj in objects:
        if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
            problem(f"{rel(path)}: a document without kind/apiVersion")
            continue
        key = identity(obj)
        if key in seen:
            problem(f"{variant}: {label(obj)} defined twice ({rel(seen[key])}, {rel(path)})")
        seen[key] = path
    return set(seen)


def validate(path, obj):
    passed = []
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            passed.append(version)
        except kubernetes_validate.SchemaNotFoundError:
            if (obj["apiVersion"], obj["kind"]) not in CRD_KINDS:
                problem(f"{rel(path)}: no Kubernetes {version} schema for {obj['apiVersion']} {obj['kind']}")
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path) or "(top level)"
            problem(f"{rel(path)}: {label(obj)} against Kubernetes {version}: {where}: {e.message}")
    if passed:
        print(f"ok    {rel(path)}: {label(obj)} valid for Kubernetes {', '.join(passed)}")
    elif (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
        print(f"crd   {rel(path)}: {label(obj)} ({obj['apiVersion']}): no schema here, checked otherwise")
    if obj["kind"] == "PrometheusRule":
        check_prometheus_rule(path, obj)


def kubectl_build(components):
    """Identities of the objects `kubectl kustomize` builds: the base plus `components`."""
    with tempfile.TemporaryDirectory() as overlay:
        base = os.path.relpath(BASE, overlay)
        lines = ["resources:", f"  - {base}"]
        if components:
            lines.append("components:")
            lines += [f"  - {os.path.join(base, c)}" for c in components]
        with open(os.path.join(overlay, "kustomization.yaml"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        run = subprocess.run(["kubectl", "kustomize", overlay], capture_output=True, text=True)
    if run.returncode != 0:
        problem(f"kubectl kustomize (components {components}) failed:\n{run.stderr}")
        return None
    return {identity(d) for d in yaml.safe_load_all(run.stdout) if d}


def main():
    print(f"kubernetes-validate {kubernetes_validate.__version__}, Kubernetes {', '.join(KUBE_VERSIONS)}")
    optional = sorted(
        d for d in os.listdir(BASE)
        if os.path.isfile(os.path.join(BASE, d, "kustomization.yaml"))
        and read_kustomization(os.path.join(BASE, d)).get("kind") == "Component"
    )
    listed = set()
    variants = {"as shipped": ([], assemble(BASE, listed))}
    for component in optional:
        variants[f"with {component}"] = ([component], assemble(BASE, listed, [component]))

    for root, _, files in os.walk(BASE):
        for name in sorted(files):
            path = os.path.join(root, name)
            if not name.endswith((".yaml", ".yml")) or name == "kustomization.yaml":
                continue
            if any(isinstance(d, dict) and "kind" in d for d in load_documents(path)) and path not in listed:
                problem(f"{rel(path)} holds Kubernetes objects but no kustomization lists it")

    checked = set()
    for _, objects in variants.values():
        for path, obj in objects:
            key = (path, identity(obj)) if isinstance(obj, dict) else None
            if key and key not in checked and "kind" in obj and "apiVersion" in obj:
                checked.add(key)
                validate(path, obj)

    kubectl = shutil.which("kubectl")
    for variant, (components, objects) in variants.items():
        ours = check_unique(variant, objects)
        print(f"ok    {variant}: {len(ours)} objects")
        if kubectl:
            theirs = kubectl_build(components)
            if theirs is not None and theirs != ours:
                problem(f"{variant}: kubectl kustomize builds {sorted(map(str, theirs))}, this script {sorted(map(str, ours))}")
            elif theirs is not None:
                print(f"ok    {variant}: kubectl kustomize builds the same objects")
    if not kubectl:
        print("note  kubectl not installed: the cross-check against `kubectl kustomize` was skipped")

    if problems:
        print(f"kubernetes: {len(problems)} problem(s)")
        return 1
    print("kubernetes: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
