//! SPEC §6 against the real consumer: a real Prometheus scrapes a real sidecar.
//!
//! Guards:
//! - Prometheus (Debian's `prometheus`, started by the test on a free loopback port with its
//!   own config and storage) scrapes the admin listener every second, and its HTTP API then
//!   holds exactly the sessions and requests the test drove: `sidecar_sessions_created_total`,
//!   `sidecar_request_duration_seconds_count`, `sidecar_requests_total{code="200"}`;
//! - it loads deploy/prometheus/session-sidecar.rules.yml as shipped: every rule evaluates
//!   without error on the real series, the recording rules produce data, and an alert without
//!   `for` (SessionSidecarSetRejected) fires when the app sends an invalid X-Session-Set;
//! - every query of the Grafana dashboard is valid PromQL for that Prometheus and returns data,
//!   except where it reads a metric this sidecar does not expose;
//! - `promtool check metrics` finds no naming or exposition problem in `/metrics`.
//!
//! Without `prometheus` or `promtool` on PATH these tests fail and say to run
//! scripts/install-deps (CI does); they never pass silently.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `name` on PATH, or a failure that says how to get it.
fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: run scripts/install-deps (it installs Debian's \
                 prometheus package, which brings prometheus and promtool; CI runs it)"
            )
        })
}

/// A Prometheus server of the test's own, scraping `target` every second and evaluating
/// `rule_file` every second.
struct Prometheus {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str, rule_file: &Path) -> Prometheus {
        let binary = tool("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - \"{}\"\n\
                 scrape_configs:\n  - job_name: sidecar\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rule_file.display()
            ),
        )
        .unwrap();
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let mut child = Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("prometheus starts");
            if wait_ready(&mut child, port, Duration::from_secs(30)) {
                return Prometheus { port, child, dir };
            }
            // Most likely the port was taken meanwhile: try another.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "prometheus did not start:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = format!("http://127.0.0.1:{}/api/v1/{path}", self.port);
        let reply: Value = reqwest::Client::new()
            .get(&url)
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        reply
    }

    /// The result of an instant query: (labels, value) per series, or the API's error.
    async fn query(&self, promql: &str) -> Result<Vec<(Value, f64)>, String> {
        let reply = self.api("query", &[("query", promql)]).await;
        if reply["status"] != "success" {
            return Err(format!("{promql}: {reply}"));
        }
        Ok(reply["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let value = s["value"][1].as_str().unwrap().parse().unwrap();
                (s["metric"].clone(), value)
            })
            .collect())
    }

    /// The single value of `promql`, once it equals `want` (or what it was at the timeout).
    async fn settled(&self, promql: &str, want: f64) -> Option<f64> {
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            last = self
                .query(promql)
                .await
                .unwrap()
                .first()
                .map(|(_, value)| *value);
            if last == Some(want) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        last
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True once `/-/ready` on `port` answers 200 while `child` runs.
fn wait_ready(child: &mut Child, port: u16, timeout: Duration) -> bool {
    let ready = || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n").ok()?;
        let mut reply = String::new();
        std::io::Read::read_to_string(&mut stream, &mut reply).ok()?;
        Some(reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"))
    };
    wait_until(timeout, || {
        matches!(child.try_wait(), Ok(Some(_))) || ready().unwrap_or(false)
    }) && matches!(child.try_wait(), Ok(None))
}

/// `sidecar_*` names (not recording rules) that `expr` reads.
fn raw_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.starts_with("sidecar_"))
        .map(str::to_string)
        .collect()
}

