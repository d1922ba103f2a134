//! Expiry, concurrency and the process lifecycle, through the real binary.
//!
//! Guards: idle expiry and its sliding refresh; the absolute limit; the Redis TTL never past
//! the absolute limit; 40 concurrent writers of different fields losing nothing (Redis and
//! memory); memory-store persistence across a SIGTERM restart, user index included (a logout
//! everywhere after the restart ends the sessions from before it); a corrupt persist file set
//! aside with a log line; SIGTERM stops an idle sidecar within seconds and lets in-flight
//! requests finish.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test]
async fn idle_timeout_expires_and_use_slides_it() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let mut settings = Settings::redis(&redis);
    settings.idle_timeout = "2s";
    let sidecar = Sidecar::start(&settings, &backend.addr());

    let mut idle = Client::new(&sidecar);
    idle.set(r#"{"a":1}"#).await;
    let mut active = Client::new(&sidecar);
    active.set(r#"{"b":2}"#).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3500) {
        assert_eq!(
            active.session().await,
            json!({"b": 2}),
            "used sessions slide"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(
        idle.session().await,
        json!({}),
        "unused for longer than idle_timeout"
    );
    assert!(
        sidecar
            .metric("sidecar_cookies_rejected_total{reason=\"expired\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn absolute_timeout_ends_even_an_active_session() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let mut settings = Settings::redis(&redis);
    settings.idle_timeout = "2s";
    settings.absolute_timeout = "3s";
    let sidecar = Sidecar::start(&settings, &backend.addr());
    let mut client = Client::new(&sidecar);
    client.set(r#"{"a":1}"#).await;
    let key = redis.keys("session:*").pop().unwrap();
    let start = Instant::now();
    let mut last_alive = Duration::ZERO;
    while start.elapsed() < Duration::from_millis(4500) {
        if client.session().await == json!({"a": 1}) {
            last_alive = start.elapsed();
            let ttl: i64 = redis.cli(&["PTTL", &key]).unwrap().trim().parse().unwrap();
            let left = 3000i64 - start.elapsed().as_millis() as i64;
            assert!(
                ttl <= left + 150,
                "ttl {ttl} goes past the absolute limit ({left} left)"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        last_alive >= Duration::from_millis(2200),
        "alive until {last_alive:?}"
    );
    assert!(
        last_alive < Duration::from_millis(3800),
        "alive until {last_alive:?}"
    );
    assert_eq!(client.session().await, json!({}));
    // A write after the end starts a new session with a fresh ID.
    let old = client.cookie.clone();
    client.set(r#"{"c":3}"#).await;
    assert_ne!(client.cookie, old);
}

async fn concurrent_writers(settings: &Settings) {
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(settings, &backend.addr());
    let mut client = Client::new(&sidecar);
    client.set(r#"{"start":0}"#).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let field = format!(r#"{{"f{i}":{i}}}"#);
            let r = c
                .get(
                    "/",
                    &[("x-reply-x-session-set", &field), ("x-delay-ms", "20")],
                )
                .await;
            assert_eq!(r.status, 200);
            assert!(r.set_cookies().is_empty());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let session = client.session().await;
    let object = session.as_object().unwrap();
    assert_eq!(object.len(), 41, "{session}");
    for i in 0..40 {
        assert_eq!(session[format!("f{i}")], json!(i));
    }
}

#[tokio::test]
async fn forty_concurrent_writers_lose_nothing_on_redis() {
    let redis = Redis::start();
    concurrent_writers(&Settings::redis(&redis)).await;
}

#[tokio::test]
async fn forty_concurrent_writers_lose_nothing_on_memory() {
    concurrent_writers(&Settings::memory()).await;
}

#[tokio::test]
async fn memory_store_survives_a_restart_and_sets_a_corrupt_file_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.json");
    let backend = Backend::start().await;
    let settings = Settings::with_store(StoreKind::Memory {
        persist_path: Some(path.clone()),
        max_sessions: 100,
    });
    let mut sidecar = Sidecar::start(&settings, &backend.addr());
    let mut client = Client::new(&sidecar);
    client.set(r#"{"user":"carol","n":[1,2]}"#).await;
    sidecar.terminate(Duration::from_secs(10));
    assert!(path.exists(), "saved at shutdown");
    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(
        !saved.contains(client.cookie.as_ref().unwrap().split('.').next().unwrap()),
        "no IDs on disk"
    );

    sidecar.restart();
    let mut client = client.reconnect();
    assert_eq!(
        client.session().await,
        json!({"user": "carol", "n": [1, 2]})
    );
    sidecar.terminate(Duration::from_secs(10));

    std::fs::write(&path, b"{\"version\":1,\"sessions\":[[\"trunc").unwrap();
    sidecar.restart();
    let mut client = client.reconnect();
    assert_eq!(
        client.session().await,
        json!({}),
        "a corrupt file starts empty"
    );
    let log = sidecar.log();
    assert!(log.contains("corrupt"), "{log}");
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
    assert!(aside, "the corrupt file is kept for inspection");
    client.set(r#"{"again":true}"#).await;
    assert_eq!(client.session().await, json!({"again": true}));
}

#[tokio::test]
async fn a_logout_everywhere_after_a_memory_store_restart_ends_the_sessions_from_before() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start().await;
    let mut settings = Settings::with_store(StoreKind::Memory {
        persist_path: Some(dir.path().join("sessions.json")),
        max_sessions: 100,
    });
    settings.session_extra = "  user_field: user_id\n".into();
    let mut sidecar = Sidecar::start(&settings, &backend.addr());
    let mut phone = Client::new(&sidecar);
    let mut laptop = Client::new(&sidecar);
    let mut other = Client::new(&sidecar);
    for (c, user) in [
        (&mut phone, "dora"),
        (&mut laptop, "dora"),
        (&mut other, "eli"),
    ] {
        assert_eq!(
            c.set(&json!({ "user_id": user }).to_string()).await.status,
            200
        );
    }
    sidecar.terminate(Duration::from_secs(10));
    sidecar.restart();
    let (mut phone, mut laptop, mut other) =
        (phone.reconnect(), laptop.reconnect(), other.reconnect());
    assert_eq!(laptop.session().await["user_id"], "dora");
    assert_eq!(phone.action("destroy-all").await.status, 200);
    assert_eq!(
        laptop.session().await,
        json!({}),
        "the laptop is logged out"
    );
    assert_eq!(phone.session().await, json!({}));
    assert_eq!(other.session().await["user_id"], "eli", "other users stay");
}

#[tokio::test]
async fn memory_store_bound_is_exact() {
    let backend = Backend::start().await;
    let settings = Settings::with_store(StoreKind::Memory {
        persist_path: None,
        max_sessions: 5,
    });
    let sidecar = Sidecar::start(&settings, &backend.addr());
    let mut clients = Vec::new();
    for i in 0..8 {
        let mut c = Client::new(&sidecar);
        c.set(&format!(r#"{{"i":{i}}}"#)).await;
        clients.push(c);
    }
    let mut alive = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        if c.session().await == json!({ "i": i }) {
            alive.push(i);
        }
    }
    assert_eq!(
        alive,
        vec![3, 4, 5, 6, 7],
        "the sessions closest to expiry went first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_an_idle_sidecar_quickly_and_drains_in_flight_requests() {
    let backend = Backend::start().await;
    let mut sidecar = Sidecar::start(&Settings::memory(), &backend.addr());
    let mut client = Client::new(&sidecar);
    assert_eq!(client.get("/", &[]).await.status, 200);
    let took = sidecar.terminate(Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(3),
        "idle sidecar took {took:?} to stop"
    );

    sidecar.restart();
    let mut slow = Client::new(&sidecar);
    let hits = backend.hit_count();
    let request = tokio::spawn(async move { slow.get("/", &[("x-delay-ms", "1500")]).await });
    // SIGTERM once the request is at the app (however slow the machine).
    backend.wait_for_request_after(hits).await;
    // The backend runs on this runtime: wait for the exit without blocking it.
    let took = tokio::task::block_in_place(|| sidecar.terminate(Duration::from_secs(10)));
    let r = request.await.unwrap();
    assert_eq!(
        r.status,
        200,
        "the in-flight request finished: {}",
        sidecar.log()
    );
    assert!(
        took >= Duration::from_millis(900),
        "exited before the request finished ({took:?})"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
