#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and reports executions and crashes per target.
#
#   fuzz/run.sh                      # 60 s per target
#   FUZZ_SECONDS=600 fuzz/run.sh     # longer
#   FUZZ_TARGETS="encode config" fuzz/run.sh
#
# cargo-fuzz drives libFuzzer with unstable compiler flags (-Z sanitizer=address, sancov
# passes). Only the stable toolchain exists here, so RUSTC_BOOTSTRAP=1 lets the stable compiler
# accept them. Everything the build makes stays in fuzz/ (target/, corpus/, artifacts/, logs/,
# all gitignored), apart from the main build. Exit status: non-zero when a target crashed or
# could not run.
set -uo pipefail
cd "$(dirname "$0")"

SECS="${FUZZ_SECONDS:-60}"
read -r -a TARGETS <<< "${FUZZ_TARGETS:-cookie_verify session_set encode config}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$PWD/target"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet || exit 1
fi

mkdir -p corpus artifacts logs
seed() { # seed TARGET NAME CONTENT: a starting input, written once
    mkdir -p "corpus/$1"
    [[ -e "corpus/$1/seed-$2" ]] || printf '%b' "$3" > "corpus/$1/seed-$2"
}
seed cookie_verify plain 'a=1; sid=AAAA.BBBB; b="2"'
seed cookie_verify lines 'sid="x"\nc=\xff\xfe; sid=;;'
seed cookie_verify edits '\x00\x05\x01\x00\x01\x10\x00\x00\x02abc\x03\x20\x41\x00'
seed session_set objects '{"a":1,"b":"x"}\n{"a":null,"c":[1,{"d":true}]}'
seed session_set unicode '{"name":"h\\u00e9llo \\ud83d\\ude00","n":1.5e300,"big":123456789012345678901234567890}'
seed session_set reserved '{"__created":1}\n{"":2}'
seed encode fields 'user\xfe"alice"\xfeobj\xfe{"x":[1,2]}\xfe__created\xfe1'
seed encode escaped 'name\xfe"h\\u00e9llo \\ud83d\\ude00"\xfelist\xfe["\\u007f",1.5]'
seed encode foreign 'a\xfe{ "x" : 1 }\xfeb\xfenot json \xc3\xa9\x7f\x01\xfec\xfe12345678901234567890123'
for f in ../examples/*.yaml ../deploy/*.yaml ../deploy/*/*.yaml; do
    [[ -f "$f" ]] && cp -n "$f" "corpus/config/seed-$(basename "$f")" 2>/dev/null
done
seed config minimal 'listen: "127.0.0.1:8080"\nupstream: "127.0.0.1:3000"\ncookie:\n  secrets: ["${SESSION_SECRET}"]\nstore:\n  kind: memory\n'

echo "fuzz: building the targets (the first build takes a while)"
cargo fuzz build --fuzz-dir . >logs/build.log 2>&1 || { tail -30 logs/build.log; exit 1; }

failed=0
printf '%-14s %10s %12s %8s %s\n' target seconds executions crashes result
for t in "${TARGETS[@]}"; do
    mkdir -p "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    dict=()
    [[ -f "dict/$t.dict" ]] && dict=("-dict=dict/$t.dict")
    cargo fuzz run --fuzz-dir . "$t" "corpus/$t" -- \
        -max_total_time="$SECS" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" "${dict[@]}" >"logs/$t.log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    after=$(find "artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    result=clean
    if [[ $rc -ne 0 || $crashes -gt 0 ]]; then
        result="FAILED (rc=$rc, see fuzz/logs/$t.log, fuzz/artifacts/$t/)"
        failed=1
    fi
    printf '%-14s %10s %12s %8s %s\n' "$t" "$SECS" "${execs:-?}" "$crashes" "$result"
done
exit $failed
