//! SPEC §5 under real Redis faults, through the real binary (kind redis; the Redis servers
//! are the tests' own, on free loopback ports).
//!
//! Guards: (a) Redis (appendonly, appendfsync always) killed and restarted during a load of
//! concurrent session writes loses no write the sidecar acknowledged (200) to a client;
//! (b) a slow Redis (`CLIENT PAUSE`, then `DEBUG SLEEP`, both longer than `store.timeout`)
//! never makes a request wait past `store.timeout` (+ a margin): cookie requests get 503,
//! anonymous ones pass, `/readyz` says 503, nothing piles up, and service recovers at once;
//! (c) the number of Redis connections per sidecar stays bounded (INFO clients) while 100
//! concurrent clients hit it.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use serde_json::{json, Value};

async fn sessions(sidecar: &Sidecar, n: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Client::new(sidecar);
        let r = c.set(&json!({ "c": i }).to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        clients.push(c);
    }
    clients
}

/// Field `w<seq % FIELDS>` gets `seq`: bounded session size, and a later write to a field
/// always carries a larger number than an earlier one.
const FIELDS: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_redis_restart_under_load() {
    let redis = Redis::start_with(true);
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::redis(&redis), &backend.addr());
    let clients = sessions(&sidecar, 20).await;

    let start = Instant::now();
    let run_for = Duration::from_secs(5);
    let writers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                // (seq, when) of every write answered 200; count of the others.
                let mut acked: Vec<(u64, Duration)> = Vec::new();
                let mut failed = 0usize;
                let mut seq = 0u64;
                while start.elapsed() < run_for {
                    seq += 1;
                    let set = format!(r#"{{"w{}":{seq}}}"#, seq % FIELDS);
                    match c.try_get("/", &[("x-reply-x-session-set", &set)]).await {
                        Ok(r) if r.status == 200 => acked.push((seq, start.elapsed())),
                        Ok(r) => {
                            assert_eq!(r.status, 503, "{}", r.text);
                            failed += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("request failed: {e}"),
                    }
                }
                (c, acked, failed)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (redis, killed_at, restarted_at) = tokio::task::spawn_blocking(move || {
        let mut redis = redis;
        let killed_at = start.elapsed();
        redis.kill();
        std::thread::sleep(Duration::from_millis(500));
        redis.restart();
        (redis, killed_at, start.elapsed())
    })
    .await
    .unwrap();

    let mut total_acked = 0;
    let mut acked_after_restart = 0;
    let mut first_after_restart = Duration::MAX;
    let mut total_failed = 0;
    let mut lost = Vec::new();
    for (i, w) in join_all(writers).await.into_iter().enumerate() {
        let (mut c, acked, failed) = w.unwrap();
        total_acked += acked.len();
        total_failed += failed;
        acked_after_restart += acked.iter().filter(|(_, t)| *t > restarted_at).count();
        if let Some((_, t)) = acked.iter().find(|(_, t)| *t > restarted_at) {
            first_after_restart = first_after_restart.min(*t - restarted_at);
        }
        let session = c.get("/", &[]).await;
        assert_eq!(session.status, 200);
        let session = session.session();
        assert_eq!(session["c"], json!(i));
        let mut newest: HashMap<u64, u64> = HashMap::new();
        for (seq, _) in &acked {
            let e = newest.entry(seq % FIELDS).or_default();
            *e = (*e).max(*seq);
        }
        for (field, seq) in newest {
            let stored = session[format!("w{field}")].as_u64().unwrap_or(0);
            // A write answered 503 may still have landed, so later values are fine.
            if stored < seq {
                lost.push((i, field, seq, stored));
            }
        }
    }
    eprintln!(
        "redis restart under load: Redis killed at {killed_at:?}, back at {restarted_at:?}; \
         {total_acked} writes acknowledged ({acked_after_restart} after the restart, the first \
         {first_after_restart:?} after Redis answered again), \
         {total_failed} answered 503, {} acknowledged writes lost",
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(total_failed > 0, "the outage was noticed");
    assert!(acked_after_restart > 0, "service came back by itself");
    drop(redis);
}

/// (kind, status, latency) of one request.
type Probe = (&'static str, u16, Duration);

/// Sends one request of each kind concurrently.
async fn wave(clients: &[Client], sidecar: &Sidecar) -> Vec<Probe> {
    let mut jobs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Probe> + Send>>> =
        Vec::new();
    for (i, c) in clients.iter().cloned().enumerate() {
        jobs.push(Box::pin(async move {
            let mut c = c;
            let start = Instant::now();
            let r = if i % 2 == 0 {
                c.get("/", &[]).await
            } else {
                c.get("/", &[("x-reply-x-session-set", r#"{"x":1}"#)]).await
            };
            ("session", r.status, start.elapsed())
        }));
    }
    for _ in 0..5 {
        let mut anon = Client::new(sidecar);
        jobs.push(Box::pin(async move {
            let start = Instant::now();
            let r = anon.get("/", &[]).await;
            ("anonymous", r.status, start.elapsed())
        }));
    }
    let ready = sidecar.admin_url("/readyz");
    jobs.push(Box::pin(async move {
        let start = Instant::now();
        let r = reqwest::get(ready).await.unwrap();
        ("readyz", r.status().as_u16(), start.elapsed())
    }));
    join_all(jobs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_never_holds_a_request_past_the_timeout_and_service_recovers() {
    const TIMEOUT_MS: u64 = 300;
    const MARGIN_MS: u64 = 500;
    // Redis 7 refuses DEBUG unless enabled.
    let redis = Node::start(None, &["--enable-debug-command", "local"], None);
    let backend = Backend::start().await;
    let mut settings = Settings::with_store(StoreKind::Redis(format!("{}/0", redis.url())));
    settings.store_timeout = "300ms";
    let sidecar = Sidecar::start(&settings, &backend.addr());
    let clients = sessions(&sidecar, 20).await;
    let limit = Duration::from_millis(TIMEOUT_MS + MARGIN_MS);

    for fault in ["CLIENT PAUSE", "DEBUG SLEEP"] {
        let slow_for = Duration::from_millis(3000);
        let port = redis.port.to_string();
        // Counted from before redis-cli starts: every wave below ends before the fault does.
        let started = Instant::now();
        let blocker = std::thread::spawn(move || {
            let args: Vec<&str> = if fault == "CLIENT PAUSE" {
                vec!["CLIENT", "PAUSE", "3000", "ALL"]
            } else {
                vec!["DEBUG", "SLEEP", "3"]
            };
            std::process::Command::new("redis-cli")
                .args(["-p", &port])
                .args(args)
                .output()
                .unwrap()
        });
        // The waves start once the fault is in effect (however slowly redis-cli started):
        // a session request is answered 503.
        let probe = &clients[0];
        let in_effect = eventually(Duration::from_millis(1500), || async move {
            probe.clone().get("/", &[]).await.status == 503
        })
        .await;
        assert!(in_effect, "{fault}: the store became slow");
        let mut results = Vec::new();
        while started.elapsed() + limit < slow_for - Duration::from_millis(100) {
            results.extend(wave(&clients, &sidecar).await);
        }
        assert!(
            !results.is_empty(),
            "{fault}: no wave fitted in the slow period"
        );
        let worst = results.iter().map(|r| r.2).max().unwrap();
        let by_kind = |kind: &str| -> Vec<u16> {
            results
                .iter()
                .filter(|r| r.0 == kind)
                .map(|r| r.1)
                .collect()
        };
        let slowest_of = |kind: &str| results.iter().filter(|r| r.0 == kind).map(|r| r.2).max();
        eprintln!(
            "slow redis ({fault} 3 s, store.timeout {TIMEOUT_MS} ms): {} requests, slowest {worst:?} \
             (session {:?}, anonymous {:?}, readyz {:?})",
            results.len(),
            slowest_of("session"),
            slowest_of("anonymous"),
            slowest_of("readyz"),
        );
        assert!(worst < limit, "{fault}: a request waited {worst:?}");
        assert!(
            by_kind("session").iter().all(|s| *s == 503),
            "{fault}: {:?}",
            by_kind("session")
        );
        assert!(
            by_kind("anonymous").iter().all(|s| *s == 200),
            "{fault}: {:?}",
            by_kind("anonymous")
        );
        assert!(
            by_kind("readyz").iter().all(|s| *s == 503),
            "{fault}: {:?}",
            by_kind("readyz")
        );
        let out = blocker.join().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "OK",
            "{fault} ran"
        );

        // Recovers at once: nothing queued up behind the slow period.
        let (clients_ref, sidecar_ref) = (&clients, &sidecar);
        let ok = eventually(Duration::from_secs(3), || async move {
            wave(clients_ref, sidecar_ref)
                .await
                .iter()
                .all(|r| r.1 == 200)
        })
        .await;
        assert!(ok, "{fault}: service recovered");
        let after = wave(&clients, &sidecar).await;
        let worst = after.iter().map(|r| r.2).max().unwrap();
        assert!(after.iter().all(|r| r.1 == 200), "{after:?}");
        assert!(worst < limit, "{fault}: after recovery {worst:?}");
        let connections = redis.cli(&["INFO", "clients"]).unwrap_or_default();
        let n: usize = connections
            .lines()
            .find_map(|l| l.trim().strip_prefix("connected_clients:"))
            .and_then(|v| v.parse().ok())
            .unwrap();
        eprintln!("slow redis ({fault}): after recovery, slowest request {worst:?}, connected_clients {n} (incl. redis-cli)");
        assert!(n <= 4, "{fault}: no connection pile-up, saw {n}");
    }
    for (i, mut c) in clients.into_iter().enumerate() {
        let s: Value = c.session().await;
        assert_eq!(s["c"], json!(i), "sessions intact");
    }
    assert!(
        sidecar
            .metric("sidecar_store_errors_total{op=\"load\"}")
            .await
            > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connections_stay_bounded_under_100_concurrent_clients() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::redis(&redis), &backend.addr());
    let clients = sessions(&sidecar, 100).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let port = redis.port.to_string();
        tokio::task::spawn_blocking(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let out = std::process::Command::new("redis-cli")
                    .args(["-p", &port, "INFO", "clients"])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if let Some(n) = text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("connected_clients:"))
                    .and_then(|v| v.parse::<usize>().ok())
                {
                    samples.push(n);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        })
    };
    let start = Instant::now();
    let load = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| async move {
            let mut done = 0usize;
            while start.elapsed() < Duration::from_secs(3) {
                let r = if done % 2 == 0 {
                    c.get("/", &[]).await
                } else {
                    c.set(&json!({ "hit": done }).to_string()).await
                };
                assert_eq!(r.status, 200);
                assert_eq!(r.session()["c"], json!(i));
                done += 1;
            }
            done
        });
    let requests: usize = join_all(load).await.into_iter().sum();
    stop.store(true, Ordering::SeqCst);
    let samples = sampler.await.unwrap();
    let max = samples.iter().copied().max().unwrap();
    eprintln!(
        "bounded connections: {requests} requests from 100 concurrent clients in 3 s; \
         connected_clients sampled {} times, max {max} (incl. redis-cli itself)",
        samples.len()
    );
    assert!(samples.len() > 5);
    assert!(
        max <= 4,
        "Redis connections per sidecar stay bounded, saw {max}"
    );
}
