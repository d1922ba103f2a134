//! The one behavioural suite every `SessionStore` passes, whatever its kind: memory, Redis,
//! Redis Cluster, Redis Sentinel, each also over TLS. `tests/store_suite.rs` runs it against
//! every kind; the topology tests (cluster, sentinel, tls) run it on the topology they started
//! through [`check_store_semantics`].
//!
//! [`run_suite`] guards: ping; load of a missing key; create/load round trip with its
//! metadata; update applies sets and deletes, keeps untouched fields and creation time,
//! refreshes the touch time, and never recreates a missing session; an empty change only
//! refreshes; regenerate moves the data (with the change) and the creation time, leaves the
//! old key dead, and creates nothing for a missing session; destroy, once; concurrent writes
//! of different fields all land; keys spread over many slots; expiry (TTL) and its refresh;
//! thousands of sets and deletes in one update; 500 fields in one write. [`run_index_suite`]
//! guards the per-user index: only live sessions whose user field still matches, within their
//! deadline, are listed; removal from it; an entry made for a write still in flight survives a
//! listing, so the session it names is found once written.

use std::sync::Arc;
use std::time::Duration;

use session_sidecar::protocol::Change;
use session_sidecar::store::{now_ms, IndexEntry, SessionStore};

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

/// [`run_suite`] on keys `check:<tag>:…`, for a store on a topology a test started.
pub async fn check_store_semantics(store: Arc<dyn SessionStore>, tag: &str) {
    run_suite(store, &format!("check:{tag}:")).await;
}

