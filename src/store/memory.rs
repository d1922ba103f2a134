//! The embedded memory store: sessions in a map under one mutex, with an expiry index that
//! serves expiry and the exact `max_sessions` bound (the session closest to expiry is evicted
//! first). Expired sessions are dropped when they are next touched and by a sweeper thread
//! once a second, and a session leaves the user index when it goes, so nothing of an ended
//! session stays in memory. With `persist_path`, the sessions and their user index are
//! written atomically (temp file + rename) at shutdown and read back at start; a corrupt file
//! is set aside, never fatal.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{now_ms, IndexEntry, SessionRecord, SessionStore, StoreError};
use crate::session::Change;

/// How often the sweeper drops expired sessions, and how many at most per round (the lock is
/// held for one round).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const SWEEP_MAX: usize = 10_000;
/// An index entry whose session does not exist is kept this long: the engine indexes a
/// session just before it writes it, and an entry whose write never came (the request was
/// dropped in between) goes after this.
const UNWRITTEN_GRACE_MS: u64 = 60_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    fields: Vec<(String, String)>,
    created_ms: u64,
    touched_ms: u64,
    expires_ms: u64,
}

/// A session's entry in a user index.
#[derive(Debug, Clone, Copy)]
struct Member {
    deadline_ms: u64,
    added_ms: u64,
}

#[derive(Default)]
struct Sessions {
    map: HashMap<String, Entry>,
    /// (expires_ms, key) for every entry in `map`.
    by_expiry: BTreeSet<(u64, String)>,
    /// User index: index key -> (session key -> entry).
    users: HashMap<String, HashMap<String, Member>>,
    /// The reverse of `users`: session key -> the indexes it is in, so a session that goes
    /// takes its index entries with it.
    memberships: HashMap<String, Vec<String>>,
    /// Entries in `users`, all indexes together.
    user_entries: usize,
}

impl Sessions {
    fn add_member(&mut self, index: &str, key: &str, member: Member) {
        let members = self.users.entry(index.to_string()).or_default();
        if members.insert(key.to_string(), member).is_none() {
            self.user_entries += 1;
            self.memberships
                .entry(key.to_string())
                .or_default()
                .push(index.to_string());
        }
    }

    /// Takes `key` out of `index` (dropping the index when it empties); its `memberships`
    /// are the caller's to keep right.
    fn drop_entry(&mut self, index: &str, key: &str) -> bool {
        let Some(members) = self.users.get_mut(index) else {
            return false;
        };
        let dropped = members.remove(key).is_some();
        if dropped {
            self.user_entries -= 1;
        }
        if members.is_empty() {
            self.users.remove(index);
        }
        dropped
    }

    fn remove_member(&mut self, index: &str, key: &str) {
        if !self.drop_entry(index, key) {
            return;
        }
        if let Some(indexes) = self.memberships.get_mut(key) {
            indexes.retain(|i| i != index);
            if indexes.is_empty() {
                self.memberships.remove(key);
            }
        }
    }

    /// Takes session `key` out of every index it is in.
    fn unindex(&mut self, key: &str) {
        for index in self.memberships.remove(key).unwrap_or_default() {
            self.drop_entry(&index, key);
        }
    }

    /// Drops index entries past their deadline, and entries whose session was never written
    /// within [`UNWRITTEN_GRACE_MS`], in one index or, when `index` is `None`, in all of them.
    fn prune_index(&mut self, index: Option<&str>, now: u64) {
        let map = &self.map;
        let dead = |key: &String, m: &Member| {
            m.deadline_ms <= now
                || (!map.contains_key(key) && m.added_ms.saturating_add(UNWRITTEN_GRACE_MS) <= now)
        };
        let indexes: Box<dyn Iterator<Item = (&String, &HashMap<String, Member>)>> = match index {
            Some(i) => Box::new(self.users.get_key_value(i).into_iter()),
            None => Box::new(self.users.iter()),
        };
        let doomed: Vec<(String, String)> = indexes
            .flat_map(|(i, members)| {
                members
                    .iter()
                    .filter(|(k, m)| dead(k, m))
                    .map(move |(k, _)| (i.clone(), k.clone()))
            })
            .collect();
        for (index, key) in doomed {
            self.remove_member(&index, &key);
        }
    }

