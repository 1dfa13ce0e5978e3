#!/usr/bin/env bash
# The fresh-clone test (issue 19): follows README.md's commands as written, in a copy of the
# repository's files in a temporary directory, the way a new user pastes them.
#
# It checks the commands, not the compile: `cargo run [-q] [--release] --bin NAME -- ARGS` and
# `cargo install --path cli` are answered by binaries already built (CI's `cargo test
# --workspace` builds them under target/debug), through a `cargo` on PATH that runs them.
# The only edits to a block are those the README tells the reader to make: the demo's key and
# URL in the CLI block. Ports are moved with the README's own options (CODESTAX_PORT_BASE for the
# demo, CODESTAX_COLLECTOR__*__LISTEN for the collector alone), so it runs beside anything.
#
# Environment: FRESH_CLONE_BINS (default target/debug, or $CARGO_TARGET_DIR/debug),
# FRESH_CLONE_PORT_BASE (default: a free one; uses BASE..BASE+8), FRESH_CLONE_KEEP=1 keeps the
# temporary directory. Takes ~1 min once the binaries exist.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bins=${FRESH_CLONE_BINS:-${CARGO_TARGET_DIR:-$repo/target}/debug}
for b in codestax codestax-collector; do
    if [ ! -x "$bins/$b" ]; then
        echo "FAILED: $bins/$b is not built (cargo build --workspace --bins)" >&2
        exit 1
    fi
