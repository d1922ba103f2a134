//! SPEC §5 (store failure) and upstream failure, through the real binary.
//!
//! Guards: fail_closed answers 503 + Retry-After for cookie-bearing requests and for changes
//! it cannot save, lets cookie-less reads through, and never waits past store.timeout;
//! fail_open shows `{}` and drops (and counts) unsaved changes; neither clears the client's
//! cookie, not even for a logout that could not be saved; both recover by themselves when Redis returns, with the data intact (appendonly);
//! /readyz follows the store; a dead app gives a quick 502 and the sidecar serves again when
//! it is back; an app that never answers gives 504 after `upstream_read_timeout`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test]
async fn fail_closed_redis_killed_and_restarted() {
    let mut redis = Redis::start_with(true);
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::redis(&redis), &backend.addr());
    let mut client = Client::new(&sidecar);
    client.set(r#"{"user":"alice","n":1}"#).await;
    let cookie = client.cookie.clone().unwrap();
    let ready = reqwest::get(sidecar.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    redis.kill();

    let start = Instant::now();
    let r = client.get("/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert!(
        r.set_cookies().is_empty(),
        "the cookie is never cleared for a store error"
    );
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "waited {:?}",
        start.elapsed()
    );
    assert_eq!(client.cookie.as_deref(), Some(cookie.as_str()));

    // No cookie: reads pass through; a change that cannot be saved becomes a 503.
    let mut anon = Client::new(&sidecar);
    let r = anon.get("/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["x_session_raw"], "{}");
    let r = anon.set(r#"{"a":1}"#).await;
    assert_eq!(r.status, 503);
    assert!(anon.cookie.is_none());

    let start = Instant::now();
    let ready = reqwest::get(sidecar.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(start.elapsed() < Duration::from_millis(1500));
    assert!(
        sidecar
            .metric("sidecar_session_loads_total{result=\"error\"}")
            .await
            >= 1.0
    );
    assert!(
        sidecar
            .metric("sidecar_store_errors_total{op=\"load\"}")
            .await
            >= 1.0
    );

    // Many requests at once while the store is down: none waits past the timeout.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move { c.get("/", &[]).await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );

    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut c = client.clone();
            async move { c.get("/", &[]).await.status == 200 }
        })
        .await,
        "the sidecar reconnects by itself"
    );
    assert_eq!(client.session().await, json!({"user": "alice", "n": 1}));
    let r = client.set(r#"{"n":2}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(client.session().await, json!({"user": "alice", "n": 2}));
    assert!(
        sidecar.becomes_ready(Duration::from_secs(5)).await,
        "/readyz turns ready again by itself"
    );
}

#[tokio::test]
async fn fail_closed_write_failure_is_a_503_not_a_silent_loss() {
    let mut redis = Redis::start_with(true);
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::redis(&redis), &backend.addr());
    let mut client = Client::new(&sidecar);
    client.set(r#"{"n":1}"#).await;
    // Kill Redis while the app is answering: the load succeeded, the write cannot.
    let hits = backend.hit_count();
    let mut c = client.clone();
    let request = tokio::spawn(async move {
        c.get(
            "/",
            &[
                ("x-delay-ms", "800"),
                ("x-reply-x-session-set", r#"{"n":2}"#),
            ],
        )
        .await
    });
    backend.wait_for_request_after(hits).await;
    redis.kill();
    let r = request.await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.set_cookies().is_empty());
    assert!(
        sidecar
            .metric("sidecar_session_writes_total{result=\"error\"}")
            .await
            >= 1.0
    );
    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut c = client.clone();
            async move { c.get("/", &[]).await.status == 200 }
        })
        .await
    );
    assert_eq!(
        client.session().await,
        json!({"n": 1}),
        "nothing half-applied"
    );
}