    /// Removes a session and its index entries.
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.map.remove(key)?;
        self.by_expiry.remove(&(entry.expires_ms, key.to_string()));
        self.unindex(key);
        Some(entry)
    }

    /// Removes the session closest to expiry, if any.
    fn pop_first(&mut self) -> Option<u64> {
        let (expires, key) = self.by_expiry.pop_first()?;
        self.map.remove(&key);
        self.unindex(&key);
        Some(expires)
    }

    /// Drops up to `max` sessions that have expired by `now`; how many it dropped.
    fn expire(&mut self, now: u64, max: usize) -> usize {
        let mut dropped = 0;
        while dropped < max {
            match self.by_expiry.first() {
                Some((expires, _)) if *expires <= now => {
                    self.pop_first();
                    dropped += 1;
                }
                _ => break,
            }
        }
        dropped
    }

    /// Applies `change` to the live session `key` and slides its expiry; false when there is
    /// none.
    fn update(&mut self, key: &str, change: &Change, now: u64, ttl: Duration) -> bool {
        let Some(entry) = self.live(key, now) else {
            return false;
        };
        apply(entry, change);
        entry.touched_ms = now;
        self.set_expiry(key, expiry(now, ttl));
        true
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

    /// Inserts a session under a key that holds none, first dropping expired entries and
    /// then, while full, the entry closest to expiry. Index entries already made for `key`
    /// (a create indexed before it is written) stay.
    fn insert(&mut self, key: String, entry: Entry, max: usize, now: u64) {
        if let Some(old) = self.map.remove(&key) {
            self.by_expiry.remove(&(old.expires_ms, key.clone()));
        }
        self.expire(now, usize::MAX);
        while self.map.len() >= max && self.pop_first().is_some() {}
        self.by_expiry.insert((entry.expires_ms, key.clone()));
        self.map.insert(key, entry);
    }
}

