//! The Redis store shared by every Redis kind: a session is one hash (`key_prefix` + digest),
//! its TTL the session's expiry.
//!
//! [`RedisStore`] holds the scripts and parses the replies; how it reaches Redis is its
//! [`Connector`]: [`standalone`] (`kind: redis`), [`cluster`] (`redis-cluster`) or
//! [`sentinel`] (`redis-sentinel`), each building its clients through [`tls`]. Every write is
//! one Lua script, so a response's changes land atomically and never recreate a session that
//! expired or was destroyed meanwhile. Connections are made lazily, on the runtime of the
//! first operation, and re-made when Redis comes back.

pub mod cluster;
pub mod sentinel;
pub mod standalone;
pub mod tls;

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionLike;
use redis::{RedisError, Script};

use super::{IndexEntry, SessionRecord, SessionStore, StoreError, CREATED_FIELD, TOUCHED_FIELD};
use crate::session::{is_reserved_key, Change};

/// Creates or regenerates a session (updates, the hot write, use [`UPDATE_SCRIPT`]).
/// KEYS[1] = key (KEYS[2] = new key for `regenerate`).
/// ARGV: mode (create | update | regenerate), now_ms, ttl_ms, number of sets,
/// then name/value pairs, then names to delete. Returns 1, or 0 when the session is gone.
const WRITE_SCRIPT: &str = r#"
local mode = ARGV[1]
local key = KEYS[1]
if mode == 'create' then
  redis.call('DEL', key)
else
  if redis.call('EXISTS', key) == 0 then return 0 end
  if mode == 'regenerate' then
    redis.call('RENAME', key, KEYS[2])
    key = KEYS[2]
  end
end
local sets = {'__touched', ARGV[2]}
if mode == 'create' then
  sets[3] = '__created'
  sets[4] = ARGV[2]
