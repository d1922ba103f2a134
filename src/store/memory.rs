//! The embedded memory store: sessions in a map under one mutex, with an expiry index that
//! serves both lazy expiry and the exact `max_sessions` bound (the session closest to expiry
//! is evicted first). With `persist_path`, the sessions are written atomically (temp file +
//! rename) at shutdown and read back at start; a corrupt file is set aside, never fatal.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{now_ms, SessionRecord, SessionStore, StoreError};
use crate::session::Change;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    fields: Vec<(String, String)>,
    created_ms: u64,
    touched_ms: u64,
    expires_ms: u64,
}

#[derive(Default)]
struct Sessions {
    map: HashMap<String, Entry>,
    /// (expires_ms, key) for every entry in `map`.
    by_expiry: BTreeSet<(u64, String)>,
    /// User index: index key -> (session key -> absolute deadline).
    users: HashMap<String, HashMap<String, u64>>,
    /// Entries in `users`, all indexes together.
    user_entries: usize,
}

impl Sessions {
    /// Drops index entries past their deadline or whose session is gone, in one index or,
    /// when `index` is `None`, in all of them.
    fn prune_index(&mut self, index: Option<&str>, now: u64) {
        let map = &self.map;
        let mut removed = 0;
        let mut prune = |members: &mut HashMap<String, u64>| {
            let before = members.len();
            members.retain(|k, deadline| {
                *deadline > now && map.get(k).is_some_and(|e| e.expires_ms > now)
            });
            removed += before - members.len();
        };
        match index {
            Some(i) => {
                if let Some(members) = self.users.get_mut(i) {
                    prune(members);
                }
            }
            None => self.users.values_mut().for_each(prune),
        }
        self.users.retain(|_, m| !m.is_empty());
        self.user_entries -= removed;
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.map.remove(key)?;
        self.by_expiry.remove(&(entry.expires_ms, key.to_string()));
        Some(entry)
    }

    /// The live entry for `key`, dropping it when it has expired.
    fn live(&mut self, key: &str, now: u64) -> Option<&mut Entry> {
        let expired = self.map.get(key)?.expires_ms <= now;
        if expired {
            self.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    fn set_expiry(&mut self, key: &str, expires_ms: u64) {
        if let Some(entry) = self.map.get_mut(key) {
            self.by_expiry.remove(&(entry.expires_ms, key.to_string()));
            entry.expires_ms = expires_ms;
            self.by_expiry.insert((expires_ms, key.to_string()));
        }
    }

    /// Inserts, first dropping expired entries and then, while full, the entry closest to
    /// expiry.
    fn insert(&mut self, key: String, entry: Entry, max: usize, now: u64) {
        self.remove(&key);
        while let Some((expires, _)) = self.by_expiry.first() {
            if *expires > now {
                break;
            }
            let (_, k) = self.by_expiry.pop_first().expect("checked non-empty");
            self.map.remove(&k);
        }
        while self.map.len() >= max {
            match self.by_expiry.pop_first() {
                Some((_, k)) => {
                    self.map.remove(&k);
                }
                None => break,
            }
        }
        self.by_expiry.insert((entry.expires_ms, key.clone()));
        self.map.insert(key, entry);
    }
}

fn apply(entry: &mut Entry, change: &Change) {
    entry.fields.retain(|(k, _)| !change.delete.contains(k));
    for (k, v) in &change.set {
        match entry.fields.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v.clone(),
            None => entry.fields.push((k.clone(), v.clone())),
        }
    }
}

/// The embedded store.
pub struct MemoryStore {
    sessions: Mutex<Sessions>,
    max_sessions: usize,
    persist_path: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    sessions: Vec<(String, Entry)>,
}

const SNAPSHOT_VERSION: u32 = 1;

impl MemoryStore {
    /// A store bounded to `max_sessions`, loaded from `persist_path` when that file exists.
    pub fn open(max_sessions: usize, persist_path: Option<PathBuf>) -> MemoryStore {
        let store = MemoryStore {
            sessions: Mutex::new(Sessions::default()),
            max_sessions: max_sessions.max(1),
            persist_path,
        };
        if let Some(path) = &store.persist_path {
            store.restore(path);
        }
        store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters more than losing every session, so keep serving.
        self.sessions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Number of live and not yet swept sessions.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn restore(&self, path: &Path) {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the memory store file; starting empty");
                return;
            }
        };
        let snapshot: Snapshot = match serde_json::from_slice::<Snapshot>(&bytes) {
            Ok(s) if s.version == SNAPSHOT_VERSION => s,
            Ok(s) => {
                self.set_aside(path, &format!("unknown version {}", s.version));
                return;
            }
            Err(e) => {
                self.set_aside(path, &e.to_string());
                return;
            }
        };
        let now = now_ms();
        let mut sessions = self.lock();
        let mut restored = 0usize;
        for (key, entry) in snapshot.sessions {
            if entry.expires_ms > now {
                sessions.insert(key, entry, self.max_sessions, now);
                restored += 1;
            }
        }
        tracing::info!(path = %path.display(), sessions = restored, "memory store restored");
    }