/// Drops expired sessions once every [`SWEEP_EVERY`] until the store is gone.
fn spawn_sweeper(sessions: Weak<Mutex<Sessions>>) {
    let spawned = std::thread::Builder::new()
        .name("memory-store-sweep".into())
        .spawn(move || loop {
            std::thread::sleep(SWEEP_EVERY);
            let Some(sessions) = sessions.upgrade() else {
                return;
            };
            let mut sessions = sessions.lock().unwrap_or_else(|p| p.into_inner());
            let now = now_ms();
            sessions.expire(now, SWEEP_MAX);
        });
    if let Err(e) = spawned {
        // Expired sessions are still dropped when touched and when the store fills up.
        tracing::warn!(error = %e, "could not start the memory store's sweeper thread");
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
    sessions: Arc<Mutex<Sessions>>,
    max_sessions: usize,
    persist_path: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    sessions: Vec<(String, Entry)>,
    /// The user index: index key -> [(session key, deadline_ms)]. Absent in files written
    /// before it was saved.
    #[serde(default)]
    users: Vec<(String, Vec<(String, u64)>)>,
}

const SNAPSHOT_VERSION: u32 = 1;

impl MemoryStore {
    /// A store bounded to `max_sessions`, loaded from `persist_path` when that file exists.
    pub fn open(max_sessions: usize, persist_path: Option<PathBuf>) -> MemoryStore {
        let store = MemoryStore {
            sessions: Arc::new(Mutex::new(Sessions::default())),
            max_sessions: max_sessions.max(1),
            persist_path,
        };
        if let Some(path) = &store.persist_path {
            store.restore(path);
        }
        spawn_sweeper(Arc::downgrade(&store.sessions));
        store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters more than losing every session, so keep serving.
        self.sessions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Number of sessions held (live, or expired and not yet swept).
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
        for (index, members) in snapshot.users {
            for (key, deadline_ms) in members {
                if deadline_ms > now && sessions.map.contains_key(&key) {
                    let member = Member {
                        deadline_ms,
                        added_ms: now,
                    };
                    sessions.add_member(&index, &key, member);
                }
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
                users: sessions
                    .users
                    .iter()
                    .map(|(index, members)| {
                        let members = members
                            .iter()
                            .map(|(k, m)| (k.clone(), m.deadline_ms))
                            .collect();
                        (index.clone(), members)
                    })
                    .collect(),
            }
        };
        let bytes = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // Session data: readable by the sidecar's user only (a fresh file, so the mode
            // applies).
            let _ = std::fs::remove_file(&tmp);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
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
        Ok(self.lock().update(key, change, now_ms, ttl))
    }

    /// The update and the index entry under one lock: the entry is added only when missing,
    /// with no index pruning on this per-write path (pruning happens when entries are added
    /// by `index_add` and when sessions go).
    async fn update_sliding_index(
        &self,
        key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
        index: IndexEntry<'_>,
    ) -> Result<bool, StoreError> {
        let mut sessions = self.lock();
        if !sessions.update(key, change, now_ms, ttl) {
            return Ok(false);
        }
        let indexed = sessions
            .users
            .get(index.key)
            .is_some_and(|members| members.contains_key(key));
        if !indexed {
            let member = Member {
                deadline_ms: index.deadline_ms,
                added_ms: now_ms,
            };
            sessions.add_member(index.key, key, member);
        }
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
        let member = Member {
            deadline_ms,
            added_ms: now_ms,
        };
        sessions.add_member(index_key, key, member);
        Ok(())
    }

    async fn index_remove(&self, index_key: &str, keys: &[String]) -> Result<(), StoreError> {
        let mut sessions = self.lock();
        for key in keys {
            sessions.remove_member(index_key, key);
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
        // An entry whose session is missing or names someone else is skipped but kept: it
        // may be a write in flight (see `SessionStore::user_sessions`).
        let found = members
            .into_iter()
            .filter_map(|key| {
                let entry = sessions.live(&key, now_ms)?;
                let holds = entry
                    .fields
                    .iter()
                    .any(|(k, v)| k == user_field && v == user);
                holds.then(|| {
                    let record = SessionRecord {
                        fields: entry.fields.clone(),
                        created_ms: entry.created_ms,
                        touched_ms: entry.touched_ms,
                    };
                    (key, Some(record))
                })
            })
            .collect();
        Ok(found)
    }

    async fn close(&self) {
        if let Err(e) = self.persist() {
            let path = self.persist_path.as_deref().unwrap_or(Path::new(""));
            tracing::error!(path = %path.display(), error = %e, "could not save the memory store: its sessions are lost");
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
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "session data readable by its owner only"
        );
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

    fn user(name: &str) -> Vec<(String, String)> {
        vec![("uid".to_string(), format!("\"{name}\""))]
    }

    /// (index entries, indexes, sessions with a membership) as held in memory.
    fn index_size(store: &MemoryStore) -> (usize, usize, usize) {
        let s = store.lock();
        (s.user_entries, s.users.len(), s.memberships.len())
    }

    #[tokio::test]
    async fn expired_sessions_are_swept_without_being_touched_and_take_their_index_entries() {
        let store = MemoryStore::open(100, None);
        let now = now_ms();
        let ttl = Duration::from_millis(100);
        for k in ["a", "b"] {
            store.create(k, &user("ann"), now, ttl).await.unwrap();
            store
                .index_add("idx", k, now + 60_000, now, ttl)
                .await
                .unwrap();
        }
        store
            .create("long", &user("ann"), now, Duration::from_secs(60))
            .await
            .unwrap();
        store
            .index_add("idx", "long", now + 60_000, now, ttl)
            .await
            .unwrap();
        assert_eq!(index_size(&store), (3, 1, 3));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while store.len() > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(store.len(), 1, "the sweeper dropped the expired sessions");
        assert_eq!(index_size(&store), (1, 1, 1), "and their index entries");
        assert!(store.destroy("long").await.unwrap());
        assert_eq!(
            index_size(&store),
            (0, 0, 0),
            "a destroyed session leaves the index"
        );
    }

    #[tokio::test]
    async fn evicted_and_regenerated_sessions_leave_the_index() {
        let store = MemoryStore::open(1, None);
        let now = now_ms();
        let ttl = Duration::from_secs(60);
        store.create("a", &user("ann"), now, ttl).await.unwrap();
        store
            .index_add("idx", "a", now + 60_000, now, ttl)
            .await
            .unwrap();
        // The engine indexes the new key first, then regenerates.
        store
            .index_add("idx", "b", now + 60_000, now, ttl)
            .await
            .unwrap();
        let change = Change::default();
        assert!(store.regenerate("a", "b", &change, now, ttl).await.unwrap());
        assert_eq!(index_size(&store), (1, 1, 1), "only the new key is indexed");
        let found = store
            .user_sessions("idx", "uid", "\"ann\"", now)
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "b");
        // Full at one session: creating another evicts "b", and its index entry with it.
        store.create("c", &user("bob"), now, ttl).await.unwrap();
        assert!(store.load("b").await.unwrap().is_none());
        assert_eq!(index_size(&store), (0, 0, 0));
    }

    #[tokio::test]
    async fn an_entry_for_a_write_in_flight_is_kept_and_one_never_written_goes_later() {
        let store = MemoryStore::open(10, None);
        let now = now_ms();
        let ttl = Duration::from_secs(60);
        store
            .index_add("idx", "late", now + 600_000, now, ttl)
            .await
            .unwrap();
        store
            .index_add("idx", "never", now + 600_000, now, ttl)
            .await
            .unwrap();
        assert!(store
            .user_sessions("idx", "uid", "\"ann\"", now)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            index_size(&store).0,
            2,
            "a listing keeps entries it cannot list yet"
        );
        store.create("late", &user("ann"), now, ttl).await.unwrap();
        let found = store
            .user_sessions("idx", "uid", "\"ann\"", now)
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "late");
        // An entry whose session never came goes after the grace period.
        store.lock().prune_index(None, now + UNWRITTEN_GRACE_MS + 1);
        assert_eq!(index_size(&store), (1, 1, 1));
    }

    #[tokio::test]
    async fn the_user_index_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let store = MemoryStore::open(10, Some(path.clone()));
        let now = now_ms();
        let ttl = Duration::from_secs(60);
        store.create("k", &user("ann"), now, ttl).await.unwrap();
        store
            .index_add("idx", "k", now + 60_000, now, ttl)
            .await
            .unwrap();
        // An entry past its deadline is not carried over.
        store.create("old", &user("ann"), now, ttl).await.unwrap();
        store
            .index_add("idx", "old", now + 1, now, ttl)
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        store.persist().unwrap();
        let reopened = MemoryStore::open(10, Some(path.clone()));
        let found = reopened
            .user_sessions("idx", "uid", "\"ann\"", now_ms())
            .await
            .unwrap();
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["k"]);

        // A file written before the index was saved still loads (its sessions, no index).
        let old = serde_json::json!({"version": 1, "sessions": [["s", {
            "fields": [], "created_ms": now, "touched_ms": now, "expires_ms": now + 60_000
        }]]});
        std::fs::write(&path, old.to_string()).unwrap();
        let older = MemoryStore::open(10, Some(path));
        assert!(older.load("s").await.unwrap().is_some());
    }
}
