#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (config: deny.toml).
#
# - Installs cargo-deny when it is missing.
# - Runs bans, licenses and sources, which need no network beyond what cargo already has.
# - Runs advisories when the RustSec database can be fetched (it lives on GitHub). When it
#   cannot, advisories are skipped with a message, unless DENY_ADVISORY_DB points at a local
#   checkout of the advisory-db repository, which is then used as is (offline).
#
# Exit status: non-zero when any check that ran failed.
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION="${DENY_VERSION:-0.20.2}"

if ! command -v cargo-deny >/dev/null 2>&1; then
    echo "deny: installing cargo-deny ${DENY_VERSION} (a few minutes)"
    cargo install cargo-deny --locked --version "${DENY_VERSION}" --quiet
fi
echo "deny: $(cargo deny --version)"

echo "deny: checking bans, licenses, sources"
cargo deny --locked --offline check --hide-inclusion-graph bans licenses sources

if [[ -n "${DENY_ADVISORY_DB:-}" ]]; then
    # A local advisory-db checkout: point a copy of deny.toml at it, never fetch.
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    # cargo-deny looks for the default database in <db-path>/advisory-db-<hash of its URL>.
    mkdir -p "$tmp/db"
    ln -s "$(cd "$DENY_ADVISORY_DB" && pwd)" "$tmp/db/advisory-db-3157b0e258782691"
    sed "s|^\[advisories\]|[advisories]\ndb-path = \"$tmp/db\"|" deny.toml > "$tmp/deny.toml"
    echo "deny: checking advisories against the local database $DENY_ADVISORY_DB"
    cargo deny --locked --offline --config "$tmp/deny.toml" check --hide-inclusion-graph advisories
elif cargo deny fetch db >/dev/null 2>&1; then
    echo "deny: checking advisories"
    cargo deny --locked --offline check --hide-inclusion-graph advisories
else
    echo "deny: advisories SKIPPED: the RustSec advisory database could not be fetched (no route to GitHub)."
    echo "deny:   run with DENY_ADVISORY_DB=/path/to/advisory-db to check against a local copy."
fi
echo "deny: ok"
