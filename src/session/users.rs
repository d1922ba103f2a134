//! The per-user index rules (`session.user_field`), in one place: which user a session
//! names before and after a change, and how a user is logged out everywhere — used by the
//! `destroy-all` action and by the admin API alike.

use super::model::Change;
use crate::store::{SessionRecord, Store, StoreError};

/// The user a session's fields name (the field's JSON text), if `field` is configured.
pub fn user_in(field: Option<&str>, fields: &[(String, String)]) -> Option<String> {
    let field = field?;
    fields
        .iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v.clone())
}

/// The user after `change` is applied to a session that named `before`.
pub fn user_after(field: Option<&str>, before: Option<&str>, change: &Change) -> Option<String> {
    let field = field?;
    if change.delete.iter().any(|k| k == field) {
        return None;
    }
    match change.set.iter().find(|(k, _)| k == field) {
        Some((_, v)) => Some(v.clone()),
        None => before.map(str::to_string),
    }
}

/// The index entry a write must add first (so "log out everywhere" can never miss the
/// session): the user after the write, when it differs from the user before.
pub fn to_index<'a>(before: Option<&str>, after: Option<&'a str>) -> Option<&'a str> {
    after.filter(|a| before != Some(*a))
}

/// The index entry a successful write made stale: the user before, when it changed.
pub fn to_unindex<'a>(before: Option<&'a str>, after: Option<&str>) -> Option<&'a str> {
    before.filter(|b| after != Some(*b))
}

/// The live sessions of `user` (JSON text), each verified to still name that user.
pub async fn sessions_of(
    store: &Store,
    field: &str,
    user: &str,
) -> Result<Vec<(String, Option<SessionRecord>)>, StoreError> {
    store.user_sessions(field, user).await
}

/// How many times [`log_out`] lists the index at most.
const LOG_OUT_ROUNDS: usize = 4;

