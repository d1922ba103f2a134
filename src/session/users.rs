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

/// Ends every session of `user` found through the index, plus `also` (the current session
/// of a `destroy-all`, which may not be indexed yet). Returns how many existed.
pub async fn log_out(
    store: &Store,
    field: &str,
    user: &str,
    also: Option<&str>,
) -> Result<usize, StoreError> {
    let mut keys: Vec<String> = sessions_of(store, field, user)
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    if let Some(extra) = also {
        if !keys.iter().any(|k| k == extra) {
            keys.push(extra.to_string());
        }
    }
    if keys.is_empty() {
        return Ok(0);
    }
    store.destroy_many(user, &keys).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
