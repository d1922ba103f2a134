//! Loading: text -> YAML tree -> `${VAR}` expansion -> [`FileConfig`] -> [`validate`], with
//! every problem collected under its key path.
//!
//! A key that cannot be typed (unknown, or of the wrong type) is reported, removed from the
//! tree and the tree typed again, so one mistake does not hide the next.

use std::fmt;
use std::path::Path;

use serde_path_to_error::Segment;
use serde_yaml::Value;

use super::file::FileConfig;
use super::validate::validate;
use super::Config;

/// One problem in the configuration, tied to the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `cookie.secrets[0]`; empty for the file as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The problems found so far. Only the first problem of each key is kept (a key whose
/// `${VAR}` failed to expand is not also reported as, say, too short), and a key that could
/// not be read hides later problems at or inside it (a `cookie: 5` is not also missing its
/// secrets).
#[derive(Default)]
pub(super) struct Problems {
    found: Vec<ConfigError>,
    unreadable: Vec<String>,
}

impl Problems {
    /// Records a problem at a key path (`""` for the file as a whole).
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if !path.is_empty() && self.reported(&path) {
            return;
        }
        if self.unreadable.iter().any(|u| is_at_or_inside(&path, u)) {
            return;
        }
        self.found.push(ConfigError {
            path,
            message: message.into(),
        });
    }

    /// Whether a problem at exactly this key has been recorded.
    pub(super) fn reported(&self, path: &str) -> bool {
        self.found.iter().any(|e| e.path == path)
    }

    fn mark_unreadable(&mut self, path: String) {
        self.unreadable.push(path);
    }

    fn finish(self, config: Option<Config>) -> Result<Config, ConfigErrors> {
        match config {
            Some(c) if self.found.is_empty() => Ok(c),
            _ => Err(ConfigErrors(self.found)),
        }
    }
}

/// `cookie.secrets[1]` is at or inside `cookie.secrets` and `cookie`, not inside `cook`.
fn is_at_or_inside(path: &str, key: &str) -> bool {
    match path.strip_prefix(key) {
        Some(rest) => rest.is_empty() || rest.starts_with(['.', '[']),
        None => false,
    }
}

impl Config {
    /// Reads and validates a file, expanding `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Config::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Validates YAML text; `env` looks up the variables of `${VAR}`.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let mut problems = Problems::default();
        let config = read(text, env, &mut problems).and_then(|file| validate(file, &mut problems));
        problems.finish(config)
    }
}

/// Text to file structs: every key that could be read, every problem recorded.
fn read(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<FileConfig> {
    let mut tree: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.add("", format!("not valid YAML: {e}"));
            return None;
        }
    };
    if tree.is_null() {
        tree = Value::Mapping(Default::default());
    }
    expand_env(&mut tree, String::new(), env, problems);
    typed(tree, problems)
}

/// More problems than any real file has; a file with more is reported up to here.
const MAX_TYPE_PROBLEMS: usize = 64;

/// Types the tree. A key that fails is reported with its path and removed (a list, as a
/// whole, when one of its items fails), and the tree typed again.
fn typed(mut tree: Value, problems: &mut Problems) -> Option<FileConfig> {
    for _ in 0..MAX_TYPE_PROBLEMS {
        let e = match serde_path_to_error::deserialize::<_, FileConfig>(tree.clone()) {
            Ok(file) => return Some(file),
            Err(e) => e,
        };
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        problems.add(path, clean_serde_message(&e.inner().to_string()));
        let keys: Vec<String> = e
            .path()
            .iter()
            .map_while(|s| match s {
                Segment::Map { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        if keys.is_empty() || !remove_key(&mut tree, &keys) {
            return None;
        }
        problems.mark_unreadable(keys.join("."));
    }
    None
}

/// serde_yaml appends " at line N column M" which refers to the expanded tree, not the file.
/// A type error quotes the value it found (`invalid type: string "…", expected …`), and that
/// value may be a secret (a `${SESSION_SECRET}` written where a list belongs): the value is
/// left out, the types stay.
fn clean_serde_message(message: &str) -> String {
    let message = match message.find(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    let quotes_a_value =
        message.starts_with("invalid type: ") || message.starts_with("invalid value: ");
    match (quotes_a_value, message.find(", expected ")) {
        (true, Some(expected)) => {
            let found = &message[..expected];
            let kind = match found.find(['"', '`', '\'']) {
                Some(q) => found[..q].trim_end(),
                None => found,
            };
            format!("{kind}{}", &message[expected..])
        }
        _ => message.to_string(),
    }
}

/// Removes the value at a path of mapping keys; false when there is none.
fn remove_key(value: &mut Value, path: &[String]) -> bool {
    let Value::Mapping(map) = value else {
        return false;
    };
    let key = Value::String(path[0].clone());
    if path.len() == 1 {
        return map.remove(&key).is_some();
    }
    match map.get_mut(&key) {
        Some(child) => remove_key(child, &path[1..]),
        None => false,
    }
}

/// Replaces `${NAME}` in every string of the tree by the variable's value.
fn expand_env(
    value: &mut Value,
    path: String,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) {
    match value {
        Value::String(s) if s.contains("${") => match expand_string(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.add(path, message),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_env(item, format!("{path}[{i}]"), env, problems);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = match key {
                    Value::String(k) => k.clone(),
                    other => format!("{other:?}"),
                };
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                expand_env(item, child, env, problems);
            }
        }
        Value::Tagged(tagged) => expand_env(&mut tagged.value, path, env, problems),
        _ => {}
    }
}

fn expand_string(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated `${` (write ${NAME})".to_string())?;
        let name = &after[..end];
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!("`${{{name}}}` is not a valid variable reference"));
        }
        match env(name) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_hides_later_ones_at_or_inside_an_unreadable_key() {
        let mut p = Problems::default();
        p.add("cookie", "invalid type");
        p.mark_unreadable("cookie".to_string());
        p.add("cookie.secrets", "is required");
        p.add("cookie", "again");
        p.add("cookie_jar", "unrelated");
        p.add("store.kind", "bad");
        p.add("store.kind", "twice");
        p.add("", "file-wide");
        p.add("", "file-wide too");
        let lines: Vec<String> = p.found.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            lines,
            [
                "cookie: invalid type",
                "cookie_jar: unrelated",
                "store.kind: bad",
                "file-wide",
                "file-wide too"
            ]
        );
        assert!(p.reported("store.kind") && !p.reported("store"));
    }

    #[test]
    fn env_references_expand_or_name_the_problem() {
        let env = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand_string("${A}-${A}", &env).unwrap(), "x-x");
        assert_eq!(
            expand_string("${B}", &env).unwrap_err(),
            "environment variable B is not set"
        );
        assert!(expand_string("${A", &env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(expand_string("${1A}", &env)
            .unwrap_err()
            .contains("not a valid variable reference"));
    }
}
