#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (config: deny.toml), fully offline.
#
# - Installs cargo-deny when it is missing.
# - `cargo fetch --locked` first: cargo-deny reads the metadata of every crate in Cargo.lock,
#   including crates no Linux build downloads (Windows-only ones), and runs offline.
# - bans, licenses, sources: need nothing beyond the cargo cache.
# - advisories: always run, against a local RustSec database, never fetched from GitHub:
#     DENY_ADVISORY_DB      a checkout of rustsec/advisory-db, used as is; else
#     DENY_ADVISORY_BUNDLE  a git bundle of it (default: ../shared/advisory-db/advisory-db.bundle
#                           beside the project, else /work/shared/...), cloned into a temp dir.
#   When neither exists the script fails: the check must never silently disappear.
#
# Exit status: non-zero when any check fails or cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION="${DENY_VERSION:-0.20.2}"

if ! command -v cargo-deny >/dev/null 2>&1; then
    echo "deny: installing cargo-deny ${DENY_VERSION} (a few minutes)"
    cargo install cargo-deny --locked --version "${DENY_VERSION}" --quiet
fi
echo "deny: $(cargo deny --version)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Locate the advisory database before anything slow, so a missing one fails at once.
db="${DENY_ADVISORY_DB:-}"
if [[ -z "$db" ]]; then
    bundle="${DENY_ADVISORY_BUNDLE:-}"
    if [[ -z "$bundle" ]]; then
        # The snapshot beside the project; the workplace's shared folder when the checkout
        # lives elsewhere.
        for candidate in ../shared/advisory-db/advisory-db.bundle \
            /work/shared/advisory-db/advisory-db.bundle; do
            if [[ -f "$candidate" ]]; then
                bundle="$candidate"
                break
            fi
        done
        bundle="${bundle:-../shared/advisory-db/advisory-db.bundle}"
    fi
    if [[ ! -f "$bundle" ]]; then
        echo "deny: ERROR: no RustSec advisory database: $bundle does not exist" >&2
        echo "deny: ERROR: set DENY_ADVISORY_BUNDLE to a git bundle of rustsec/advisory-db," >&2
        echo "deny: ERROR: or DENY_ADVISORY_DB to a checkout of it. Advisories are NOT checked." >&2
        exit 1
    fi
    db="$tmp/advisory-db"
    git -c init.defaultBranch=main clone --quiet "$bundle" "$db"
    echo "deny: advisory database from $bundle ($(git -C "$db" log -1 --format='%h, %cs'))"
else
    echo "deny: advisory database $db"
fi

echo "deny: fetching every crate of Cargo.lock (all platforms)"
cargo fetch --locked --quiet

echo "deny: checking bans, licenses, sources"
cargo deny --locked --offline check --hide-inclusion-graph bans licenses sources

# cargo-deny looks for its database in <db-path>/advisory-db-<hash of the default URL>;
# a copy of deny.toml points db-path at a directory holding a link to the local database.
mkdir -p "$tmp/db"
ln -s "$(cd "$db" && pwd)" "$tmp/db/advisory-db-3157b0e258782691"
sed "s|^\[advisories\]|[advisories]\ndb-path = \"$tmp/db\"|" deny.toml >"$tmp/deny.toml"
echo "deny: checking advisories"
cargo deny --locked --offline --config "$tmp/deny.toml" check \
    --hide-inclusion-graph advisories
echo "deny: advisories ok"
echo "deny: ok"
