//! What operators copy from `deploy/` must not be broken (SPEC §7):
//!
//! - every `.yaml` / `.yml` (all documents of it) and `.json` file under `deploy/` parses;
//! - every sidecar configuration in the repository (`proxy.yaml` at the root, everything under
//!   `deploy/` and `examples/`) passes `session-sidecar --check`, run as the real binary;
//! - the Kubernetes ConfigMap embeds exactly `deploy/kubernetes/proxy.yaml`, and the
//!   PrometheusRule exactly the groups of `deploy/prometheus/session-sidecar.rules.yml`;
//! - the manifests keep the wiring the docs promise (probes, secret, scrape annotations, the
//!   Service on the sidecar's port), with ports and paths matching the `proxy.yaml` beside
//!   them (also the PodMonitor, compose, the image's HEALTHCHECK, the example prometheus.yml),
//!   and a running sidecar's admin listener serves every path they use;
//! - every metric name in `deploy/` (dashboard, rules, their tests) is on a running sidecar's
//!   `/metrics` or is a recording rule of the rule file, and the dashboard shows every SPEC
//!   metric.
//!
//! There is no Docker engine or Kubernetes API server in CI, so these checks read the files;
//! .ci/ops-checks.sh validates the manifests against the Kubernetes API schemas and the rules
//! with promtool, and tests/prometheus.rs runs the rules and the dashboard's queries in a real
//! Prometheus.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

/// Value given to every `${VAR}` a checked config uses (long enough for any secret).
const TEST_VALUE: &str = "ci0only0test0value0not0a0secret0000000000000000";

/// The metrics SPEC §6 requires; the dashboard must show each of them.
const SPEC_METRICS: &[&str] = &[
    "sidecar_requests_total",
    "sidecar_request_duration_seconds",
    "sidecar_sessions_created_total",
    "sidecar_sessions_regenerated_total",
    "sidecar_sessions_destroyed_total",
    "sidecar_session_loads_total",
    "sidecar_session_writes_total",
    "sidecar_cookies_rejected_total",
    "sidecar_session_set_rejected_total",
    "sidecar_store_duration_seconds",
    "sidecar_store_errors_total",
    "sidecar_upstream_errors_total",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn display(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every file below `dir`, sorted; empty when `dir` does not exist.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn extension(path: &Path) -> &str {
    path.extension().and_then(|e| e.to_str()).unwrap_or("")
}

fn is_yaml(path: &Path) -> bool {
    matches!(extension(path), "yaml" | "yml")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: cannot read: {e}", display(path)))
}

/// All documents of a (possibly multi-document) YAML file.
fn yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).map_err(|e| e.to_string()))
        .collect()
}

