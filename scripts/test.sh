#!/usr/bin/env bash
# The project's whole test run, from a fresh machine of the rust-docker kind: builds the
# images offline, checks formatting and lints, runs every test (the Docker tests against the
# real engine and the real CLI, never skipped), checks nothing was left running, and runs a
# short benchmark so it keeps working.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

leftovers() {
    # Containers of test and benchmark instances; a ccpool the developer runs is not ours to judge.
    docker ps -a --filter label=ccpool.managed=true --format '{{.ID}} {{.Label "ccpool.instance"}}' \
        | awk '$2 ~ /^(test|bench)-/ {print $1}'
}

leftover_volumes() {
    docker volume ls --filter label=ccpool.managed=true --format '{{.Name}} {{.Label "ccpool.instance"}}' \
        | awk '$2 ~ /^(test|bench)-/ {print $1}'
}

step "docker engine"
docker version --format 'engine {{.Server.Version}}, API {{.Server.APIVersion}}'

step "images (offline build)"
bash images/build.sh

step "official SDKs for the end-to-end tests"
venv=${CCPOOL_BUILD_CACHE:-$HOME/.cache/ccpool-build}/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check anthropic==2.12.0 openai==3.54.0 openai-agents==0.24.0
export CCPOOL_TEST_PYTHON=$venv/bin/python

step "compose file"
if command -v docker-compose >/dev/null 2>&1; then
    docker-compose -f compose.yaml config -q
else
    docker compose -f compose.yaml config -q
fi

step "format and lints"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

step "tests"
stale=$(leftovers)
[ -z "$stale" ] || docker rm -f -v $stale >/dev/null
stale=$(leftover_volumes)
[ -z "$stale" ] || docker volume rm -f $stale >/dev/null
status=0
results=$(mktemp)
if ! cargo test --locked --lib --bins --tests -- --skip soak_every_request 2>&1 | tee "$results"; then
    status=1
fi
# The soak prints its figures: run it on its own, with its output shown.
if ! cargo test --locked --test soak soak_every_request -- --nocapture 2>&1 | tee -a "$results"; then
    status=1
fi

step "nothing left running"
left=$(leftovers)
if [ -n "$left" ]; then
    echo "containers labelled ccpool.managed=true were left behind:" >&2
    docker ps -a --filter label=ccpool.managed=true >&2
    docker rm -f -v $left >/dev/null
    status=1
fi
left_volumes=$(leftover_volumes)
if [ -n "$left_volumes" ]; then
    echo "volumes labelled ccpool.managed=true were left behind: $left_volumes" >&2
    docker volume rm -f $left_volumes >/dev/null
    status=1
fi
[ "$status" -eq 0 ] || exit "$status"
echo "none"

step "benchmark (short run)"
BENCH_REQUESTS=${BENCH_REQUESTS:-16} cargo bench --locked --bench pool
left=$(leftovers)
[ -z "$left" ] || { echo "the benchmark left containers behind" >&2; docker rm -f -v $left >/dev/null; exit 1; }

# One closing line with the totals of every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
rm -f "$results"
