//! SPEC §4.7 "ended means ended", through the real binary: a response whose request carried
//! a session that ended while the request was at the app applies nothing and sends no
//! `Set-Cookie`, whatever fields it sets.
//!
//! Each race: a slow request (the app sleeps) carries a live session and answers with an
//! `X-Session-Set` naming the user; meanwhile the session ends (destroy, destroy-all, the
//! admin API, a regenerate in another tab, idle expiry). Checked: the client gets the app's
//! answer, no `Set-Cookie` for the session cookie, no new session in the store, the dropped
//! change counted as `sidecar_session_changes_dropped_total{reason="session_ended"}`. The
//! control: with the session still alive, the late change is applied.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const TOKEN: &str = "admin-token-for-tests-0123456789";
const DROPPED: &str = "sidecar_session_changes_dropped_total{reason=\"session_ended\"}";
const LATE_SET: &str = r#"{"user_id":"alice","late":true}"#;

fn with_users(mut s: Settings) -> Settings {
    s.session_extra = "  user_field: user_id\n".into();
    s.extra = format!("admin:\n  token: \"{TOKEN}\"\n");
    s
}

async fn login(sidecar: &Sidecar) -> Client {
    let mut c = Client::new(sidecar);
    let r = c
        .get(
            "/",
            &[
                ("x-reply-x-session-set", r#"{"user_id":"alice","n":1}"#),
                ("x-reply-x-session-action", "regenerate"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(c.cookie.is_some(), "logged in");
    c
}

/// Starts a request that reaches the app at once and is answered after `delay_ms`, with
/// `LATE_SET` as its `X-Session-Set`.
fn slow_request(client: &Client, delay_ms: u64) -> tokio::task::JoinHandle<Reply> {
    let mut slow = client.clone();
    tokio::spawn(async move {
        slow.get(
            "/slow",
            &[
                ("x-delay-ms", &delay_ms.to_string()),
                ("x-reply-x-session-set", LATE_SET),
            ],
        )
        .await
    })
}

/// What every race checks of the late response.
async fn assert_dropped(sidecar: &Sidecar, late: &Reply, dropped_before: f64) {
    assert_eq!(late.status, 200, "the client gets the app's answer");
    assert!(
        late.set_cookies().is_empty(),
        "no Set-Cookie for the session cookie: {:?}",
        late.set_cookies()
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            sidecar.metric(DROPPED).await >= dropped_before + 1.0
        })
        .await,
        "the dropped change is counted"
    );
}

fn session_keys(redis: &Redis) -> Vec<String> {
    redis
        .keys("session:*")
        .into_iter()
        .filter(|k| !k.starts_with("session:user:"))
        .collect()
}

/// Ends the session in one of the ways a session can end while a request is in flight.
#[derive(Clone, Copy, Debug)]
enum Ender {
    Destroy,
    DestroyAll,
    AdminDelete,
}

async fn end(sidecar: &Sidecar, client: &Client, how: Ender) {
    match how {
        Ender::Destroy | Ender::DestroyAll => {
            let mut other_tab = client.clone();
            let action = match how {
                Ender::Destroy => "destroy",
                _ => "destroy-all",
            };
            let r = other_tab.action(action).await;
            assert_eq!(r.status, 200);
            assert!(
                r.set_cookies().iter().any(|c| c.contains("Max-Age=0")),
                "the logout itself expires the cookie"
            );
        }
        Ender::AdminDelete => {
            let resp = reqwest::Client::new()
                .delete(sidecar.admin_url("/sessions?user=alice"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["destroyed"], 1);
        }
    }
}

/// One race: a slow request carries a live session that `how` ends while it is at the app.
/// With `redis`, the store itself is checked too: no session key, no user index left.
async fn race(settings: Settings, redis: Option<&Redis>, how: Ender) {
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&with_users(settings), &backend.addr());
    let client = login(&sidecar).await;
    if let Some(redis) = redis {
        assert_eq!(session_keys(redis).len(), 1);
    }
    let created = sidecar.metric("sidecar_sessions_created_total").await;
    let dropped = sidecar.metric(DROPPED).await;

    let hits = backend.hit_count();
    let slow = slow_request(&client, 1500);
    backend.wait_for_request_after(hits).await;
    end(&sidecar, &client, how).await;
    if let Some(redis) = redis {
        assert!(session_keys(redis).is_empty(), "{how:?} ended the session");
    }
    let late = slow.await.unwrap();

    assert_dropped(&sidecar, &late, dropped).await;
    if let Some(redis) = redis {
        assert!(
            redis.keys("session:*").is_empty(),
            "{how:?}: no session and no user index brought back: {:?}",
            redis.keys("session:*")
        );
    }
    assert_eq!(
        sidecar.metric("sidecar_sessions_created_total").await,
        created,
        "nothing created"
    );
    // The browser, which kept its old cookie, is logged out.
    let mut after = client.clone();
    assert_eq!(after.get("/", &[]).await.session(), json!({}));
}

async fn race_on_redis(how: Ender) {
    let redis = Redis::start();
    race(Settings::redis(&redis), Some(&redis), how).await;
}

async fn race_on_memory(how: Ender) {
    race(Settings::memory(), None, how).await;
}

#[tokio::test]
async fn late_response_after_destroy_changes_nothing_redis() {
    race_on_redis(Ender::Destroy).await;
}

#[tokio::test]
async fn late_response_after_destroy_all_changes_nothing_redis() {
    race_on_redis(Ender::DestroyAll).await;
}

#[tokio::test]
async fn late_response_after_admin_delete_changes_nothing_redis() {
    race_on_redis(Ender::AdminDelete).await;
}

#[tokio::test]
async fn late_response_after_destroy_changes_nothing_memory() {
    race_on_memory(Ender::Destroy).await;
}

#[tokio::test]
async fn late_response_after_destroy_all_changes_nothing_memory() {
    race_on_memory(Ender::DestroyAll).await;
}

#[tokio::test]
async fn late_response_after_admin_delete_changes_nothing_memory() {
    race_on_memory(Ender::AdminDelete).await;
}

#[tokio::test]
async fn late_response_after_destroy_all_changes_nothing_cluster() {
    let cluster = RedisCluster::start(3, 0, None);
    let backend = Backend::start().await;
    let settings = with_users(Settings::with_store(StoreKind::Yaml(cluster.store_yaml())));
    let sidecar = Sidecar::start(&settings, &backend.addr());
    let client = login(&sidecar).await;
    let mut second_device = login(&sidecar).await;
    assert_eq!(second_device.session().await["user_id"], "alice");
    let dropped = sidecar.metric(DROPPED).await;

    let hits = backend.hit_count();
    let slow = slow_request(&client, 1500);
    backend.wait_for_request_after(hits).await;
    end(&sidecar, &second_device, Ender::DestroyAll).await;
    let late = slow.await.unwrap();

    assert_dropped(&sidecar, &late, dropped).await;
    let left: Vec<String> = cluster.key_owners("session:*").into_keys().collect();
    assert!(left.is_empty(), "nothing of alice is left: {left:?}");
    let mut after = client.clone();
    assert_eq!(after.get("/", &[]).await.session(), json!({}));
}

/// Login in another tab (regenerate) while a request with the old cookie is at the app:
/// the late response must not replace the fresh login cookie with anything.
#[tokio::test]
async fn late_response_after_regenerate_leaves_the_new_login_alone() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&with_users(Settings::redis(&redis)), &backend.addr());
    let client = login(&sidecar).await;
    let dropped = sidecar.metric(DROPPED).await;

    let hits = backend.hit_count();
    let slow = slow_request(&client, 1500);
    backend.wait_for_request_after(hits).await;
    let mut other_tab = client.clone();
    let r = other_tab
        .get(
            "/",
            &[
                ("x-reply-x-session-set", r#"{"role":"admin"}"#),
                ("x-reply-x-session-action", "regenerate"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_ne!(other_tab.cookie, client.cookie, "a new ID");
    let late = slow.await.unwrap();

    assert_dropped(&sidecar, &late, dropped).await;
    assert_eq!(
        session_keys(&redis).len(),
        1,
        "only the regenerated session"
    );
    assert_eq!(
        other_tab.session().await,
        json!({"user_id": "alice", "n": 1, "role": "admin"}),
        "the regenerated cookie still holds the regenerated data, without the late fields"
    );
    let mut old = client.clone();
    assert_eq!(old.get("/", &[]).await.session(), json!({}));
}

async fn idle_expiry_race(settings: Settings, redis: Option<&Redis>) {
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&settings, &backend.addr());
    let client = login(&sidecar).await;
    let created = sidecar.metric("sidecar_sessions_created_total").await;
    let dropped = sidecar.metric(DROPPED).await;

    // idle_timeout is 1s: the session idles out while the app takes 2.5s.
    let late = slow_request(&client, 2500).await.unwrap();

    assert_dropped(&sidecar, &late, dropped).await;
    assert_eq!(
        sidecar.metric("sidecar_sessions_created_total").await,
        created
    );
    if let Some(redis) = redis {
        assert!(redis.keys("session:*").is_empty(), "{:?}", redis.keys("*"));
    }
}

#[tokio::test]
async fn late_response_after_idle_expiry_changes_nothing_redis() {
    let redis = Redis::start();
    let mut s = with_users(Settings::redis(&redis));
    s.idle_timeout = "1s";
    idle_expiry_race(s, Some(&redis)).await;
}

#[tokio::test]
async fn late_response_after_idle_expiry_changes_nothing_memory() {
    let mut s = with_users(Settings::memory());
    s.idle_timeout = "1s";
    idle_expiry_race(s, None).await;
}

/// The control: while the session lives, the same late change is applied.
#[tokio::test]
async fn late_response_to_a_live_session_is_applied() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&with_users(Settings::redis(&redis)), &backend.addr());
    let mut client = login(&sidecar).await;
    let dropped = sidecar.metric(DROPPED).await;
    let late = slow_request(&client, 300).await.unwrap();
    assert_eq!(late.status, 200);
    assert!(late.set_cookies().is_empty(), "same session, same cookie");
    assert_eq!(
        client.session().await,
        json!({"user_id": "alice", "n": 1, "late": true})
    );
    assert_eq!(sidecar.metric(DROPPED).await, dropped);
}

/// A request that arrived without a session still creates one, even slowly.
#[tokio::test]
async fn a_request_without_a_session_still_creates_one() {
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&Settings::memory(), &backend.addr());
    let anonymous = Client::new(&sidecar);
    let late = slow_request(&anonymous, 300).await.unwrap();
    assert_eq!(late.status, 200);
    assert_eq!(late.set_cookies().len(), 1, "a new session's cookie");
}