    fn set_aside(&self, path: &Path, reason: &str) {
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{}", now_ms() / 1000));
        let aside = PathBuf::from(aside);
        match std::fs::rename(path, &aside) {
            Ok(()) => tracing::error!(
                path = %path.display(),
                moved_to = %aside.display(),
                reason,
                "memory store file is corrupt; set it aside and starting empty"
            ),
            Err(e) => tracing::error!(
                path = %path.display(),
                reason,
                error = %e,
                "memory store file is corrupt and could not be moved; starting empty"
            ),
        }
    }

    /// Writes every live session to `persist_path` atomically. No-op without a path.
    pub fn persist(&self) -> std::io::Result<()> {
        let Some(path) = &self.persist_path else {
            return Ok(());
        };
        let now = now_ms();
        let snapshot = {
            let sessions = self.lock();
            Snapshot {
                version: SNAPSHOT_VERSION,
                sessions: sessions
                    .map
                    .iter()
                    .filter(|(_, e)| e.expires_ms > now)
                    .map(|(k, e)| (k.clone(), e.clone()))
                    .collect(),
            }
        };
        let bytes = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        tracing::info!(path = %path.display(), sessions = snapshot.sessions.len(), "memory store saved");
        Ok(())
    }
}

fn expiry(now: u64, ttl: Duration) -> u64 {
    now.saturating_add(ttl.as_millis() as u64)
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        let now = now_ms();
        let mut sessions = self.lock();
        Ok(sessions.live(key, now).map(|e| SessionRecord {
            fields: e.fields.clone(),
            created_ms: e.created_ms,
            touched_ms: e.touched_ms,
        }))
    }

    async fn create(
        &self,
        key: &str,
        fields: &[(String, String)],
        now_ms: u64,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let entry = Entry {
            fields: fields.to_vec(),
            created_ms: now_ms,
            touched_ms: now_ms,
            expires_ms: expiry(now_ms, ttl),
        };
        self.lock()
            .insert(key.to_string(), entry, self.max_sessions, now_ms);
        Ok(())
    }

    async fn update(
        &self,
        key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut sessions = self.lock();
        let Some(entry) = sessions.live(key, now_ms) else {
            return Ok(false);
        };
        apply(entry, change);
        entry.touched_ms = now_ms;
        sessions.set_expiry(key, expiry(now_ms, ttl));
        Ok(true)
    }

    async fn regenerate(
        &self,
        old_key: &str,
        new_key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut sessions = self.lock();
        if sessions.live(old_key, now_ms).is_none() {
            return Ok(false);
        }
        let mut entry = sessions.remove(old_key).expect("checked live");
        apply(&mut entry, change);
        entry.touched_ms = now_ms;
        entry.expires_ms = expiry(now_ms, ttl);
        sessions.insert(new_key.to_string(), entry, self.max_sessions, now_ms);
        Ok(true)
    }

    async fn destroy(&self, key: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut sessions = self.lock();
        let live = sessions.live(key, now).is_some();
        sessions.remove(key);
        Ok(live)
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
        _ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut sessions = self.lock();
        sessions.prune_index(Some(index_key), now_ms);
        // Keep the whole index bounded by the sessions it can refer to.
        if sessions.user_entries >= self.max_sessions.saturating_mul(2) {
            sessions.prune_index(None, now_ms);
        }
        let added = sessions
            .users
            .entry(index_key.to_string())
            .or_default()
            .insert(key.to_string(), deadline_ms)
            .is_none();
        if added {
            sessions.user_entries += 1;
        }
        Ok(())
    }

    async fn index_remove(&self, index_key: &str, keys: &[String]) -> Result<(), StoreError> {
        let mut sessions = self.lock();
        let Some(members) = sessions.users.get_mut(index_key) else {
            return Ok(());
        };
        let removed = keys.iter().filter(|k| members.remove(*k).is_some()).count();
        let empty = members.is_empty();
        sessions.user_entries -= removed;
        if empty {
            sessions.users.remove(index_key);
        }
        Ok(())
    }

    async fn user_sessions(
        &self,
        index_key: &str,
        user_field: &str,
        user: &str,
        now_ms: u64,
    ) -> Result<Vec<(String, Option<SessionRecord>)>, StoreError> {
        let mut sessions = self.lock();
        sessions.prune_index(Some(index_key), now_ms);
        let members: Vec<String> = sessions
            .users
            .get(index_key)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let mut found = Vec::new();
        for key in members {
            let entry = &sessions.map[&key];
            if entry
                .fields
                .iter()
                .any(|(k, v)| k == user_field && v == user)
            {
                found.push((
                    key,
                    Some(SessionRecord {
                        fields: entry.fields.clone(),
                        created_ms: entry.created_ms,
                        touched_ms: entry.touched_ms,
                    }),
                ));
            } else if let Some(m) = sessions.users.get_mut(index_key) {
                m.remove(&key);
                sessions.user_entries -= 1;
            }
        }
        Ok(found)
    }

    async fn close(&self) {
        if let Err(e) = self.persist() {
            tracing::error!(error = %e, "could not save the memory store");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("f{i}"), i.to_string())).collect()
    }

    #[tokio::test]
    async fn bound_is_exact_and_evicts_closest_to_expiry() {
        let store = MemoryStore::open(3, None);
        let now = now_ms();
        store
            .create("a", &fields(1), now, Duration::from_secs(100))
            .await
            .unwrap();
        store
            .create("b", &fields(1), now, Duration::from_secs(10))
            .await
            .unwrap();
        store
            .create("c", &fields(1), now, Duration::from_secs(200))
            .await
            .unwrap();
        store
            .create("d", &fields(1), now, Duration::from_secs(300))
            .await
            .unwrap();
        assert_eq!(store.len(), 3);
        assert!(store.load("b").await.unwrap().is_none());
        for k in ["a", "c", "d"] {
            assert!(store.load(k).await.unwrap().is_some(), "{k}");
        }
    }

    #[tokio::test]
    async fn persist_round_trip_and_corrupt_file_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let store = MemoryStore::open(10, Some(path.clone()));
        store
            .create("k", &fields(2), now_ms(), Duration::from_secs(60))
            .await
            .unwrap();
        store.persist().unwrap();
        let reopened = MemoryStore::open(10, Some(path.clone()));
        assert_eq!(reopened.load("k").await.unwrap().unwrap().fields, fields(2));

        std::fs::write(&path, b"{not json").unwrap();
        let fresh = MemoryStore::open(10, Some(path.clone()));
        assert!(fresh.is_empty());
        assert!(!path.exists());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
    }
}