fn yaml_documents_of(path: &Path) -> Vec<Value> {
    yaml_documents(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", display(path)))
}

/// A sidecar config: named `proxy*.yaml`, or a YAML mapping with both `listen` and `upstream`.
fn is_sidecar_config(path: &Path) -> bool {
    if !is_yaml(path) {
        return false;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with("proxy") {
        return true;
    }
    let Ok(docs) = yaml_documents(&read(path)) else {
        return false;
    };
    docs.iter()
        .any(|d| d.get("listen").is_some() && d.get("upstream").is_some())
}

/// Names of the `${NAME}` references in a config.
fn env_references(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    names.insert(name.to_string());
                }
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    names
}

/// Runs `session-sidecar --check --config PATH` with every `${VAR}` of the file set.
fn check_config(path: &Path) -> Result<(), String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_session-sidecar"));
    cmd.arg("--check").arg("--config").arg(path);
    cmd.env("SESSION_SECRET", TEST_VALUE);
    for name in env_references(&read(path)) {
        cmd.env(name, TEST_VALUE);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run the binary: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "--check exited with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn deploy_dir() -> PathBuf {
    repo().join("deploy")
}

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let files = files_under(&deploy_dir());
    let mut failures = Vec::new();
    let (mut yaml, mut json) = (0, 0);
    for path in &files {
        if is_yaml(path) {
            yaml += 1;
            if let Err(e) = yaml_documents(&read(path)) {
                failures.push(format!("{}: {e}", display(path)));
            }
        } else if extension(path) == "json" {
            json += 1;
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&read(path)) {
                failures.push(format!("{}: {e}", display(path)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "files that do not parse:\n{}",
        failures.join("\n")
    );
    assert!(
        yaml >= 5 && json >= 1,
        "deploy/ looks incomplete: {yaml} YAML, {json} JSON files"
    );
}

#[test]
fn every_config_under_deploy_and_examples_passes_check() {
    let mut configs: Vec<PathBuf> = Vec::new();
    for dir in ["deploy", "examples"] {
        configs.extend(
            files_under(&repo().join(dir))
                .into_iter()
                .filter(|p| is_sidecar_config(p)),
        );
    }
    for expected in [
        "deploy/kubernetes/proxy.yaml",
        "deploy/compose/proxy.yaml",
        "deploy/systemd/proxy.yaml",
    ] {
        assert!(
            configs.contains(&repo().join(expected)),
            "{expected} is missing (found {:?})",
            configs.iter().map(|p| display(p)).collect::<Vec<_>>()
        );
    }
    let failures: Vec<String> = configs
        .iter()
        .filter_map(|p| {
            check_config(p)
                .err()
                .map(|e| format!("{}: {e}", display(p)))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "configs that fail --check:\n{}",
        failures.join("\n")
    );
}

#[test]
fn repo_root_proxy_yaml_passes_check() {
    let path = repo().join("proxy.yaml");
    if !path.exists() {
        eprintln!("skipped: there is no proxy.yaml at the repository root yet (SPEC §7 wants one, checked here once it exists)");
        return;
    }
    if let Err(e) = check_config(&path) {
        panic!("proxy.yaml: {e}");
    }
}

#[test]
fn a_broken_config_fails_check() {
    // Guards the guard: `--check` must not accept everything.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    std::fs::write(
        &path,
        "listen: \"0.0.0.0:8080\"\nupstream: \"127.0.0.1:3000\"\ncookie:\n  secrets: [\"short\"]\n",
    )
    .unwrap();
    let err = check_config(&path).unwrap_err();
    assert!(err.contains("cookie.secrets[0]"), "{err}");
}

#[test]
fn kubernetes_configmap_embeds_proxy_yaml_verbatim() {
    let dir = deploy_dir().join("kubernetes");
    let expected = read(&dir.join("proxy.yaml"));
    let docs = yaml_documents_of(&dir.join("configmap.yaml"));
    let configmap = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("configmap.yaml holds a ConfigMap");
    let embedded = configmap["data"]["proxy.yaml"]
        .as_str()
        .expect("the ConfigMap has a proxy.yaml key");
    assert!(
        embedded == expected,
        "deploy/kubernetes/configmap.yaml's proxy.yaml differs from deploy/kubernetes/proxy.yaml; copy the file into the ConfigMap (indented under `proxy.yaml: |`)"
    );
}

/// All documents of every YAML file in `deploy/kubernetes`, keyed by nothing: a flat list.
fn kubernetes_objects() -> Vec<Value> {
    files_under(&deploy_dir().join("kubernetes"))
        .into_iter()
        .filter(|p| is_yaml(p) && !is_sidecar_config(p))
        .flat_map(|p| yaml_documents_of(&p))
        .filter(|d| d.get("kind").is_some())
        .collect()
}

fn find_object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("deploy/kubernetes has no {kind} {name}"))
}

#[test]
fn kubernetes_example_wires_probes_secret_scraping_and_service() {
    let objects = kubernetes_objects();
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] != "redis")
        .expect("a Deployment for the app");
    let pod = &deployment["spec"]["template"];
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9091");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    let containers = pod["spec"]["containers"].as_sequence().expect("containers");
    assert!(containers.len() >= 2, "app and sidecar in one pod");
    let sidecar = containers
        .iter()
        .find(|c| c["name"] == "session-sidecar")
        .expect("a session-sidecar container");
    assert_eq!(sidecar["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], "/readyz");
    for resources in ["requests", "limits"] {
        assert!(
            sidecar["resources"][resources]["memory"].is_string(),
            "sidecar resources.{resources}"
        );
    }
    let port_of = |name: &str| -> u64 {
        sidecar["ports"]
            .as_sequence()
            .and_then(|ports| ports.iter().find(|p| p["name"] == name))
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("sidecar port {name}"))
    };
    assert_eq!(port_of("http"), 8080);
    assert_eq!(port_of("admin"), 9091);

    let secret_env = sidecar["env"]
        .as_sequence()
        .and_then(|env| env.iter().find(|e| e["name"] == "SESSION_SECRET"))
        .expect("SESSION_SECRET in the sidecar's env");
    let secret_ref = &secret_env["valueFrom"]["secretKeyRef"];
    let secret_name = secret_ref["name"].as_str().expect("from a Secret");
    let secret = find_object(&objects, "Secret", secret_name);
    let key = secret_ref["key"].as_str().unwrap();
    let placeholder = secret["stringData"][key]
        .as_str()
        .expect("the Secret example holds the key");
    assert!(
        placeholder.len() < 32,
        "the Secret example must be an obvious placeholder the sidecar refuses"
    );

    let configmap_name = pod["spec"]["volumes"]
        .as_sequence()
        .and_then(|v| v.iter().find_map(|v| v["configMap"]["name"].as_str()))
        .expect("config from a ConfigMap volume");
    find_object(&objects, "ConfigMap", configmap_name);
    let config = read(&deploy_dir().join("kubernetes/proxy.yaml"));
    assert!(
        config.contains("\"${SESSION_SECRET}\""),
        "proxy.yaml uses ${{SESSION_SECRET}}"
    );
    let config: Value = serde_yaml::from_str(&config).unwrap();
    assert_eq!(
        config["upstream"]
            .as_str()
            .map(|u| u.starts_with("127.0.0.1:")),
        Some(true),
        "app on loopback"
    );

    let services: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Service").collect();
    let labels = &pod["metadata"]["labels"];
    let app_service = services
        .iter()
        .find(|s| {
            s["spec"]["selector"].as_mapping().is_some_and(|sel| {
                !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
        })
        .expect("a Service selecting the app's pods");
    let target = &app_service["spec"]["ports"][0]["targetPort"];
    assert!(
        target == "http" || target.as_u64() == Some(8080),
        "the Service targets the sidecar: {target:?}"
    );
}

#[test]
fn compose_demo_refers_to_files_that_exist() {
    let dir = deploy_dir().join("compose");
    let compose = &yaml_documents_of(&dir.join("compose.yaml"))[0];
    let services = &compose["services"];
    for name in ["sidecar", "app", "redis"] {
        assert!(
            services.get(name).is_some(),
            "compose.yaml has no service {name}"
        );
    }
    let build = &services["sidecar"]["build"];
    let context = dir.join(build["context"].as_str().expect("sidecar build context"));
    let dockerfile = context.join(build["dockerfile"].as_str().expect("sidecar dockerfile"));
    assert!(
        dockerfile.is_file(),
        "{} does not exist",
        dockerfile.display()
    );
    assert!(
        context.join("Cargo.toml").is_file(),
        "the build context is the repository root"
    );
    for service in ["sidecar", "app"] {
        for volume in services[service]["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(
                    dir.join(source).exists(),
                    "{service} mounts {source}, which does not exist"
                );
            }
        }
    }
}