done
bins=$(cd "$bins" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/fresh-clone.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${FRESH_CLONE_KEEP:-}" = 1 ]; then
        echo "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

fail() {
    echo "FAILED: $*" >&2
    for f in "$work"/*.log; do
        [ -f "$f" ] || continue
        echo "--- $f" >&2
        tail -n 40 "$f" >&2
    done
    # Again last: a CI log keeps the head and the tail of a long output.
    echo "FAILED: $*" >&2
    exit 1
}

# A copy of the repository's tracked files, as a clone has them (the working tree's versions).
clone=$work/codestax-audit
mkdir -p "$clone"
(cd "$repo" && git ls-files -z | tar --null --ignore-failed-read -T - -cf -) | tar -C "$clone" -xf -

# The `cargo` of this test, and a directory for `cargo install` (first on PATH, as ~/.cargo/bin).
mkdir -p "$work/shim" "$work/installed"
cat >"$work/shim/cargo" <<'SHIM'
#!/usr/bin/env bash
# Answers the README's `cargo run` and `cargo install --path cli` with the built binaries.
set -euo pipefail
case "${1:-}" in
run)
    shift
    bin=
    while [ $# -gt 0 ]; do
        case "$1" in
        --bin) bin=$2; shift 2 ;;
        -q | --quiet | --release) shift ;;
        --) shift; break ;;
        *) echo "fresh-clone: unexpected \`cargo run\` argument $1" >&2; exit 2 ;;
        esac
    done
    [ -n "$bin" ] || { echo "fresh-clone: \`cargo run\` without --bin" >&2; exit 2; }
    exec "$FRESH_CLONE_BINS/$bin" "$@"
    ;;
install)
    [ "$*" = "install --path cli" ] || { echo "fresh-clone: unexpected \`cargo $*\`" >&2; exit 2; }
    ln -sf "$FRESH_CLONE_BINS/codestax" "$FRESH_CLONE_INSTALLED/codestax"
    echo "  Installed package \`codestax-cli\` (fresh-clone: the built binary)" >&2
    ;;
*)
    echo "fresh-clone: \`cargo $*\` is not among the README's commands this test runs" >&2
    exit 2
    ;;
esac
SHIM
chmod +x "$work/shim/cargo"
export FRESH_CLONE_BINS=$bins FRESH_CLONE_INSTALLED=$work/installed
export PATH=$work/installed:$work/shim:$PATH
# A developer's own settings must not reach the commands.
unset CODESTAX_URL CODESTAX_TOKEN CODESTAX_CONFIG CODESTAX_PUBLIC_KEY CODESTAX_PORT_BASE
unset CODESTAX_COLLECTOR__HTTP__LISTEN CODESTAX_COLLECTOR__GRPC__LISTEN CODESTAX_COLLECTOR__METRICS__LISTEN
unset RUST_LOG

# The fenced block after `<!-- fresh-clone: NAME -->` in the README.
block() {
    local text
    text=$(awk -v marker="<!-- fresh-clone: $1 -->" '
        $0 == marker { want = 1; next }
        want && /^```/ { if (inside) exit; inside = 1; next }
        inside { print }' "$clone/README.md")
    [ -n "$text" ] || fail "README.md has no block marked <!-- fresh-clone: $1 -->"
    printf '%s\n' "$text"
}

# A block that is one command (one that holds its terminal), run as that process: Ctrl-C
# (SIGINT) reaches it as it would from a terminal.
one_command() {
    local text
    text=$(block "$1")
    [ "$(printf '%s\n' "$text" | grep -c .)" = 1 ] || fail "the $1 block is not one command"
    printf 'exec %s\n' "$text"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# As the test harness does (harness/src/ports.rs): ports below the kernel's ephemeral range, which
# an outgoing connection may hold at any moment, each claimed with a lock on its file in the
# harness's claims directory, held while this script runs, so tests beside it never take them.
claims=${TMPDIR:-/tmp}/codestax-test-ports
mkdir -p "$claims" 2>/dev/null || true
claim() {
    command -v flock >/dev/null || return 0
    local fd
    exec {fd}>>"$claims/$1" 2>/dev/null || return 1
    flock -n "$fd" || { exec {fd}>&-; return 1; }
}
read -r ephemeral_low _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || ephemeral_low=32768
[ "$ephemeral_low" -gt 11000 ] 2>/dev/null || ephemeral_low=32768
base=${FRESH_CLONE_PORT_BASE:-}
if [ -z "$base" ]; then
    for _ in $(seq 1 100); do
        candidate=$((10000 + RANDOM % (ephemeral_low - 10000 - 9)))
        ok=1
        for i in $(seq 0 8); do
            { port_free $((candidate + i)) && claim $((candidate + i)); } || { ok=0; break; }
        done
        if [ $ok = 1 ]; then base=$candidate; break; fi
    done
    [ -n "$base" ] || fail "no nine free consecutive ports"
fi
echo "fresh-clone: in $clone, ports $base..$((base + 8)), binaries from $bins"
cd "$clone"

wait_for() { # seconds, description, command...
    local until=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        [ $SECONDS -lt $until ] || fail "$what"
        sleep 0.2
    done
}

echo "== Configuration: --check-config"
block check-config >"$work/check-config.sh"
bash -euo pipefail "$work/check-config.sh" >"$work/check-config.log" 2>&1 || fail "the check-config block"

echo "== Quickstart: the demo (its documented port option: CODESTAX_PORT_BASE)"
one_command demo >"$work/demo.sh"
CODESTAX_PORT_BASE=$base bash "$work/demo.sh" >"$work/demo.log" 2>"$work/demo-stderr.log" &
pids+=($!)
demo_pid=$!
wait_for 120 "the demo printed no API key within 2 min" grep -q "API key:" "$work/demo.log"
key=$(sed -n 's/^ *API key: *\(csk_[^ ]*\).*/\1/p' "$work/demo.log" | head -1)
[ -n "$key" ] || fail "no key in the demo's banner"
grep -q "Dashboard:  http://127.0.0.1:$base/settings/audit-log" "$work/demo.log" || fail "the dashboard URL"
echo "== A second demo while one runs names the port and --port-base"
if CODESTAX_PORT_BASE=$base bash "$work/demo.sh" >"$work/demo2.log" 2>&1; then
    fail "a second demo on the same ports started"
fi
grep -q "port $base (collector HTTP API)" "$work/demo2.log" || fail "the second demo's message"
grep -q -- "--port-base" "$work/demo2.log" || fail "the second demo suggests --port-base"

echo "== CLI, against the demo (the block's URL and key set as it says)"
block cli >"$work/cli.sh"
grep -q '^export CODESTAX_URL=' "$work/cli.sh" || fail "the CLI block sets no CODESTAX_URL"
grep -q '^export CODESTAX_TOKEN=' "$work/cli.sh" || fail "the CLI block sets no CODESTAX_TOKEN"
sed -i -e "s|^export CODESTAX_URL=[^ ]*|export CODESTAX_URL=http://127.0.0.1:$base|" \
    -e "s|^export CODESTAX_TOKEN=[^ ]*|export CODESTAX_TOKEN=$key|" "$work/cli.sh"
# The demo's history (3000 records for acme) arrives within seconds; the exports want it.
wait_for 90 "the demo's history did not arrive" bash -c \
    "curl -sf -H 'Authorization: Bearer $key' 'http://127.0.0.1:$base/api/v1/orgs/acme/audit-log?limit=1' | grep -Eq '\"total\":[0-9]{4}'"
bash -euo pipefail "$work/cli.sh" >"$work/cli.log" 2>&1 || fail "the CLI block"
[ -s audit-log.csv ] && [ -s audit-log.csv.proof.json ] || fail "the CSV export and its proof"
[ -s audit-log.ndjson ] || fail "the NDJSON export"
grep -q "exported [0-9]* records (.*) to audit-log.csv, its proof to audit-log.csv.proof.json" "$work/cli.log" \
    || fail "the export's summary"
grep -q "^ok: signed by" "$work/cli.log" || fail "verify"
if grep -qi "broken pipe" "$work/cli.log"; then fail "| head printed a broken pipe"; fi

echo "== Ctrl-C stops the demo"
kill -INT "$demo_pid"
wait "$demo_pid" || fail "the demo did not exit 0 on Ctrl-C"
pids=()

echo "== The collector alone, in two terminals (ports moved as the README says)"
export CODESTAX_COLLECTOR__HTTP__LISTEN=127.0.0.1:$((base + 6))
export CODESTAX_COLLECTOR__GRPC__LISTEN=127.0.0.1:$((base + 7))
export CODESTAX_COLLECTOR__METRICS__LISTEN=127.0.0.1:$((base + 8))
one_command collector >"$work/collector.sh"
bash "$work/collector.sh" >"$work/collector.log" 2>&1 &
pids+=($!)
collector_pid=$!
wait_for 60 "the collector did not log ready" grep -q "ready" "$work/collector.log"
if grep -q $'\x1b' "$work/collector.log"; then fail "ANSI codes in the collector's log file"; fi
block collector-client >"$work/collector-client.sh"
bash -euo pipefail "$work/collector-client.sh" >"$work/collector-client.log" 2>&1 \
    || fail "the collector's second-terminal block"
grep -q '"accepted":1' "$work/collector-client.log" || fail "the ingest was not accepted"
grep -q '"total":1' "$work/collector-client.log" || fail "the search did not find the one record"
grep -q '"action":"scan.triggered"' "$work/collector-client.log" || fail "the search's record"
grep -q "^# " "$work/collector-client.log" || fail "the metrics"
[ -d codestax-solo ] && [ ! -d codestax-data/solo ] || fail "the collector's own data dir"
kill -INT "$collector_pid"
wait "$collector_pid" || fail "the collector did not exit 0 on Ctrl-C"
pids=()

echo "fresh-clone: ok (the README's check-config, demo, CLI and collector blocks, as written)"
