//! What a session is made of and what an app can ask of it: a [`Change`] of fields, an
//! [`Action`], the reserved-key rule, and why a change is rejected. No HTTP, no store.

/// Prefix of the sidecar's own metadata fields, never shown to or writable by the app.
pub const RESERVED_PREFIX: &str = "__";

/// True for a field name only the sidecar may write (metadata such as `__created`).
pub fn is_reserved_key(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// One response's change to a session: fields to set (name, canonical JSON text) and fields
/// to delete, each name at most once, in the order the app wrote them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub set: Vec<(String, String)>,
    pub delete: Vec<String>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.delete.is_empty()
    }

    /// The fields after this change is applied to `current`.
    pub fn merged(&self, current: &[(String, String)]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = current
            .iter()
            .filter(|(k, _)| !self.delete.contains(k) && !self.set.iter().any(|(s, _)| s == k))
            .cloned()
            .collect();
        out.extend(self.set.iter().cloned());
        out
    }
}

/// Why a response's `X-Session-Set` headers were rejected (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SetRejection {
    #[error("X-Session-Set is not a JSON object or has an empty key")]
    Malformed,
    #[error("X-Session-Set writes a reserved key (starting with __)")]
    ReservedKey,
    #[error("the session would exceed session.max_bytes")]
    TooLarge,
}

impl SetRejection {
    pub fn label(self) -> &'static str {
        match self {
            SetRejection::Malformed => "malformed",
            SetRejection::ReservedKey => "reserved_key",
            SetRejection::TooLarge => "too_large",
        }
    }
}

/// What the app asked for with `X-Session-Action`; the strongest wins
/// (destroy-all over destroy over regenerate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Regenerate,
    Destroy,
    DestroyAll,
}

/// Everything one response asked of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instructions {
    pub action: Option<Action>,
    /// The response's `X-Session-Set` headers as one change, or why they were rejected.
    pub change: Result<Change, SetRejection>,
}

impl Instructions {
    /// A response that asked nothing.
    pub fn none() -> Instructions {
        Instructions {
            action: None,
            change: Ok(Change::default()),
        }
    }
}

impl Default for Instructions {
    fn default() -> Self {
        Instructions::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_replaces_deletes_and_appends() {
        let current = vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ];
        let change = Change {
            set: vec![("b".into(), "3".into()), ("c".into(), "4".into())],
            delete: vec!["a".into()],
        };
        assert_eq!(
            change.merged(&current),
            vec![
                ("b".to_string(), "3".to_string()),
                ("c".to_string(), "4".to_string())
            ]
        );
    }

    #[test]
    fn reserved_keys_are_the_double_underscore_ones() {
        assert!(is_reserved_key("__created"));
        assert!(is_reserved_key("__"));
        assert!(!is_reserved_key("_user"));
        assert!(!is_reserved_key("user__"));
    }
}