#[test]
fn dockerfile_builds_the_binary_and_runs_unprivileged() {
    let text = read(&deploy_dir().join("docker/Dockerfile"));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(
        lines.iter().filter(|l| l.starts_with("FROM ")).count() >= 2,
        "multi-stage build"
    );
    assert!(text.contains("cargo build --release --locked --bin session-sidecar"));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("EXPOSE") && l.contains("8080") && l.contains("9091")));
    assert!(lines.iter().any(|l| l.starts_with("HEALTHCHECK")));
    assert!(
        text.contains("--probe"),
        "the HEALTHCHECK uses the binary's --probe"
    );
    let user = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(
        !user.contains("root") && !user.contains(" 0"),
        "runs as a non-root user: {user}"
    );
    let ignore = read(&repo().join(".dockerignore"));
    assert!(
        ignore.lines().any(|l| l.trim_end_matches('/') == "target"),
        ".dockerignore leaves out target/"
    );
}

// -------------------------------------------------------------------------------------------
// Metric names in the dashboard, the rules and the docs, against what a running sidecar
// exposes.
// -------------------------------------------------------------------------------------------

/// The Prometheus rule file operators load (deploy/prometheus/).
fn rules_file() -> PathBuf {
    deploy_dir().join("prometheus/session-sidecar.rules.yml")
}