end
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  sets[#sets + 1] = ARGV[i]
  sets[#sets + 1] = ARGV[i + 1]
  i = i + 2
  if #sets >= 1000 then
    redis.call('HSET', key, unpack(sets))
    sets = {}
  end
end
if #sets > 0 then redis.call('HSET', key, unpack(sets)) end
local dels = {}
while i <= #ARGV do
  dels[#dels + 1] = ARGV[i]
  i = i + 1
  if #dels >= 1000 then
    redis.call('HDEL', key, unpack(dels))
    dels = {}
  end
end
if #dels > 0 then redis.call('HDEL', key, unpack(dels)) end
redis.call('PEXPIRE', key, ARGV[3])
return 1
"#;

/// Updates an existing session: the hot write, one per response that changes a session or
/// refreshes its expiry. KEYS[1] = key; KEYS[2], optional, = its user index, which gets the
/// session as a member (score ARGV[4], its absolute deadline; an existing entry is left as
/// is) and a TTL raised to the session's (never lowered). ARGV: ttl_ms, now_ms, number of
/// sets, deadline_ms (0 without an index), then name/value pairs, then names to delete.
/// Returns 1, or 0 when the session is gone (nothing written, the index untouched).
///
/// `PEXPIRE` answers 0 for a missing key, so it is the existence check and the expiry refresh
/// in one call, before anything is written: an ended session is never recreated, nor put
/// back in an index. The index entry is written with `pcall`: an index key of another type
/// (not the sidecar's) must not fail an update whose session part is already written. Two to three `redis.call`s and no mode dispatch: ≈ 20 % fewer Redis
/// instructions than [`WRITE_SCRIPT`] for the same update (`benches/redis_scripts.py`).
/// `unpack` is chunked to stay within Lua's stack.
const UPDATE_SCRIPT: &str = r#"
local key = KEYS[1]
if redis.call('PEXPIRE', key, ARGV[1]) == 0 then return 0 end
local last = 4 + 2 * tonumber(ARGV[3])
if last <= 2004 then
  redis.call('HSET', key, '__touched', ARGV[2], unpack(ARGV, 5, last))
else
  redis.call('HSET', key, '__touched', ARGV[2])
  for i = 5, last, 2000 do
    redis.call('HSET', key, unpack(ARGV, i, math.min(i + 1999, last)))
  end
end
for i = last + 1, #ARGV, 2000 do
  redis.call('HDEL', key, unpack(ARGV, i, math.min(i + 1999, #ARGV)))
end
if KEYS[2] then
  redis.pcall('ZADD', KEYS[2], 'NX', ARGV[4], key)
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
end
return 1
"#;

/// A driver error as a [`StoreError`]: unreachable or slow is `Unavailable`, the rest a bad
/// reply.
fn store_error(e: RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Unavailable("timed out".into())
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::BadReply(e.to_string())
    }
}

/// How a Redis store reaches its server(s).
pub trait Connector: Send + Sync + 'static {
    type Conn: ConnectionLike + Clone + Send + Sync + 'static;
    /// A connection handle; cheap to call, connects lazily.
    fn connection(&self) -> Result<Self::Conn, StoreError>;
    /// True when the old and new key of a regenerate may live on different nodes, so the
    /// move cannot be one script.
    fn cross_slot(&self) -> bool {
        false
    }
}

/// The Redis [`SessionStore`] over any [`Connector`].
pub struct RedisStore<C: Connector> {
    connector: C,
    write: Script,
    update: Script,
    delete_if_unchanged: Script,
    index_add: Script,
}

impl<C: Connector> RedisStore<C> {
    pub fn new(connector: C) -> RedisStore<C> {
        RedisStore {
            connector,
            write: Script::new(WRITE_SCRIPT),
            update: Script::new(UPDATE_SCRIPT),
            delete_if_unchanged: Script::new(DELETE_IF_UNCHANGED_SCRIPT),
            index_add: Script::new(INDEX_ADD_SCRIPT),
        }
    }

    async fn write(
        &self,
        mode: &str,
        keys: &[&str],
        change_set: &[(String, String)],
        delete: &[String],
        now_ms: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.connector.connection()?;
        let mut invocation = self.write.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        invocation
            .arg(mode)
            .arg(now_ms)
            .arg(ttl_ms(ttl))
            .arg(change_set.len());
        for (k, v) in change_set {
            invocation.arg(k).arg(v);
        }
        for k in delete {
            invocation.arg(k);
        }
        let done: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(done == 1)
    }

    /// The session hash at `key`; empty when there is none. A key of another type (written
    /// by something else under the prefix) is read as no session, like corrupt metadata: a
    /// miss, never a store failure that would answer 503 until the key expires.
    async fn load_bytes(&self, key: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let mut conn = self.connector.connection()?;
        let reply = redis::cmd("HGETALL").arg(key).query_async(&mut conn).await;
        match reply {
            Err(e) if e.code() == Some("WRONGTYPE") => {
                super::note_corrupt_metadata();
                Ok(Vec::new())
            }
            other => other.map_err(store_error),
        }
    }

    async fn load_raw(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(lossy(self.load_bytes(key).await?))
    }

    /// The update script: KEYS[1] = the session, KEYS[2] = its user index, if any.
    async fn run_update(
        &self,
        key: &str,
        index: Option<IndexEntry<'_>>,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.connector.connection()?;
        let mut invocation = self.update.prepare_invoke();
        invocation.key(key);
        if let Some(index) = index {
            invocation.key(index.key);
        }
        invocation
            .arg(ttl_ms(ttl))
            .arg(now_ms)
            .arg(change.set.len())
            .arg(index.map_or(0, |i| i.deadline_ms));
        for (k, v) in &change.set {
            invocation.arg(k).arg(v);
        }
        for k in &change.delete {
            invocation.arg(k);
        }
        let done: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(done == 1)
    }

    /// Best-effort removal of a regenerate's copy that will never be handed out.
    async fn discard(&self, key: &str) {
        if let Ok(mut conn) = self.connector.connection() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
        }
    }

    /// Regenerate where old and new key may be on different nodes (Redis Cluster), so the
    /// move cannot be one script:
    ///
    /// 1. read the old hash;
    /// 2. write the new key (one script: fields with the change applied, metadata, TTL);
    /// 3. delete the old key, in one script, only if it still holds exactly what was read.
    ///
    /// `Ok(true)` only after step 3 deleted the old key, so the old ID is dead whenever the
    /// client gets the new one. If step 2 or 3 fails, the old key was never touched (the old
    /// session stays whole) and the copy is removed again. If the old session changed
    /// between 1 and 3 (a concurrent request wrote to it), the copy is redone, so that write
    /// is not lost; if it was destroyed meanwhile, the copy is removed and the answer is
    /// `Ok(false)`, as with the single-script path, so a logout is never undone.
    async fn regenerate_by_copy(
        &self,
        old_key: &str,
        new_key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        for _ in 0..REGENERATE_ATTEMPTS {
            let raw = self.load_bytes(old_key).await?;
            if raw.is_empty() {
                return Ok(false);
            }
            let pairs = lossy(raw.clone());
            let Some(record) = SessionRecord::from_hash(pairs.clone()) else {
                // Unreadable metadata is no session: nothing to move.
                super::note_corrupt_metadata();
                return Ok(false);
            };
            let mut fields = change.merged(&record.fields);
            // Metadata moves with the session (the script sets `__touched` itself).
            fields.extend(
                pairs
                    .into_iter()
                    .filter(|(k, _)| is_reserved_key(k) && k != TOUCHED_FIELD),
            );
            if !fields.iter().any(|(k, _)| k == CREATED_FIELD) {
                fields.push((CREATED_FIELD.to_string(), record.created_ms.to_string()));
            }
            if let Err(e) = self
                .write("create", &[new_key], &fields, &[], now_ms, ttl)
                .await
            {
                self.discard(new_key).await;
                return Err(e);
            }
            let mut conn = self.connector.connection()?;
            let mut delete = self.delete_if_unchanged.prepare_invoke();
            delete.key(old_key);
            for (k, v) in &raw {
                delete.arg(k.as_slice()).arg(v.as_slice());
            }
            match delete.invoke_async::<i64>(&mut conn).await {
                Ok(1) => return Ok(true),
                Ok(0) => {
                    self.discard(new_key).await;
                    return Ok(false);
                }
                Ok(_) => continue,
                Err(e) => {
                    self.discard(new_key).await;
                    return Err(store_error(e));
                }
            }
        }
        self.discard(new_key).await;
        Err(StoreError::Unavailable(
            "the session kept changing while it was being regenerated".into(),
        ))
    }
}

/// How often a cross-slot regenerate starts over when the session changes under it.
const REGENERATE_ATTEMPTS: usize = 3;

/// Deletes KEYS[1] only if it holds exactly the hash given as ARGV name/value pairs.
/// Returns 1 when deleted, 0 when the key is gone, -1 when it changed (nothing deleted).
const DELETE_IF_UNCHANGED_SCRIPT: &str = r#"
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return 0 end
if redis.call('HLEN', key) * 2 ~= #ARGV then return -1 end
for i = 1, #ARGV, 2 do
  if redis.call('HGET', key, ARGV[i]) ~= ARGV[i + 1] then return -1 end
end
redis.call('DEL', key)
return 1
"#;

fn lossy(raw: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(String, String)> {
    raw.into_iter()
        .map(|(k, v)| (lossy_string(k), lossy_string(v)))
        .collect()
}

/// The bytes as a `String`, reusing the buffer when they are valid UTF-8 (the usual case).
fn lossy_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[async_trait]
impl<C: Connector> SessionStore for RedisStore<C> {
    async fn load(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        let pairs = self.load_raw(key).await?;
        if pairs.is_empty() {
            return Ok(None);
        }
        let record = SessionRecord::from_hash(pairs);
        if record.is_none() {
            super::note_corrupt_metadata();
        }
        Ok(record)
    }

    async fn create(
        &self,
        key: &str,
        fields: &[(String, String)],
        now_ms: u64,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.write("create", &[key], fields, &[], now_ms, ttl)
            .await
            .map(|_| ())
    }

    async fn update(
        &self,
        key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.run_update(key, None, change, now_ms, ttl).await
    }

    async fn update_sliding_index(
        &self,
        key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
        index: IndexEntry<'_>,
    ) -> Result<bool, StoreError> {
        if !self.connector.cross_slot() {
            return self.run_update(key, Some(index), change, now_ms, ttl).await;
        }
        // Redis Cluster: the index lives in another slot, so it is written by its own script.
        super::update_then_index(self, key, change, now_ms, ttl, index).await
    }

    async fn regenerate(
        &self,
        old_key: &str,
        new_key: &str,
        change: &Change,
        now_ms: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        if self.connector.cross_slot() {
            return self
                .regenerate_by_copy(old_key, new_key, change, now_ms, ttl)
                .await;
        }
        self.write(
            "regenerate",
            &[old_key, new_key],
            &change.set,
            &change.delete,
            now_ms,
            ttl,
        )
        .await
    }

    async fn destroy(&self, key: &str) -> Result<bool, StoreError> {
        let mut conn = self.connector.connection()?;
        let n: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(n > 0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connector.connection()?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
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
        let mut conn = self.connector.connection()?;
        let _: i64 = self
            .index_add
            .key(index_key)
            .arg(key)
            .arg(deadline_ms)
            .arg(now_ms)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn index_remove(&self, index_key: &str, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.connector.connection()?;
        let _: i64 = redis::cmd("ZREM")
            .arg(index_key)
            .arg(keys)
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn user_sessions(
        &self,
        index_key: &str,
        user_field: &str,
        user: &str,
        now_ms: u64,
    ) -> Result<Vec<(String, Option<SessionRecord>)>, StoreError> {
        let mut conn = self.connector.connection()?;
        let members: Vec<Vec<u8>> = redis::cmd("ZRANGEBYSCORE")
            .arg(index_key)
            .arg(now_ms)
            .arg("+inf")
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        // The sidecar writes only hex keys; anything else in the index is not one of its
        // sessions and must not make the whole listing (and so a logout) fail.
        let members: Vec<String> = members
            .into_iter()
            .filter_map(|m| String::from_utf8(m).ok())
            .collect();
        let mut found = Vec::new();
        for chunk in members.chunks(256) {
            let loads =
                futures_util::future::join_all(chunk.iter().map(|k| self.load_raw(k))).await;
            for (key, pairs) in chunk.iter().zip(loads) {
                let pairs = pairs?;
                if pairs.iter().any(|(k, v)| k == user_field && v == user) {
                    found.push((key.clone(), SessionRecord::from_hash(pairs)));
                }
            }
        }
        // Only entries past their deadline go here. An entry whose session is missing or
        // does not name the user yet may belong to a write in flight (the engine indexes a
        // session before it creates, regenerates or re-assigns it): dropping it would leave
        // that session out of every later logout. Such entries go with their deadline, the
        // index's TTL, or the engine's own `index_remove`.
        let _: () = redis::cmd("ZREMRANGEBYSCORE")
            .arg(index_key)
            .arg("-inf")
            .arg(now_ms)
            .query_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(found)
    }
}

/// Adds a session to a user index. KEYS[1] = index; ARGV: session key, its absolute
/// deadline_ms (the score), now_ms, the session's TTL in ms. Prunes entries past their
/// deadline. The index lives at least as long as the session just written and never longer
/// than the longest-lived of its sessions' TTLs: every TTL is at most `idle_timeout`, and
/// [`UPDATE_SCRIPT`] slides it with every refresh, so a user whose last session idles
/// out leaves nothing behind.
const INDEX_ADD_SCRIPT: &str = r#"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local ttl = tonumber(ARGV[4])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"#;

/// A TTL as Redis milliseconds (at least 1: 0 would delete the key).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn metadata_field_names_match_the_script() {
        assert!(super::WRITE_SCRIPT.contains(super::CREATED_FIELD));
        assert!(super::WRITE_SCRIPT.contains(crate::store::TOUCHED_FIELD));
        assert!(super::UPDATE_SCRIPT.contains(crate::store::TOUCHED_FIELD));
    }
}
