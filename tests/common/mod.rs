//! Test harness: real processes on ephemeral loopback ports, one module per thing it starts.
//!
//! - [`redis`]: [`Node`], one `redis-server` (or sentinel) process of the test's own (never the
//!   machine's 6379) that a test may kill and restart on the same port; [`Redis`], a standalone
//!   node with or without `appendonly`.
//! - [`cluster`]: [`RedisCluster`], a local Redis Cluster made with `redis-cli --cluster create`.
//! - [`sentinel`]: [`SentinelSet`], a master, a replica and sentinels watching them.
//! - [`tls`]: [`TlsFiles`], a test CA and server certificate made with `openssl`, for TLS nodes.
//! - [`backend`]: [`Backend`], a real HTTP app (hyper) that echoes what it received as JSON and
//!   answers with whatever headers the request asked for through `x-reply-<name>: <value>`.
//! - [`sidecar`]: [`Sidecar`], the real `session-sidecar` binary with a `proxy.yaml` generated
//!   from [`Settings`].
//! - [`client`]: [`Client`], a real HTTP client with a one-cookie jar for the session cookie.
//! - [`poll`]: [`poll_until`] / [`poll_until_async`], the one way the harness and the tests
//!   wait for something to hold ([`eventually`] and [`wait_until`] are its short forms).
//! - [`store`]: [`open_store`] opens a store as the sidecar would; [`session_key`] maps a
//!   cookie to its store key.
//! - [`store_semantics`]: [`run_suite`] / [`run_index_suite`], the one behavioural suite every
//!   `SessionStore` kind passes ([`check_store_semantics`] runs it under a tag).
#![allow(dead_code)]

mod backend;
mod client;
mod cluster;
mod poll;
mod redis;
mod sentinel;
mod sidecar;
mod store;
mod store_semantics;
mod tls;

use std::net::{SocketAddr, TcpListener};

// Each test file uses a part of the harness; the rest of these is no warning there.
#[allow(unused_imports)]
pub use self::{
    backend::Backend,
    client::{Client, Reply},
    cluster::RedisCluster,
    poll::{
        eventually, poll_until, poll_until_async, wait_for_port, wait_until, Outcome, POLL_INTERVAL,
    },
    redis::{Node, Redis},
    sentinel::{SentinelAuth, SentinelSet, MASTER_NAME},
    sidecar::{binary, store_keys_path, Settings, Sidecar, StoreKind},
    store::{open_store, session_key, user_index_key},
    store_semantics::{check_store_semantics, run_index_suite, run_suite},
    tls::{redis_supports_tls, TlsFiles},
};

/// The first entry of `cookie.secrets` in a generated `proxy.yaml` (signs new cookies).
pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
/// A second secret, for rotation tests.
pub const SECRET_2: &str = "second-secret-0123456789abcdef-01234567";
/// `cookie.name` in a generated `proxy.yaml`, and the cookie [`Client`] keeps.
pub const COOKIE: &str = "sid";

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `addr` as `host:port`, the way `proxy.yaml` writes an address.
pub fn local(addr: SocketAddr) -> String {
    addr.to_string()
}