/// Metric names in `text`: `sidecar_*` identifiers as written (series names such as
/// `…_bucket` included) and recording-rule names `level:sidecar_…:operations`, whole.
/// Identifiers right after a `-` (`session-sidecar_x`) or inside another word are not names.
fn metric_names(text: &str) -> BTreeSet<String> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut start = None;
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        match (is_word(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                start = None;
                let token = &text[s..i];
                if text[..s].ends_with('-') {
                    continue;
                }
                let parts: Vec<&str> = token.split(':').collect();
                let is_metric = match parts.as_slice() {
                    [name] => name.starts_with("sidecar_") && *name != "sidecar_",
                    [level, metric, ops] => {
                        !level.is_empty() && metric.starts_with("sidecar_") && !ops.is_empty()
                    }
                    _ => false,
                };
                if is_metric {
                    names.insert(token.to_string());
                }
            }
            _ => {}
        }
    }
    names
}

fn is_recording_rule_name(name: &str) -> bool {
    name.contains(':')
}

/// The metric family a series name belongs to: `x_bucket` / `x_sum` / `x_count` of a
/// histogram `x` in `exposed`, else the name itself.
fn family<'a>(name: &'a str, exposed: &BTreeMap<String, String>) -> &'a str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| {
            name.strip_suffix(suffix)
                .filter(|base| exposed.get(*base).map(String::as_str) == Some("histogram"))
        })
        .unwrap_or(name)
}

/// Recording rules of the rule file: name -> expression.
fn recording_rules() -> BTreeMap<String, String> {
    let docs = yaml_documents_of(&rules_file());
    let mut rules = BTreeMap::new();
    for group in docs[0]["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            if let Some(name) = rule["record"].as_str() {
                let expr = rule["expr"].as_str().expect("expr").to_string();
                assert!(
                    rules.insert(name.to_string(), expr).is_none(),
                    "{name} recorded twice"
                );
            }
        }
    }
    rules
}

