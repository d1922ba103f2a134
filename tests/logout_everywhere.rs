//! SPEC §9, log out everywhere, through the real binary with a real Redis.
//!
//! Guards: `destroy-all` ends exactly the current user's sessions; the admin API lists
//! (metadata only) and deletes with the bearer token, refuses a missing or wrong token with
//! 401, refuses a user-less DELETE with 400 and is 404 without a token configured; index
//! entries go when sessions expire and the index expires itself; changing or deleting the
//! user field moves the session between indexes; 1000 sessions go in one call; a listing
//! that runs while a login is between its index entry and its write does not drop that
//! entry, so a later logout still ends the session.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "admin-token-for-tests-0123456789";

fn settings(redis: &Redis) -> Settings {
    let mut s = Settings::redis(redis);
    s.session_extra = "  user_field: user_id\n".into();
    s.extra = format!("admin:\n  token: \"{TOKEN}\"\n");
    s
}

async fn login(sidecar: &Sidecar, user: Value) -> Client {
    let mut c = Client::new(sidecar);
    let set = json!({ "user_id": user, "theme": "dark" }).to_string();
    let r = c
        .get(
            "/",
            &[
                ("x-reply-x-session-set", &set),
                ("x-reply-x-session-action", "regenerate"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(c.cookie.is_some());
    c
}

async fn admin(
    sidecar: &Sidecar,
    method: reqwest::Method,
    query: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req =
        reqwest::Client::new().request(method, sidecar.admin_url(&format!("/sessions{query}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// An admin session API call with this exact `Authorization` value.
async fn admin_with(
    sidecar: &Sidecar,
    method: reqwest::Method,
    query: &str,
    authorization: &str,
) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .request(method, sidecar.admin_url(&format!("/sessions{query}")))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn destroy_all_ends_exactly_the_users_sessions() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&settings(&redis), &backend.addr());
    let mut a = login(&sidecar, json!(1)).await;
    let mut b = login(&sidecar, json!(1)).await;
    let mut c = login(&sidecar, json!(1)).await;
    let mut other = login(&sidecar, json!(2)).await;
    let mut anonymous_ish = login(&sidecar, json!("1")).await;

    let a_cookie = a.cookie.clone();
    let r = a.action("destroy-all").await;
    assert_eq!(r.status, 200);
    assert!(r.set_cookies()[0].contains("Max-Age=0"));
    for client in [&mut b, &mut c] {
        assert_eq!(client.session().await, json!({}));
    }
    let mut a_old = Client::new(&sidecar);
    a_old.cookie = a_cookie;
    assert_eq!(
        a_old.session().await,
        json!({}),
        "the current session ended too"
    );
    assert_eq!(
        other.session().await,
        json!({"user_id": 2, "theme": "dark"})
    );
    assert_eq!(
        anonymous_ish.session().await,
        json!({"user_id": "1", "theme": "dark"}),
        "the string \"1\" is another user than the number 1"
    );
    assert_eq!(
        sidecar
            .metric("sidecar_sessions_destroyed_total{reason=\"destroy_all\"}")
            .await,
        3.0
    );
}

#[tokio::test]
async fn admin_api_lists_and_deletes_with_the_token_only() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&settings(&redis), &backend.addr());
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(login(&sidecar, json!("alice")).await);
    }
    let mut bob = login(&sidecar, json!("bob")).await;

    let get = reqwest::Method::GET;
    let delete = reqwest::Method::DELETE;
    assert_eq!(
        admin(&sidecar, get.clone(), "?user=alice", None).await.0,
        401
    );
    assert_eq!(
        admin(
            &sidecar,
            get.clone(),
            "?user=alice",
            Some("wrong-token-0123456789012345")
        )
        .await
        .0,
        401
    );
    assert_eq!(
        admin(
            &sidecar,
            delete.clone(),
            "?user=alice",
            Some(&TOKEN[..TOKEN.len() - 1])
        )
        .await
        .0,
        401
    );
    assert_eq!(
        admin(&sidecar, delete.clone(), "", Some(TOKEN)).await.0,
        400
    );
    // Never a guess at which user was meant: a repeated user=, or one that is not UTF-8.
    for query in ["?user=alice&user=bob", "?user=%E9"] {
        assert_eq!(
            admin(&sidecar, delete.clone(), query, Some(TOKEN)).await.0,
            400,
            "{query}"
        );
    }

    let (status, body) = admin(&sidecar, get.clone(), "?user=alice", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 3);
    let text = body.to_string();
    for c in &clients {
        let id = c.cookie.as_ref().unwrap().split('.').next().unwrap();
        assert!(!text.contains(id), "an ID leaked: {text}");
    }
    assert!(
        !text.contains("session:") && !text.contains("dark"),
        "keys or values leaked: {text}"
    );
    for s in body["sessions"].as_array().unwrap() {
        for field in ["created", "last_seen", "expires"] {
            assert!(s[field].as_str().unwrap().ends_with('Z'), "{s}");
        }
        assert_eq!(s.as_object().unwrap().len(), 3, "{s}");
    }

    // The scheme is case-insensitive and may be followed by several spaces (RFC 9110 §11).
    for authorization in [
        format!("bearer {TOKEN}"),
        format!("BEARER {TOKEN}"),
        format!("Bearer   {TOKEN}"),
    ] {
        let (status, body) = admin_with(&sidecar, get.clone(), "?user=alice", &authorization).await;
        assert_eq!(
            (status, &body["count"]),
            (200, &json!(3)),
            "{status} {body}"
        );
    }
    for authorization in [format!("Bearer{TOKEN}"), format!("Basic {TOKEN}")] {
        let (status, _) = admin_with(&sidecar, get.clone(), "?user=alice", &authorization).await;
        assert_eq!(status, 401);
    }

    let start = Instant::now();
    let (status, body) = admin(&sidecar, delete.clone(), "?user=alice", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(body["destroyed"], 3);
    assert!(start.elapsed() < Duration::from_secs(2));
    for c in clients.iter_mut() {
        assert_eq!(c.session().await, json!({}));
    }
    assert_eq!(bob.session().await["user_id"], "bob");
    assert_eq!(
        admin(&sidecar, get, "?user=alice", Some(TOKEN)).await.1["count"],
        0
    );
    assert_eq!(
        sidecar
            .metric("sidecar_sessions_destroyed_total{reason=\"admin\"}")
            .await,
        3.0
    );
    assert!(
        sidecar
            .metric("sidecar_admin_requests_total{code=\"401\",endpoint=\"sessions\"}")
            .await
            >= 3.0
    );
}

#[tokio::test]
async fn without_a_token_the_api_is_off() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let mut s = settings(&redis);
    s.extra.clear();
    let sidecar = Sidecar::start(&s, &backend.addr());
    assert_eq!(
        admin(&sidecar, reqwest::Method::GET, "?user=a", Some(TOKEN))
            .await
            .0,
        404
    );
    assert_eq!(
        admin(&sidecar, reqwest::Method::DELETE, "?user=a", None)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn changing_or_deleting_the_user_field_moves_the_session() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&settings(&redis), &backend.addr());
    let mut c = login(&sidecar, json!(7)).await;
    let count = |user: &'static str| {
        let sidecar = &sidecar;
        async move {
            admin(
                sidecar,
                reqwest::Method::GET,
                &format!("?user={user}"),
                Some(TOKEN),
            )
            .await
            .1["count"]
                .clone()
        }
    };
    assert_eq!(count("7").await, 1);
    c.set(r#"{"user_id":8}"#).await;
    assert_eq!(count("7").await, 0);
    assert_eq!(count("8").await, 1);
    let index_7 = redis.keys("session:user:*");
    assert_eq!(
        index_7.len(),
        1,
        "the old index entry was removed: {index_7:?}"
    );
    c.set(r#"{"user_id":null}"#).await;
    assert_eq!(count("8").await, 0);
    assert!(redis.keys("session:user:*").is_empty());
    // destroy and regenerate keep the index right too.
    c.set(r#"{"user_id":9}"#).await;
    c.action("regenerate").await;
    assert_eq!(count("9").await, 1);
    let index = redis.keys("session:user:*").pop().unwrap();
    assert_eq!(redis.cli(&["ZCARD", &index]).unwrap().trim(), "1");
    c.action("destroy").await;
    assert!(redis.keys("session:user:*").is_empty());
}

#[tokio::test]
async fn index_entries_go_when_sessions_expire_and_the_index_expires_itself() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let mut s = settings(&redis);
    s.idle_timeout = "1s";
    s.absolute_timeout = "3s";
    let sidecar = Sidecar::start(&s, &backend.addr());
    login(&sidecar, json!("eve")).await;
    login(&sidecar, json!("eve")).await;
    let index = redis.keys("session:user:*").pop().unwrap();
    let ttl: i64 = redis
        .cli(&["PTTL", &index])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        ttl > 0 && ttl <= 3000,
        "index TTL {ttl} is no longer than its longest session"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_, body) = admin(&sidecar, reqwest::Method::GET, "?user=eve", Some(TOKEN)).await;
    assert_eq!(body["count"], 0);
    assert_eq!(
        redis.cli(&["ZCARD", &index]).unwrap().trim(),
        "0",
        "gone with the index's own TTL"
    );
}

/// The engine indexes a session first and writes it next. Here the interleaving is laid out
/// step by step with redis-cli: the index entry of a login in flight, then an admin listing,
/// then the login's write, then a logout. Before, the listing dropped the entry (its session
/// did not name the user yet) and the session escaped that logout and every later one.
#[tokio::test]
async fn a_listing_between_a_logins_index_entry_and_its_write_does_not_hide_the_session() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&settings(&redis), &backend.addr());
    let mut c = Client::new(&sidecar);
    assert_eq!(c.set(r#"{"theme":"dark"}"#).await.status, 200);
    let key = session_key(c.cookie.as_deref().unwrap());
    let user = json!("mallory").to_string();
    let index = user_index_key(&user);
    let deadline = (session_sidecar::store::now_ms() + 3_600_000).to_string();

    // 1. The login's index entry (what `index_add` writes).
    assert!(redis.cli(&["ZADD", &index, &deadline, &key]).is_some());
    assert!(redis.cli(&["PEXPIRE", &index, "60000"]).is_some());
    // 2. An admin listing: the session does not name the user yet, so it is not listed.
    let (status, body) = admin(&sidecar, reqwest::Method::GET, "?user=mallory", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 0, "{body}");
    // 3. The login's write lands.
    assert!(redis.cli(&["HSET", &key, "user_id", &user]).is_some());
    assert_eq!(c.session().await["user_id"], "mallory");
    // 4. Log mallory out everywhere: the session is found and ended.
    let (status, body) = admin(
        &sidecar,
        reqwest::Method::DELETE,
        "?user=mallory",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["destroyed"], 1, "{body}");
    assert_eq!(c.session().await, json!({}), "logged out");
}

#[tokio::test]
async fn a_thousand_sessions_of_one_user_go_in_one_call() {
    let redis = Redis::start();
    let backend = Backend::start().await;
    let sidecar = Sidecar::start(&settings(&redis), &backend.addr());
    let mut tasks = Vec::new();
    for worker in 0..25 {
        let base = format!("http://127.0.0.1:{}", sidecar.port);
        tasks.push(tokio::spawn(async move {
            let mut c = Client::for_base(base);
            for _ in 0..40 {
                c.cookie = None;
                let r = c.set(r#"{"user_id":"mallory"}"#).await;
                assert_eq!(r.status, 200, "worker {worker}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sessions = redis.keys("session:*").len();
    assert_eq!(sessions, 1001, "1000 sessions and one index");
    let start = Instant::now();
    let (status, body) = admin(
        &sidecar,
        reqwest::Method::DELETE,
        "?user=mallory",
        Some(TOKEN),
    )
    .await;
    let took = start.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["destroyed"], 1000);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    eprintln!("destroyed 1000 sessions in {took:?}");
    assert!(redis.keys("session:*").is_empty());
}