/// A late logout (`destroy`, or `destroy-all`) for a session that another tab has meanwhile
/// regenerated must not expire the browser's cookie: that cookie now belongs to the fresh
/// login. The late response applies nothing (SPEC §4.7), so the fresh login stays.
async fn late_logout_after_regenerate(action: &'static str) {
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&with_users(Settings::memory()), &backend.addr());
    let client = login(&sidecar).await;
    let dropped = sidecar.metric(DROPPED).await;
    let hits = backend.hit_count();
    let mut slow = client.clone();
    let late = tokio::spawn(async move {
        slow.get(
            "/logout",
            &[("x-delay-ms", "1500"), ("x-reply-x-session-action", action)],
        )
        .await
    });
    backend.wait_for_request_after(hits).await;
    let mut other_tab = client.clone();
    let r = other_tab.action("regenerate").await;
    assert_eq!(r.set_cookies().len(), 1, "the login's new cookie");
    let late = late.await.unwrap();
    assert_dropped(&sidecar, &late, dropped).await;
    assert_eq!(
        other_tab.session().await,
        json!({"user_id": "alice", "n": 1}),
        "the regenerated session is untouched"
    );
}

#[tokio::test]
async fn late_destroy_after_regenerate_leaves_the_new_cookie_alone() {
    late_logout_after_regenerate("destroy").await;
}

#[tokio::test]
async fn late_destroy_all_after_regenerate_leaves_the_new_cookie_alone() {
    late_logout_after_regenerate("destroy-all").await;
}