/// Metric families (name -> type) a real sidecar exposes on /metrics, after traffic on both
/// listeners so that families created on first use are there too.
async fn exposed_metrics() -> BTreeMap<String, String> {
    let backend = common::Backend::start().await;
    let sidecar = common::Sidecar::start(&common::Settings::memory(), &backend.addr());
    let mut client = common::Client::new(&sidecar);
    client.set(r#"{"a":1}"#).await;
    client.get("/", &[]).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        reqwest::get(sidecar.admin_url(path)).await.unwrap();
    }
    let text = reqwest::get(sidecar.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let types: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
        .collect();
    assert!(
        types.len() >= SPEC_METRICS.len(),
        "too few metric families on /metrics:\n{text}"
    );
    types
}

#[tokio::test]
async fn deploy_files_name_only_metrics_the_sidecar_exposes() {
    let exposed = exposed_metrics().await;
    let recorded = recording_rules();
    let mut files = files_under(&deploy_dir());
    files.extend(files_under(&repo().join("docs")));
    let mut unknown = Vec::new();
    for path in files
        .iter()
        .filter(|p| matches!(extension(p), "json" | "yaml" | "yml" | "md"))
    {
        for name in metric_names(&read(path)) {
            let known = if is_recording_rule_name(&name) {
                recorded.contains_key(&name)
            } else {
                exposed.contains_key(family(&name, &exposed))
            };
            if !known {
                unknown.push(format!("{}: {name}", display(path)));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "names that are neither on a running sidecar's /metrics nor recording rules of {}:\n{}",
        display(&rules_file()),
        unknown.join("\n")
    );
}

#[tokio::test]
async fn recording_rules_follow_the_naming_convention_and_are_used() {
    let exposed = exposed_metrics().await;
    let recorded = recording_rules();
    assert!(!recorded.is_empty());
    let rules_text = read(&rules_file());
    let dashboard = read(&deploy_dir().join("grafana/session-sidecar.json"));
    for (name, expr) in &recorded {
        // level:metric:operations, where metric is what the expression reads (a counter
        // without its `_total`, or a histogram series).
        let metric = name.split(':').nth(1).unwrap();
        let reads = metric_names(expr);
        assert!(
            reads.iter().any(|r| {
                r == metric || *r == format!("{metric}_total") || name_of_rule_reads(r, metric)
            }),
            "{name}: the metric part names none of what it reads ({reads:?})"
        );
        for r in reads.iter().filter(|r| !is_recording_rule_name(r)) {
            assert!(
                exposed.contains_key(family(r, &exposed)),
                "{name} reads {r}, which /metrics does not have"
            );
        }
        // Read by the dashboard or by a rule other than its own definition.
        let uses = rules_text.matches(name.as_str()).count() - 1;
        assert!(
            uses > 0 || dashboard.contains(name.as_str()),
            "{name} is recorded but neither the dashboard nor an alert reads it"
        );
    }
}

/// A recording rule built on another one keeps its metric part.
fn name_of_rule_reads(read: &str, metric: &str) -> bool {
    is_recording_rule_name(read) && read.split(':').nth(1) == Some(metric)
}

/// The raw metrics behind `names`: recording-rule names replaced by what their expressions
/// read, recursively; series suffixes kept.
fn raw_metrics(names: &BTreeSet<String>, recorded: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<String> = names.iter().cloned().collect();
    while let Some(name) = todo.pop() {
        match recorded.get(&name) {
            Some(expr) => todo.extend(metric_names(expr)),
            None => {
                out.insert(name);
            }
        }
    }
    out
}

fn dashboard_exprs() -> String {
    let text = read(&deploy_dir().join("grafana/session-sidecar.json"));
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(target["expr"].as_str().unwrap_or(""));
            exprs.push('\n');
        }
    }
    exprs
}

#[test]
fn dashboard_shows_every_spec_metric() {
    let shown: BTreeSet<String> =
        raw_metrics(&metric_names(&dashboard_exprs()), &recording_rules())
            .into_iter()
            .map(|name| {
                ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name)
                    .to_string()
            })
            .collect();
    let missing: Vec<&&str> = SPEC_METRICS
        .iter()
        .filter(|m| !shown.contains(**m))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard does not show {missing:?}"
    );
}

#[test]
fn dashboard_and_alerts_show_cross_origin_refusals() {
    let rules = read(&rules_file());
    for (what, text) in [("dashboard", dashboard_exprs()), ("rule file", rules)] {
        assert!(
            metric_names(&text).contains("sidecar_cross_origin_rejected_total"),
            "the {what} does not show sidecar_cross_origin_rejected_total (SPEC §10)"
        );
    }
}

#[test]
fn metric_name_scanner_finds_series_and_recording_rules_only() {
    let names = metric_names(
        "rate(sidecar_store_duration_seconds_bucket[5m]) session_sidecar_x session-sidecar_y \
         sidecar_requests_total instance:sidecar_requests:rate5m http://127.0.0.1:9091/metrics \
         name: sidecar_ a:b:c",
    );
    let expected: BTreeSet<String> = [
        "sidecar_store_duration_seconds_bucket",
        "sidecar_requests_total",
        "instance:sidecar_requests:rate5m",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names, expected);
}

// -------------------------------------------------------------------------------------------
// The prometheus-operator component: the same rules as deploy/prometheus, scraping the same
// endpoint as the annotations.
// -------------------------------------------------------------------------------------------

#[test]
fn prometheus_rule_holds_exactly_the_rule_file() {
    let rules = &yaml_documents_of(&rules_file())[0];
    let objects = kubernetes_objects();
    let rule = find_object(&objects, "PrometheusRule", "session-sidecar");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert!(
        rule["spec"]["groups"] == rules["groups"],
        "deploy/kubernetes/prometheus-operator/prometheusrule.yaml's spec.groups differ from \
         {}; regenerate it (the command is in its header)",
        display(&rules_file())
    );
}

