//! Waiting for something to hold: the one polling loop of the harness and the tests.
//!
//! [`poll_until`] (blocking) and [`poll_until_async`] run a check every `interval` until it is
//! done or `timeout` has passed, and always at least once. A check answers with a `bool`, an
//! `Option` (done with a value, e.g. the process that came up) or a `Result` (the `Err` is what
//! the last attempt saw, for the failure message). [`eventually`] and [`wait_until`] are the
//! short forms: every [`POLL_INTERVAL`], `bool` in, `bool` out.

use std::future::Future;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How often [`eventually`] and [`wait_until`] check.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What one check found: done (with a value), or not yet (with what it saw instead).
pub trait Outcome {
    type Done;
    type NotYet;
    fn into_result(self) -> Result<Self::Done, Self::NotYet>;
}

impl Outcome for bool {
    type Done = ();
    type NotYet = ();
    fn into_result(self) -> Result<Self::Done, Self::NotYet> {
        if self {
            Ok(())
        } else {
            Err(())
        }
    }
}

impl<T> Outcome for Option<T> {
    type Done = T;
    type NotYet = ();
    fn into_result(self) -> Result<Self::Done, Self::NotYet> {
        self.ok_or(())
    }
}

impl<T, E> Outcome for Result<T, E> {
    type Done = T;
    type NotYet = E;
    fn into_result(self) -> Result<Self::Done, Self::NotYet> {
        self
    }
}

/// Runs `check` every `interval` (blocking the thread) until it is done or `timeout` has
/// passed; what it was done with, or what the last check saw.
pub fn poll_until<O: Outcome>(
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> O,
) -> Result<O::Done, O::NotYet> {
    let deadline = Instant::now() + timeout;
    loop {
        match check().into_result() {
            Ok(done) => return Ok(done),
            Err(not_yet) if Instant::now() > deadline => return Err(not_yet),
            Err(_) => std::thread::sleep(interval),
        }
    }
}

/// [`poll_until`] for an async check, sleeping on the tokio timer in between.
pub async fn poll_until_async<O, F, Fut>(
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> Result<O::Done, O::NotYet>
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await.into_result() {
            Ok(done) => return Ok(done),
            Err(not_yet) if Instant::now() > deadline => return Err(not_yet),
            Err(_) => tokio::time::sleep(interval).await,
        }
    }
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_until_async(timeout, POLL_INTERVAL, check)
        .await
        .is_ok()
}

/// Polls `check` (blocking) until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, check: impl FnMut() -> bool) -> bool {
    poll_until(timeout, POLL_INTERVAL, check).is_ok()
}

/// Waits until something accepts connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    poll_until(timeout, Duration::from_millis(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .is_ok()
}
