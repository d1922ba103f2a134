//! SPEC §6 and issue "Operate it": metrics, logs and restarts, through the real binary.
//!
//! Guards: every SPEC §6 metric is exposed on the admin listener (and only there) and moves
//! exactly when it should; the access log (text and JSON) carries the request and session
//! outcome but never a cookie value, ID, store key or secret; a SIGQUIT + `--upgrade`
//! restart hands the listening socket over without failing a request.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const SPEC_METRICS: &[&str] = &[
    "sidecar_requests_total",
    "sidecar_request_duration_seconds_bucket",
    "sidecar_sessions_created_total",
    "sidecar_sessions_regenerated_total",
    "sidecar_sessions_destroyed_total",
    "sidecar_session_loads_total",
    "sidecar_session_writes_total",
    "sidecar_cookies_rejected_total",
    "sidecar_session_set_rejected_total",
    "sidecar_store_duration_seconds_bucket",
    "sidecar_store_errors_total",
    "sidecar_upstream_errors_total",
];

#[tokio::test]
async fn every_metric_moves_when_it_should() {
    let mut redis = Redis::start();
    let mut backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::redis(&redis), &backend.addr());
    let text = reqwest::get(sidecar.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in SPEC_METRICS {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(
        text.contains("le=\"0.0001\"") && text.contains("le=\"5\""),
        "buckets 100µs..5s"
    );
    // Not on the client listener: there, /metrics is the app's.
    let mut client = Client::new(&sidecar);
    assert_eq!(client.get("/metrics", &[]).await.body["path"], "/metrics");

    let m = |name: &'static str| {
        let sidecar = &sidecar;
        async move { sidecar.metric(name).await }
    };
    // Requests are counted in pingora's logging phase, just after the response is sent.
    let settled = |name: &'static str, want: f64| {
        let sidecar = &sidecar;
        async move {
            eventually(Duration::from_secs(2), || async {
                sidecar.metric(name).await == want
            })
            .await;
            sidecar.metric(name).await
        }
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let requests_200 = m("sidecar_requests_total{code=\"200\"}").await;
    client.set(r#"{"a":1}"#).await;
    assert_eq!(m("sidecar_sessions_created_total").await, 1.0);
    assert_eq!(m("sidecar_session_writes_total{result=\"ok\"}").await, 1.0);
    assert_eq!(m("sidecar_session_loads_total{result=\"hit\"}").await, 0.0);
    client.get("/", &[]).await;
    assert_eq!(m("sidecar_session_loads_total{result=\"hit\"}").await, 1.0);
    assert_eq!(
        m("sidecar_session_writes_total{result=\"ok\"}").await,
        1.0,
        "a read writes nothing"
    );
    client.action("regenerate").await;
    assert_eq!(m("sidecar_sessions_regenerated_total").await, 1.0);
    client
        .get("/", &[("x-reply-x-session-set", r#"{"__x":1}"#)])
        .await;
    assert_eq!(
        m("sidecar_session_set_rejected_total{reason=\"reserved_key\"}").await,
        1.0
    );
    let mut stale = client.clone();
    client.action("destroy").await;
    assert_eq!(
        m("sidecar_sessions_destroyed_total{reason=\"app\"}").await,
        1.0
    );
    stale.get("/", &[]).await;
    assert_eq!(m("sidecar_session_loads_total{result=\"miss\"}").await, 1.0);
    assert_eq!(
        m("sidecar_cookies_rejected_total{reason=\"expired\"}").await,
        1.0
    );
    let mut forged = Client::new(&sidecar);
    forged.cookie = Some("nonsense".into());
    forged.get("/", &[]).await;
    assert_eq!(
        m("sidecar_cookies_rejected_total{reason=\"malformed\"}").await,
        1.0
    );
    assert_eq!(
        settled("sidecar_requests_total{code=\"200\"}", requests_200 + 7.0).await,
        requests_200 + 7.0
    );
    assert!(m("sidecar_request_duration_seconds_count").await >= 7.0);
    assert!(m("sidecar_store_duration_seconds_count{op=\"load\"}").await >= 2.0);
    assert!(m("sidecar_store_duration_seconds_count{op=\"create\"}").await >= 1.0);

    // Store errors, by operation.
    let mut c = Client::new(&sidecar);
    c.set(r#"{"b":1}"#).await;
    redis.kill();
    assert_eq!(c.get("/", &[]).await.status, 503);
    assert_eq!(
        m("sidecar_session_loads_total{result=\"error\"}").await,
        1.0
    );
    assert_eq!(m("sidecar_store_errors_total{op=\"load\"}").await, 1.0);
    assert_eq!(
        settled("sidecar_requests_total{code=\"503\"}", 1.0).await,
        1.0
    );
    let mut anon = Client::new(&sidecar);
    anon.set(r#"{"c":1}"#).await;
    assert_eq!(m("sidecar_store_errors_total{op=\"create\"}").await, 1.0);
    assert_eq!(
        m("sidecar_session_writes_total{result=\"error\"}").await,
        1.0
    );
    let start = Instant::now();
    assert_eq!(
        reqwest::get(sidecar.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        503
    );
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "readyz answers within store.timeout"
    );
    redis.restart();
    assert!(sidecar.becomes_ready(Duration::from_secs(5)).await);

    // Upstream errors.
    backend.stop().await;
    assert_eq!(anon.get("/", &[]).await.status, 502);
    assert_eq!(settled("sidecar_upstream_errors_total", 1.0).await, 1.0);
    assert_eq!(
        settled("sidecar_requests_total{code=\"502\"}", 1.0).await,
        1.0
    );
}

fn assert_no_secrets(log: &str, cookies: &[String], redis_keys: &[String]) {
    assert!(!log.contains(SECRET), "secret in log");
    for c in cookies {
        let (id, sig) = c.split_once('.').unwrap();
        assert!(!log.contains(id), "session ID in log:\n{log}");
        assert!(!log.contains(sig), "cookie signature in log");
    }
    for k in redis_keys {
        let digest = k.trim_start_matches("session:");
        assert!(!log.contains(digest), "store key in log");
    }
}

async fn exercise(sidecar: &Sidecar) -> Vec<String> {
    let mut cookies = Vec::new();
    let mut c = Client::new(sidecar);
    c.set(r#"{"user":"alice"}"#).await;
    cookies.push(c.cookie.clone().unwrap());
    c.get("/private/path?token=abc", &[]).await;
    c.action("regenerate").await;
    cookies.push(c.cookie.clone().unwrap());
    let mut tampered = c.clone();
    let mut v = tampered.cookie.clone().unwrap().into_bytes();
    v[3] ^= 1;
    tampered.cookie = Some(String::from_utf8(v).unwrap());
    tampered.get("/", &[]).await;
    c.action("destroy").await;
    cookies
}

#[tokio::test]
async fn access_log_tells_the_outcome_and_never_an_id() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::redis(&redis), &backend.addr());
    let cookies = exercise(&sidecar).await;
    let keys = redis.keys("session:*");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = sidecar.log();
    for outcome in ["created", "hit", "regenerated", "rejected", "destroyed"] {
        assert!(
            log.contains(&format!("session=\"{outcome}\"")),
            "no {outcome} in:\n{log}"
        );
    }
    assert!(
        log.contains("path=\"/private/path\"") && !log.contains("token=abc"),
        "path without query"
    );
    assert_no_secrets(&log, &cookies, &keys);
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let mut settings = Settings::redis(&redis);
    settings.log_format = "json";
    let sidecar = Sidecar::start(&settings, &backend.addr());
    let cookies = exercise(&sidecar).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = sidecar.log();
    let mut access = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["target"] == "access" {
            access += 1;
            assert!(
                v["status"].is_number() && v["session"].is_string() && v["method"] == "GET",
                "{v}"
            );
        }
    }
    assert_eq!(access, 5);
    assert_no_secrets(&log, &cookies, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_upgrade_hands_over_without_failing_a_request() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let mut old = Sidecar::start(&Settings::redis(&redis), &backend.addr());
    let mut client = Client::new(&old);
    client.set(r#"{"kept":true}"#).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let cookie = client.cookie.clone();
        let base = format!("http://127.0.0.1:{}", old.port);
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // A new connection each time, as clients arriving during the restart would.
                let mut c = Client::for_base(base.clone());
                c.cookie = cookie.clone();
                match c.try_get("/", &[("connection", "close")]).await {
                    Ok(r) if r.status == 200 && r.session() == json!({"kept": true}) => ok += 1,
                    Ok(r) => failed.push(format!("status {} {}", r.status, r.text)),
                    Err(e) => failed.push(format!("{e:?}")),
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut new = old.spawn_upgrade();
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.signal("QUIT");
    let exited = tokio::task::block_in_place(|| old.wait_exit(Duration::from_secs(15)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = load.await.unwrap();
    let _ = new.kill();
    let _ = new.wait();
    assert!(exited, "the old process exits after handing over");
    assert!(ok > 20, "only {ok} requests went through");
    assert!(
        failed.is_empty(),
        "requests failed during the hand-over ({ok} ok): {failed:?}"
    );
}