/// A `fail_open` sidecar on `redis` and a client whose session holds `{"user":"bob"}`.
async fn fail_open_with_a_session(redis: &Redis) -> (Backend, Sidecar, Client) {
    let backend = Backend::start().await;
    let mut settings = Settings::redis(redis);
    settings.fail_open = true;
    let sidecar = Sidecar::start(&settings, &backend.addr());
    let mut client = Client::new(&sidecar);
    client.set(r#"{"user":"bob"}"#).await;
    (backend, sidecar, client)
}

#[tokio::test]
async fn fail_open_redis_killed_and_restarted() {
    let mut redis = Redis::start_with(true);
    let (_backend, sidecar, mut client) = fail_open_with_a_session(&redis).await;
    let cookie = client.cookie.clone().unwrap();

    redis.kill();
    let start = Instant::now();
    let r = client.get("/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["x_session_raw"], "{}");
    assert!(start.elapsed() < Duration::from_millis(1500));
    let r = client.set(r#"{"lost":true}"#).await;
    assert_eq!(r.status, 200);
    assert!(r.set_cookies().is_empty(), "the client's cookie is kept");
    assert_eq!(client.cookie.as_deref(), Some(cookie.as_str()));
    let mut anon = Client::new(&sidecar);
    let r = anon.set(r#"{"a":1}"#).await;
    assert_eq!(r.status, 200);
    assert!(anon.cookie.is_none(), "no session could be created");
    assert!(
        sidecar
            .metric("sidecar_session_changes_dropped_total{reason=\"store_error\"}")
            .await
            >= 2.0
    );
    assert!(
        sidecar
            .metric("sidecar_session_writes_total{result=\"error\"}")
            .await
            >= 2.0
    );

    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut c = client.clone();
            async move { c.get("/", &[]).await.session() == json!({"user": "bob"}) }
        })
        .await,
        "the session resumes when the store returns"
    );
}

/// A logout whose session was loaded but cannot be deleted (the store went down while the
/// request was at the app): under fail_open the change is dropped and the cookie is kept,
/// like any other unsaved change, so the session is still there when the store returns.
#[tokio::test]
async fn fail_open_keeps_the_cookie_when_a_logout_cannot_be_saved() {
    let mut redis = Redis::start_with(true);
    let (backend, _sidecar, client) = fail_open_with_a_session(&redis).await;
    let hits = backend.hit_count();
    let mut slow = client.clone();
    let logout = tokio::spawn(async move {
        slow.get(
            "/logout",
            &[
                ("x-delay-ms", "800"),
                ("x-reply-x-session-action", "destroy"),
            ],
        )
        .await
    });
    backend.wait_for_request_after(hits).await;
    redis.kill();
    let r = logout.await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.set_cookies().is_empty(),
        "a store error never clears the cookie: {:?}",
        r.set_cookies()
    );
    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut c = client.clone();
            async move { c.get("/", &[]).await.session() == json!({"user": "bob"}) }
        })
        .await,
        "the session resumes when the store returns"
    );
}

#[tokio::test]
async fn store_timeout_bounds_every_request_when_redis_hangs() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let mut settings = Settings::redis(&redis);
    settings.store_timeout = "200ms";
    let sidecar = Sidecar::start(&settings, &backend.addr());
    let mut client = Client::new(&sidecar);
    client.set(r#"{"a":1}"#).await;
    redis.cli(&["CLIENT", "PAUSE", "1500", "ALL"]).unwrap();
    let start = Instant::now();
    let r = client.get("/", &[]).await;
    let took = start.elapsed();
    assert_eq!(r.status, 503);
    assert!(took < Duration::from_millis(700), "took {took:?}");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut c = client.clone();
            async move { c.get("/", &[]).await.session() == json!({"a": 1}) }
        })
        .await
    );
}

#[tokio::test]
async fn upstream_down_gives_a_quick_502_and_recovers() {
    let redis = Redis::start();
    let mut backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::redis(&redis), &backend.addr());
    let mut client = Client::new(&sidecar);
    client.set(r#"{"a":1}"#).await;
    backend.stop().await;
    let start = Instant::now();
    let r = client.get("/", &[]).await;
    assert_eq!(r.status, 502);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert!(r.set_cookies().is_empty());
    // Counted in the logging phase, just after the response went out.
    assert!(
        eventually(Duration::from_secs(2), || async {
            sidecar.metric("sidecar_upstream_errors_total").await >= 1.0
        })
        .await
    );
    assert_eq!(
        reqwest::get(sidecar.admin_url("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    backend.restart().await;
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut c = client.clone();
            async move { c.get("/", &[]).await.status == 200 }
        })
        .await
    );
    assert_eq!(client.session().await, json!({"a": 1}));
}

#[tokio::test]
async fn an_app_that_never_answers_gives_504_after_the_read_timeout() {
    // An app that accepts connections and never answers (nor closes them).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut settings = Settings::memory();
    settings.upstream_read_timeout = "300ms";
    let sidecar = Sidecar::start(&settings, &local(addr));
    let mut client = Client::new(&sidecar);

    let start = Instant::now();
    let r = client.get("/", &[]).await;
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.text);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert!(r.set_cookies().is_empty());
    // Counted in the logging phase, just after the response went out.
    assert!(
        eventually(Duration::from_secs(2), || async {
            sidecar.metric("sidecar_upstream_errors_total").await == 1.0
                && sidecar.metric("sidecar_requests_total{code=\"504\"}").await == 1.0
        })
        .await,
        "{:?}",
        sidecar.metrics().await
    );
    assert_eq!(
        sidecar.metric("sidecar_requests_total{code=\"502\"}").await,
        0.0
    );
    silent.abort();
}