#[test]
fn kustomize_component_is_optional_and_lists_the_operator_objects() {
    let dir = deploy_dir().join("kubernetes");
    let base = &yaml_documents_of(&dir.join("kustomization.yaml"))[0];
    assert!(
        base.get("components").is_none(),
        "the base must apply without prometheus-operator's CRDs: leave the component commented out"
    );
    let component = &yaml_documents_of(&dir.join("prometheus-operator/kustomization.yaml"))[0];
    assert_eq!(component["kind"], "Component");
    let listed: BTreeSet<&str> = component["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let expected: BTreeSet<&str> = ["prometheusrule.yaml", "podmonitor.yaml"].into();
    assert_eq!(listed, expected);
}

// -------------------------------------------------------------------------------------------
// Ports, probes and scrape targets in the manifests match the sidecar config beside them.
// -------------------------------------------------------------------------------------------

/// `host` and `port` of a `host:port` value of a sidecar config.
fn host_port(config: &Value, key: &str) -> (String, u16) {
    let value = config[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing"));
    let (host, port) = value.rsplit_once(':').expect("host:port");
    (host.to_string(), port.parse().expect("a port number"))
}

fn config_of(path: &str) -> Value {
    serde_yaml::from_str(&read(&deploy_dir().join(path))).expect("a YAML config")
}

/// A duration of the config (`20s`, `1m`) in seconds.
fn seconds(value: &Value) -> u64 {
    let text = value.as_str().expect("a duration");
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap());
    let n: u64 = number.parse().unwrap();
    match unit {
        "s" => n,
        "m" => n * 60,
        other => panic!("unexpected unit {other} in {text}"),
    }
}

/// A container port given by name or number, resolved against the container's ports.
fn container_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a port name or number");
    container["ports"]
        .as_sequence()
        .and_then(|ports| ports.iter().find(|p| p["name"] == name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

fn app_deployment(objects: &[Value]) -> &Value {
    objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] != "redis")
        .expect("a Deployment for the app")
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_sequence()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

/// Every HTTP path the manifests expect the admin listener to serve: probe paths, the
/// prometheus.io/path annotation and the PodMonitor's paths.
fn kubernetes_admin_paths(objects: &[Value]) -> BTreeSet<String> {
    let pod = &app_deployment(objects)["spec"]["template"];
    let sidecar = container(pod, "session-sidecar");
    let mut paths = BTreeSet::new();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(path) = sidecar[probe]["httpGet"]["path"].as_str() {
            paths.insert(path.to_string());
        }
    }
    paths.insert(
        pod["metadata"]["annotations"]["prometheus.io/path"]
            .as_str()
            .expect("prometheus.io/path")
            .to_string(),
    );
    let monitor = find_object(objects, "PodMonitor", "session-sidecar");
    for endpoint in monitor["spec"]["podMetricsEndpoints"]
        .as_sequence()
        .expect("podMetricsEndpoints")
    {
        paths.insert(endpoint["path"].as_str().unwrap_or("/metrics").to_string());
    }
    paths
}

#[test]
fn kubernetes_ports_probes_and_scraping_match_proxy_yaml() {
    let config = config_of("kubernetes/proxy.yaml");
    let (_, listen) = host_port(&config, "listen");
    let (admin_host, admin) = host_port(&config, "admin_listen");
    let (upstream_host, upstream) = host_port(&config, "upstream");
    assert_eq!(
        admin_host, "0.0.0.0",
        "the kubelet and Prometheus reach the admin listener on the pod IP"
    );

    let objects = kubernetes_objects();
    let deployment = app_deployment(&objects);
    let pod = &deployment["spec"]["template"];
    let sidecar = container(pod, "session-sidecar");
    assert_eq!(container_port(sidecar, &"http".into()), u64::from(listen));
    assert_eq!(container_port(sidecar, &"admin".into()), u64::from(admin));
    for probe in ["livenessProbe", "readinessProbe"] {
        let port = &sidecar[probe]["httpGet"]["port"];
        assert_eq!(
            container_port(sidecar, port),
            u64::from(admin),
            "{probe} goes to the admin listener"
        );
    }

    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(admin.to_string().as_str()),
        "prometheus.io/port is admin_listen's port"
    );
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    let monitor = find_object(&objects, "PodMonitor", "session-sidecar");
    let labels = &pod["metadata"]["labels"];
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("PodMonitor selector.matchLabels");
    assert!(
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the PodMonitor selects the app's pods"
    );
    for endpoint in monitor["spec"]["podMetricsEndpoints"]
        .as_sequence()
        .expect("podMetricsEndpoints")
    {
        assert_eq!(
            container_port(sidecar, &endpoint["port"]),
            u64::from(admin),
            "the PodMonitor scrapes the admin listener"
        );
        assert_eq!(endpoint["path"], "/metrics");
    }

    let service = find_object(&objects, "Service", "app");
    for port in service["spec"]["ports"].as_sequence().expect("ports") {
        assert_eq!(
            container_port(sidecar, &port["targetPort"]),
            u64::from(listen),
            "the Service sends clients to the sidecar's listen port"
        );
    }

    let app = container(pod, "app");
    assert_eq!(env_value(app, "HOST"), Some(upstream_host.as_str()));
    assert_eq!(
        env_value(app, "PORT"),
        Some(upstream.to_string().as_str()),
        "the app listens where the sidecar's upstream points"
    );

    // SIGTERM -> preStop pause -> drain for grace_period, all before the kill.
    let pre_stop = sidecar["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("a preStop sleep");
    let kill_after = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        pre_stop + seconds(&config["grace_period"]) < kill_after,
        "preStop ({pre_stop}s) + grace_period must end before terminationGracePeriodSeconds ({kill_after}s)"
    );
}