/// Ends every session of `user` found through the index, and `last` (the session of a
/// `destroy-all`) after all the others. Returns how many existed.
///
/// The index is listed again after each round of deletes, until a listing finds nothing
/// new: a regenerate of one of the user's sessions that was in flight during the first
/// listing has either landed (its new key is indexed and live, so the next listing finds it)
/// or will find its old session gone and write nothing. Without that second look, a login
/// renewed while "log out everywhere" ran would survive it. `last` goes last so that a
/// logout that fails half way leaves the session that asked for it, to ask again.
pub async fn log_out(
    store: &Store,
    field: &str,
    user: &str,
    last: Option<&str>,
) -> Result<usize, StoreError> {
    let mut ended = 0;
    let mut seen: std::collections::HashSet<String> =
        last.map(str::to_string).into_iter().collect();
    for _ in 0..LOG_OUT_ROUNDS {
        let keys: Vec<String> = sessions_of(store, field, user)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !seen.contains(k))
            .collect();
        if keys.is_empty() {
            break;
        }
        ended += store.destroy_many(user, &keys).await?;
        seen.extend(keys);
    }
    if let Some(last) = last {
        ended += store.destroy_many(user, &[last.to_string()]).await?;
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::now_ms;

    fn change(set: &[(&str, &str)], delete: &[&str]) -> Change {
        Change {
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            delete: delete.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn the_user_follows_sets_and_deletes_of_its_field() {
        let f = Some("uid");
        let fields = vec![("uid".to_string(), "\"alice\"".to_string())];
        assert_eq!(user_in(f, &fields).as_deref(), Some("\"alice\""));
        assert_eq!(user_in(None, &fields), None);
        let before = Some("\"alice\"");
        assert_eq!(
            user_after(f, before, &change(&[("cart", "1")], &[])).as_deref(),
            before
        );
        assert_eq!(
            user_after(f, before, &change(&[("uid", "\"bob\"")], &[])).as_deref(),
            Some("\"bob\"")
        );
        assert_eq!(user_after(f, before, &change(&[], &["uid"])), None);
        assert_eq!(
            user_after(None, before, &change(&[("uid", "1")], &[])),
            None
        );
    }

    #[test]
    fn index_before_and_unindex_after_only_on_a_change_of_user() {
        assert_eq!(to_index(None, Some("a")), Some("a"));
        assert_eq!(to_index(Some("a"), Some("a")), None);
        assert_eq!(to_index(Some("a"), Some("b")), Some("b"));
        assert_eq!(to_index(Some("a"), None), None);
        assert_eq!(to_unindex(Some("a"), Some("b")), Some("a"));
        assert_eq!(to_unindex(Some("a"), Some("a")), None);
        assert_eq!(to_unindex(Some("a"), None), Some("a"));
        assert_eq!(to_unindex(None, Some("a")), None);
    }

    /// A memory store where things happen during a logout: with `renew`, a regenerate of
    /// `from` into `to` lands just before the first destroy of `from` (a login renewed
    /// between a logout's listing and its deletes); with `fail`, destroying that key fails.
    #[derive(Default)]
    struct Scripted {
        inner: Option<crate::store::memory::MemoryStore>,
        renew: Option<(&'static str, &'static str)>,
        fail: Option<&'static str>,
        fired: std::sync::atomic::AtomicBool,
    }

    impl Scripted {
        fn inner(&self) -> &crate::store::memory::MemoryStore {
            self.inner.as_ref().expect("a store")
        }

        fn into_store(mut self) -> Store {
            self.inner = Some(crate::store::memory::MemoryStore::open(100, None));
            Store::new(
                std::sync::Arc::new(self),
                Duration::from_secs(1),
                "s:",
                std::sync::Arc::new(crate::metrics::Metrics::new()),
            )
        }
    }

    #[async_trait::async_trait]
    impl crate::store::SessionStore for Scripted {
        async fn load(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
            self.inner().load(key).await
        }
        async fn create(
            &self,
            key: &str,
            fields: &[(String, String)],
            now_ms: u64,
            ttl: Duration,
        ) -> Result<(), StoreError> {
            self.inner().create(key, fields, now_ms, ttl).await
        }
        async fn update(
            &self,
            key: &str,
            change: &Change,
            now_ms: u64,
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            self.inner().update(key, change, now_ms, ttl).await
        }
        async fn regenerate(
            &self,
            old_key: &str,
            new_key: &str,
            change: &Change,
            now_ms: u64,
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            self.inner()
                .regenerate(old_key, new_key, change, now_ms, ttl)
                .await
        }
        async fn destroy(&self, key: &str) -> Result<bool, StoreError> {
            if self.fail == Some(key) {
                return Err(StoreError::Unavailable("scripted failure".into()));
            }
            if let Some((from, to)) = self.renew {
                if key == from && !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let renewed = self
                        .inner()
                        .regenerate(from, to, &Change::default(), now_ms(), TTL)
                        .await?;
                    assert!(renewed, "the regenerate landed");
                }
            }
            self.inner().destroy(key).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
        async fn index_add(
            &self,
            index_key: &str,
            key: &str,
            deadline_ms: u64,
            now_ms: u64,
            ttl: Duration,
        ) -> Result<(), StoreError> {
            self.inner()
                .index_add(index_key, key, deadline_ms, now_ms, ttl)
                .await
        }
        async fn index_remove(&self, index_key: &str, keys: &[String]) -> Result<(), StoreError> {
            self.inner().index_remove(index_key, keys).await
        }
        async fn user_sessions(
            &self,
            index_key: &str,
            user_field: &str,
            user: &str,
            now_ms: u64,
        ) -> Result<Vec<(String, Option<SessionRecord>)>, StoreError> {
            self.inner()
                .user_sessions(index_key, user_field, user, now_ms)
                .await
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_session_renewed_while_its_user_is_logged_out_everywhere_is_ended_too() {
        let store = Scripted {
            renew: Some(("s:old", "s:new")),
            ..Default::default()
        }
        .into_store();
        let user = "\"ann\"";
        let fields = vec![("uid".to_string(), user.to_string())];
        let (now, deadline) = (now_ms(), now_ms() + 600_000);
        store.create("s:old", &fields, now, TTL).await.unwrap();
        store.create("s:other", &fields, now, TTL).await.unwrap();
        // Indexed as the engine does; "s:new" before its regenerate is written.
        for key in ["s:old", "s:other", "s:new"] {
            store.index_add(user, key, deadline, TTL).await.unwrap();
        }
        let ended = log_out(&store, "uid", user, None).await.unwrap();
        assert_eq!(ended, 2, "s:other, and s:new (s:old had become s:new)");
        for key in ["s:old", "s:other", "s:new"] {
            assert!(store.load(key).await.unwrap().is_none(), "{key} ended");
        }
    }

    #[tokio::test]
    async fn a_logout_that_fails_half_way_leaves_the_session_that_asked_for_it() {
        let store = Scripted {
            fail: Some("s:other"),
            ..Default::default()
        }
        .into_store();
        let user = "\"ann\"";
        let fields = vec![("uid".to_string(), user.to_string())];
        let (now, deadline) = (now_ms(), now_ms() + 600_000);
        for key in ["s:me", "s:other"] {
            store.create(key, &fields, now, TTL).await.unwrap();
            store.index_add(user, key, deadline, TTL).await.unwrap();
        }
        assert!(log_out(&store, "uid", user, Some("s:me")).await.is_err());
        assert!(
            store.load("s:me").await.unwrap().is_some(),
            "the session that asked can ask again"
        );
    }
}
