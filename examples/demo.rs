//! The whole demo in one command: `cargo run --example demo`.
//!
//! Starts the demo app (`examples/demo_app.rs`) on 127.0.0.1:3000 in a thread, then the
//! sidecar on 127.0.0.1:8080 in front of it with the embedded memory store
//! (`examples/demo.yaml`), and the admin listener on 127.0.0.1:9091. Open
//! <http://127.0.0.1:8080/> in a browser, or use curl with a cookie jar.
//!
//! The cookie secret comes from `SESSION_SECRET`; when it is unset a random one is made for
//! this run (sessions then do not survive a restart of the demo, which is fine here).

#[path = "demo_app.rs"]
mod demo_app;

use std::process::ExitCode;

use rand_core::{OsRng, TryRngCore};
use session_sidecar::config::Config;
use session_sidecar::server::{self, RunOptions};

const CONFIG: &str = include_str!("demo.yaml");
const APP_ADDR: &str = "127.0.0.1:3000";

fn main() -> ExitCode {
    let generated_secret = match std::env::var("SESSION_SECRET") {
        Ok(_) => None,
        Err(_) => {
            let mut bytes = [0u8; 32];
            if let Err(e) = OsRng.try_fill_bytes(&mut bytes) {
                eprintln!("demo: cannot read the OS random source: {e}");
                return ExitCode::FAILURE;
            }
            eprintln!(
                "demo: SESSION_SECRET is not set; using a random secret for this run \
                 (sessions end when the demo stops)"
            );
            Some(hex::encode(bytes))
        }
    };
    let env = |name: &str| match (name, &generated_secret) {
        ("SESSION_SECRET", Some(secret)) => Some(secret.clone()),
        _ => std::env::var(name).ok(),
    };
    let config = match Config::parse(CONFIG, &env) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("examples/demo.yaml: {e}");
            }
            return ExitCode::from(2);
        }
    };

    let listener = match demo_app::bind(APP_ADDR) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo: cannot start the demo app on {APP_ADDR}: {e}");
            return ExitCode::FAILURE;
        }
    };
    std::thread::spawn(move || demo_app::serve(listener));

    session_sidecar::logging::init(&config.log);
    let admin = config
        .admin_listen
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!(
        "\nsession-sidecar demo\n\
         \x20 app (direct, no sessions):  http://{APP_ADDR}/\n\
         \x20 through the sidecar:        http://{listen}/      <- open this one\n\
         \x20 admin:                      http://{admin}/healthz  http://{admin}/metrics\n\n\
         Try it with curl and a cookie jar:\n\
         \x20 curl -c jar -b jar http://{listen}/                  # the page; again: the counter goes 1, 2\n\
         \x20 curl -c jar -b jar http://{listen}/api/session       # the session the app sees, as JSON\n\
         \x20 curl -c jar -b jar -d user=alice http://{listen}/login\n\
         \x20 curl -c jar -b jar -X POST http://{listen}/logout\n\n\
         Stop with Ctrl-C.\n",
        listen = config.listen,
    );

    let options = RunOptions {
        upgrade: false,
        upgrade_sock: std::env::temp_dir()
            .join(format!("session-sidecar-demo-{}.sock", std::process::id())),
    };
    match server::run(config, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}