#[test]
fn compose_prometheus_and_docker_ports_match_their_configs() {
    let config = config_of("compose/proxy.yaml");
    let (_, listen) = host_port(&config, "listen");
    let (_, admin) = host_port(&config, "admin_listen");
    let (_, upstream) = host_port(&config, "upstream");
    let compose = &yaml_documents_of(&deploy_dir().join("compose/compose.yaml"))[0];
    let published: BTreeSet<u16> = compose["services"]["sidecar"]["ports"]
        .as_sequence()
        .expect("sidecar ports")
        .iter()
        .map(|p| {
            let p = p.as_str().expect("a port mapping");
            p.rsplit(':').next().unwrap().parse().expect("a port")
        })
        .collect();
    assert_eq!(
        published,
        [listen, admin].into(),
        "compose publishes listen and admin_listen"
    );
    assert_eq!(
        compose["services"]["app"]["environment"]["PORT"].as_str(),
        Some(upstream.to_string().as_str())
    );

    // The image's HEALTHCHECK probes the admin listener of the compose and Kubernetes configs.
    let dockerfile = read(&deploy_dir().join("docker/Dockerfile"));
    let probe = format!("http://127.0.0.1:{admin}/healthz");
    assert!(
        dockerfile.contains(&probe),
        "the HEALTHCHECK probes {probe}"
    );
    let (_, kubernetes_admin) = host_port(&config_of("kubernetes/proxy.yaml"), "admin_listen");
    assert_eq!(kubernetes_admin, admin);

    // The example Prometheus scrapes the host sidecar of deploy/systemd.
    let (host, port) = host_port(&config_of("systemd/proxy.yaml"), "admin_listen");
    let prometheus = read(&deploy_dir().join("prometheus/prometheus.yml"));
    assert!(
        prometheus.contains(&format!("\"{host}:{port}\"")),
        "deploy/prometheus/prometheus.yml scrapes {host}:{port}"
    );
}

#[tokio::test]
async fn the_admin_listener_serves_every_path_the_manifests_use() {
    let paths = kubernetes_admin_paths(&kubernetes_objects());
    assert!(paths.len() >= 3, "{paths:?}");
    let backend = common::Backend::start().await;
    let sidecar = common::Sidecar::start(&common::Settings::memory(), &backend.addr());
    for path in &paths {
        let status = reqwest::get(sidecar.admin_url(path))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "GET {path} on the admin listener");
    }
}