fn dashboard_exprs() -> Vec<String> {
    let path = repo().join("deploy/grafana/session-sidecar.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_string))
        .collect()
}

async fn scrape(sidecar: &Sidecar) -> String {
    reqwest::get(sidecar.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_sessions_and_requests_that_were_driven() {
    let rules = repo().join("deploy/prometheus/session-sidecar.rules.yml");
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::memory(), &backend.addr());
    let target = format!("127.0.0.1:{}", sidecar.admin_port);
    // Readiness checks, like a kubelet's, before Prometheus first looks.
    for _ in 0..2 {
        assert_eq!(sidecar.readyz().await, 200);
    }
    let prometheus = Prometheus::start(&target, &rules);
    let up = format!("up{{job=\"sidecar\", instance=\"{target}\"}}");
    assert_eq!(
        prometheus.settled(&up, 1.0).await,
        Some(1.0),
        "Prometheus does not scrape the sidecar:\n{}",
        prometheus.log()
    );
    // One scrape before any traffic, so rates over the traffic are defined.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    const SESSIONS: usize = 5;
    const READS_PER_SESSION: usize = 2;
    const ANONYMOUS: usize = 3;
    for i in 0..SESSIONS {
        let mut client = Client::new(&sidecar);
        let reply = client.set(&format!(r#"{{"user":{i}}}"#)).await;
        assert_eq!(reply.status, 200);
        assert!(client.cookie.is_some(), "session {i} created");
        for _ in 0..READS_PER_SESSION {
            assert_eq!(client.session().await["user"], i);
        }
    }
    let mut anonymous = Client::new(&sidecar);
    for _ in 0..ANONYMOUS {
        assert_eq!(anonymous.get("/", &[]).await.status, 200);
    }
    // An app bug: a reserved key. Rejected whole, counted, the response still a 200.
    let bad = anonymous.set(r#"{"__admin":true}"#).await;
    assert_eq!(bad.status, 200);
    assert!(anonymous.cookie.is_none());
    let requests = (SESSIONS * (1 + READS_PER_SESSION) + ANONYMOUS + 1) as f64;

    let selector = format!("{{job=\"sidecar\", instance=\"{target}\"}}");
    let created = format!("sidecar_sessions_created_total{selector}");
    assert_eq!(
        prometheus.settled(&created, SESSIONS as f64).await,
        Some(SESSIONS as f64),
        "{created}"
    );
    let count = format!("sidecar_request_duration_seconds_count{selector}");
    assert_eq!(
        prometheus.settled(&count, requests).await,
        Some(requests),
        "{count}"
    );
    let ok = "sidecar_requests_total{job=\"sidecar\", code=\"200\"}";
    assert_eq!(prometheus.settled(ok, requests).await, Some(requests));
    let hits = "sidecar_session_loads_total{job=\"sidecar\", result=\"hit\"}";
    let want_hits = (SESSIONS * READS_PER_SESSION) as f64;
    assert_eq!(prometheus.settled(hits, want_hits).await, Some(want_hits));
    let buckets = prometheus
        .query("sidecar_request_duration_seconds_bucket{job=\"sidecar\", le=\"+Inf\"}")
        .await
        .unwrap();
    assert_eq!(buckets.len(), 1);
    assert_eq!(
        buckets[0].1, requests,
        "the +Inf bucket holds every request"
    );

    // The shipped rules, evaluated by Prometheus on these series.
    assert!(
        eventually(Duration::from_secs(30), || async {
            prometheus
                .query("sum(instance_code:sidecar_requests:rate5m{job=\"sidecar\"}) > 0")
                .await
                .map(|r| !r.is_empty())
                .unwrap_or(false)
        })
        .await,
        "the recording rules produce no request rate"
    );
    let groups = prometheus.api("rules", &[]).await["data"]["groups"].clone();
    let mut rule_count = 0;
    for group in groups.as_array().expect("rule groups") {
        for rule in group["rules"].as_array().unwrap() {
            rule_count += 1;
            assert_eq!(
                rule["health"], "ok",
                "rule {} fails on real series: {}",
                rule["name"], rule["lastError"]
            );
        }
    }
    assert!(rule_count >= 10, "only {rule_count} rules loaded");

    // An alert without `for` fires on the real counter.
    assert!(
        eventually(Duration::from_secs(30), || async {
            let alerts = prometheus.api("alerts", &[]).await;
            alerts["data"]["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| {
                    a["labels"]["alertname"] == "SessionSidecarSetRejected"
                        && a["labels"]["reason"] == "reserved_key"
                        && a["state"] == "firing"
                })
        })
        .await,
        "SessionSidecarSetRejected does not fire: {}",
        prometheus.api("alerts", &[]).await
    );

    // Every dashboard query, as Grafana would send it for "All" jobs and instances.
    let exposed = scrape(&sidecar).await;
    let mut empty = Vec::new();
    for expr in dashboard_exprs() {
        let promql = expr
            .replace("$job", "sidecar")
            .replace("$instance", ".*")
            .replace("$__rate_interval", "1m");
        let result = prometheus.query(&promql).await;
        let series = result.unwrap_or_else(|e| panic!("the dashboard's query is invalid: {e}"));
        let reads_absent_metric = raw_names(&expr)
            .iter()
            .any(|name| !exposed.contains(name.as_str()));
        if series.is_empty() && !reads_absent_metric {
            empty.push(promql);
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data against a live sidecar:\n{}",
        empty.join("\n")
    );
}

#[tokio::test]
async fn promtool_finds_no_problem_in_the_metrics_exposition() {
    let promtool = tool("promtool");
    let mut redis = Redis::start();
    let backend = Backend::start().await;
    // A Redis store with the user index, so every store operation label shows up.
    let mut settings = Settings::redis(&redis);
    settings.session_extra = "  user_field: user\n".to_string();
    let sidecar = Sidecar::start(&settings, &backend.addr());
    let mut client = Client::new(&sidecar);
    client.set(r#"{"user":"42"}"#).await;
    client.get("/", &[]).await;
    client.action("regenerate").await;
    client.set(r#"{"__x":1}"#).await;
    client.action("destroy").await;
    client
        .get("/", &[("cookie", &format!("{COOKIE}=forged.value"))])
        .await;
    sidecar.readyz().await;
    redis.kill();
    client.set(r#"{"user":"43"}"#).await;
    assert_eq!(sidecar.readyz().await, 503);
    let text = scrape(&sidecar).await;
    for family in ["sidecar_admin_requests_total", "sidecar_store_errors_total"] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }

    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics ({}):\n{report}",
        out.status
    );
}