/// The store suite. Every key starts with `prefix`, which keeps keys of parallel runs apart.
/// Leaves `<prefix>many` (500 fields, 60 s TTL) behind for the caller to inspect.
pub async fn run_suite(store: Arc<dyn SessionStore>, prefix: &str) {
    let key = |name: &str| format!("{prefix}{name}");
    let ttl = Duration::from_secs(60);

    store.ping().await.expect("ping");
    assert_eq!(store.load(&key("missing")).await.unwrap(), None);

    // create + load
    let now = now_ms();
    let created = fields(&[("keep", "true"), ("n", "1"), ("s", "\"x\"")]);
    store.create(&key("a"), &created, now, ttl).await.unwrap();
    let rec = store.load(&key("a")).await.unwrap().expect("created");
    assert_eq!(sorted(rec.fields), created);
    assert_eq!(rec.created_ms, now);
    assert_eq!(rec.touched_ms, now);

    // update: sets and deletes, untouched fields kept, metadata refreshed, creation time kept
    let change = Change {
        set: fields(&[("n", "2"), ("o", "{\"k\":[1]}")]),
        delete: vec!["s".into(), "never-there".into()],
    };
    assert!(store
        .update(&key("a"), &change, now + 5, ttl)
        .await
        .unwrap());
    let rec = store.load(&key("a")).await.unwrap().unwrap();
    assert_eq!(
        sorted(rec.fields),
        fields(&[("keep", "true"), ("n", "2"), ("o", "{\"k\":[1]}")])
    );
    assert_eq!(rec.created_ms, now);
    assert_eq!(rec.touched_ms, now + 5);

    // update never recreates a missing session
    assert!(!store
        .update(&key("ghost"), &change, now, ttl)
        .await
        .unwrap());
    assert_eq!(store.load(&key("ghost")).await.unwrap(), None);

    // an empty change only refreshes
    assert!(store
        .update(&key("a"), &Change::default(), now + 9, ttl)
        .await
        .unwrap());
    assert_eq!(
        store.load(&key("a")).await.unwrap().unwrap().touched_ms,
        now + 9
    );

    // regenerate: data moves (with the change), old key dead, creation time kept
    let change = Change {
        set: fields(&[("user", "\"alice\"")]),
        delete: vec!["o".into()],
    };
    assert!(store
        .regenerate(&key("a"), &key("b"), &change, now + 10, ttl)
        .await
        .unwrap());
    assert_eq!(
        store.load(&key("a")).await.unwrap(),
        None,
        "old key dead after regenerate"
    );
    let rec = store.load(&key("b")).await.unwrap().expect("moved");
    assert_eq!(
        sorted(rec.fields),
        fields(&[("keep", "true"), ("n", "2"), ("user", "\"alice\"")])
    );
    assert_eq!(rec.created_ms, now, "creation time survives regenerate");
    // regenerate of a missing session creates nothing
    assert!(!store
        .regenerate(&key("a"), &key("c"), &change, now, ttl)
        .await
        .unwrap());
    assert_eq!(store.load(&key("c")).await.unwrap(), None);

    // destroy
    assert!(store.destroy(&key("b")).await.unwrap());
    assert!(!store.destroy(&key("b")).await.unwrap());
    assert_eq!(store.load(&key("b")).await.unwrap(), None);

    // concurrent writes of different fields all land
    store
        .create(&key("conc"), &fields(&[("base", "0")]), now, ttl)
        .await
        .unwrap();
    let writes = (0..20).map(|i| {
        let store = store.clone();
        let key = key("conc");
        async move {
            let change = Change {
                set: vec![(format!("f{i}"), i.to_string())],
                delete: vec![],
            };
            store.update(&key, &change, now_ms(), ttl).await.unwrap()
        }
    });
    assert!(futures_util::future::join_all(writes)
        .await
        .into_iter()
        .all(|ok| ok));
    assert_eq!(
        store
            .load(&key("conc"))
            .await
            .unwrap()
            .unwrap()
            .fields
            .len(),
        21
    );

    // many keys (many slots in a cluster)
    for i in 0..50 {
        store
            .create(
                &key(&format!("spread{i}")),
                &[("i".into(), i.to_string())],
                now,
                ttl,
            )
            .await
            .unwrap();
    }
    for i in 0..50 {
        let rec = store
            .load(&key(&format!("spread{i}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec.fields, vec![("i".to_string(), i.to_string())]);
    }

    // expiry, and refresh pushing it out: two sessions with the same TTL; one is refreshed
    // half way. Once the other has expired, the refreshed one must still be there (without
    // the refresh it would have gone at the same moment). Generous times: a slow machine
    // only makes the waits longer, never the check weaker.
    let short_ttl = Duration::from_millis(1500);
    for name in ["short", "kept"] {
        store
            .create(&key(name), &fields(&[("a", "1")]), now_ms(), short_ttl)
            .await
            .unwrap();
    }
    assert!(
        store.load(&key("short")).await.unwrap().is_some(),
        "alive before its TTL"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(store
        .update(
            &key("kept"),
            &Change::default(),
            now_ms(),
            Duration::from_secs(10)
        )
        .await
        .unwrap());
    let expired = super::poll::eventually(Duration::from_secs(10), || async {
        store.load(&key("short")).await.unwrap().is_none()
    })
    .await;
    assert!(expired, "expired");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store.load(&key("kept")).await.unwrap().is_some(),
        "refreshed"
    );
    assert!(!store
        .update(&key("short"), &Change::default(), now_ms(), ttl)
        .await
        .unwrap());

    // thousands of sets and deletes in one update (more than one `HSET`/`HDEL` argument
    // chunk of the Redis scripts), applied whole
    let now = now_ms();
    store
        .create(&key("bulk"), &fields(&[("keep", "1")]), now, ttl)
        .await
        .unwrap();
    let bulk = Change {
        set: (0..2500)
            .map(|i| (format!("b{i}"), i.to_string()))
            .collect(),
        delete: vec![],
    };
    assert!(store
        .update(&key("bulk"), &bulk, now + 1, ttl)
        .await
        .unwrap());
    let rec = store.load(&key("bulk")).await.unwrap().unwrap();
    assert_eq!(rec.fields.len(), 2501);
    assert_eq!(rec.touched_ms, now + 1);
    let shrink = Change {
        set: fields(&[("last", "2")]),
        delete: (0..2400).map(|i| format!("b{i}")).collect(),
    };
    assert!(store
        .update(&key("bulk"), &shrink, now + 2, ttl)
        .await
        .unwrap());
    let rec = store.load(&key("bulk")).await.unwrap().unwrap();
    let mut names: Vec<String> = rec.fields.into_iter().map(|(k, _)| k).collect();
    names.sort();
    let mut expected: Vec<String> = (2400..2500).map(|i| format!("b{i}")).collect();
    expected.extend(["keep".to_string(), "last".to_string()]);
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(rec.touched_ms, now + 2);

    // many fields in one write
    let many: Vec<(String, String)> = (0..500).map(|i| (format!("f{i}"), i.to_string())).collect();
    store
        .create(&key("many"), &many, now_ms(), ttl)
        .await
        .unwrap();
    assert_eq!(
        store
            .load(&key("many"))
            .await
            .unwrap()
            .unwrap()
            .fields
            .len(),
        500
    );
}

/// The sorted keys of the sessions `index` lists for `user` (field `user_id`).
async fn listed(store: &dyn SessionStore, index: &str, user: &str) -> Vec<String> {
    let mut keys: Vec<String> = store
        .user_sessions(index, "user_id", user, now_ms())
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    keys
}

/// The user index part of the suite. Leaves `<prefix>user:test` behind with three entries: one
/// live, one of a gone session, one of a session that moved to another user.
pub async fn run_index_suite(store: Arc<dyn SessionStore>, prefix: &str) {
    let key = |name: &str| format!("{prefix}{name}");
    let index = format!("{prefix}user:test");
    let ttl = Duration::from_secs(60);
    let now = now_ms();
    for name in ["u1", "u2", "moved"] {
        store
            .create(&key(name), &fields(&[("user_id", "\"ann\"")]), now, ttl)
            .await
            .unwrap();
        store
            .index_add(&index, &key(name), now + 60_000, now, ttl)
            .await
            .unwrap();
    }
    // A session whose user field changed is not the user's any more (it is not listed).
    let change = Change {
        set: fields(&[("user_id", "\"ben\"")]),
        delete: vec![],
    };
    assert!(store
        .update(&key("moved"), &change, now, ttl)
        .await
        .unwrap());
    // An entry whose session is gone, and one past its deadline.
    store
        .index_add(&index, &key("gone"), now + 60_000, now, ttl)
        .await
        .unwrap();
    store
        .create(&key("old"), &fields(&[("user_id", "\"ann\"")]), now, ttl)
        .await
        .unwrap();
    store
        .index_add(&index, &key("old"), now + 1, now, ttl)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;

    assert_eq!(
        listed(&*store, &index, "\"ann\"").await,
        [key("u1"), key("u2")]
    );
    store.index_remove(&index, &[key("u1")]).await.unwrap();
    let found = store
        .user_sessions(&index, "user_id", "\"ann\"", now_ms())
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, key("u2"));
    assert_eq!(
        found[0].1.as_ref().map(|r| r.fields.clone()),
        Some(fields(&[("user_id", "\"ann\"")]))
    );
    // An update that slides its user's index: true for a live session, and its entry is
    // there afterwards even when the index had lost it (evicted, or a session from before
    // `user_field`); false for a gone session, which is not put (back) in any index.
    fn entry(index: &str) -> IndexEntry<'_> {
        IndexEntry {
            key: index,
            deadline_ms: now_ms() + 60_000,
        }
    }
    store.index_remove(&index, &[key("u2")]).await.unwrap();
    assert!(listed(&*store, &index, "\"ann\"").await.is_empty());
    assert!(store
        .update_sliding_index(&key("u2"), &Change::default(), now_ms(), ttl, entry(&index))
        .await
        .unwrap());
    assert_eq!(listed(&*store, &index, "\"ann\"").await, [key("u2")]);
    let ghost_index = format!("{prefix}user:ghost");
    assert!(!store
        .update_sliding_index(
            &key("ghost"),
            &Change::default(),
            now_ms(),
            ttl,
            entry(&ghost_index)
        )
        .await
        .unwrap());
    store
        .create(
            &key("ghost"),
            &fields(&[("user_id", "\"ann\"")]),
            now_ms(),
            ttl,
        )
        .await
        .unwrap();
    assert!(
        listed(&*store, &ghost_index, "\"ann\"").await.is_empty(),
        "the update of a gone session added no entry"
    );
    store.destroy(&key("ghost")).await.unwrap();

    // Writes in flight: the engine indexes a session first and writes it next (a login
    // creating it, a regenerate, a user field set on a live session). A listing in between
    // skips the entry but must keep it, or the session would escape every later logout.
    let flight_index = format!("{prefix}user:flight");
    let now = now_ms();
    store
        .create(&key("anon"), &fields(&[("theme", "\"dark\"")]), now, ttl)
        .await
        .unwrap();
    for name in ["login", "anon"] {
        store
            .index_add(&flight_index, &key(name), now + 60_000, now, ttl)
            .await
            .unwrap();
    }
    assert!(listed(&*store, &flight_index, "\"cy\"").await.is_empty());
    store
        .create(&key("login"), &fields(&[("user_id", "\"cy\"")]), now, ttl)
        .await
        .unwrap();
    let change = Change {
        set: fields(&[("user_id", "\"cy\"")]),
        delete: vec![],
    };
    assert!(store.update(&key("anon"), &change, now, ttl).await.unwrap());
    assert_eq!(
        listed(&*store, &flight_index, "\"cy\"").await,
        [key("anon"), key("login")]
    );
    store
        .index_remove(&flight_index, &[key("anon"), key("login")])
        .await
        .unwrap();
    for name in ["anon", "login"] {
        store.destroy(&key(name)).await.unwrap();
    }
}
