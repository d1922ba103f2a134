//! session-sidecar: a reverse proxy that gives an unmodified web app server-side sessions.
//!
//! Browsers talk to the sidecar; the sidecar verifies the signed session cookie, loads the
//! session from the store and hands it to the app as one `X-Session` header, then applies the
//! app's `X-Session-Set` / `X-Session-Action` response headers back to the store.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod cookie;
pub mod cookie_abuse;
pub mod csrf;
pub mod framing;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod protocol;
pub mod proxy;
pub mod server;
pub mod session;
pub mod store;
pub mod throttle;
