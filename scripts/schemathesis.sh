#!/usr/bin/env bash
# Schemathesis against the OpenAPI document the server itself serves (GET /v1/openapi.json):
# every check, every phase (examples, coverage, fuzzing, stateful through the document's
# links), bounded and seeded so that a run is deterministic. Any finding, and anything that
# keeps schemathesis from running, fails.
#
# The run makes its own credentials: before the server starts, `kokuho-ledger token create`
# puts two tokens in the fresh database, one with every role that reaches data (inquiry,
# clerk, auditor, feed_consumer, exporter, my_number) and one with `admin` (which the role table
# keeps apart from personal data); hooks.py sends the admin token to the admin routes and the
# other to the rest, and never lets a generated DELETE /v1/tokens/{name} revoke either.
#
# Builds nothing. Usage:
#   scripts/schemathesis.sh [PATH/TO/kokuho-ledger [ST_RUN_ARGS...]]   (or KOKUHO_BIN=PATH)
# Further arguments go to `st run` (e.g. `--report har` to look at every exchange).
# Environment:
#   KOKUHO_ST_VENV          the Python venv to create or use (default: target/venv)
#   KOKUHO_ST_MAX_EXAMPLES  test cases per operation and phase, examples/coverage/fuzzing (default 200)
#   KOKUHO_ST_STATEFUL_EXAMPLES  stateful scenarios budget (default 100)
#   KOKUHO_ST_SEED          explore: generate from this seed instead of the deterministic mode
#   KOKUHO_ST_REPORT_DIR    where `--report` writes, and where the server log is left (default:
#                           the temporary directory, removed)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
here=$repo/scripts/schemathesis
ST_VERSION=4.32.5

fail() { echo "schemathesis.sh: $*" >&2; exit 1; }

bin=${1:-${KOKUHO_BIN:-}}
[ $# -gt 0 ] && shift
[ -n "$bin" ] || fail "give the path of the built kokuho-ledger binary (argument or KOKUHO_BIN)"
[ -x "$bin" ] || fail "$bin is not an executable"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

# The pinned schemathesis in its venv; never skipped: no Python, no venv or no pip is a failure.
venv=${KOKUHO_ST_VENV:-$repo/target/venv}
st=$venv/bin/st
if ! "$st" --version 2>/dev/null | grep -qx "st, version $ST_VERSION"; then
  command -v python3 >/dev/null || fail "python3 is required"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || fail "cannot create the venv $venv (python3-venv missing?)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION" \
    || fail "cannot install schemathesis $ST_VERSION into $venv"
  "$st" --version 2>/dev/null | grep -qx "st, version $ST_VERSION" || fail "schemathesis $ST_VERSION is not runnable from $venv"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kokuho-schemathesis.XXXXXX")
server=
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  if [ -n "${KOKUHO_ST_REPORT_DIR:-}" ] && [ -f "$work/server.log" ]; then
    mkdir -p "$KOKUHO_ST_REPORT_DIR" && cp "$work/server.log" "$KOKUHO_ST_REPORT_DIR/server.log"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A fresh embedded database and the default configuration: no KOKUHO_* setting of the caller
# leaks in; the card-number width is the document's (8).
unset_kokuho=()
for v in $(compgen -e); do
  case $v in KOKUHO_*) unset_kokuho+=(-u "$v") ;; esac
done
# One token drives the whole run flat out: the per-principal rate limit (429 rate_limited,
# documented on every authenticated route) is set out of its way.
server_env=(env "${unset_kokuho[@]}" -u DATABASE_URL KOKUHO_CARD_NUMBER_WIDTH=8 KOKUHO_RATE_LIMIT_PER_SECOND=1000000
  KOKUHO_RATE_LIMIT_BURST=1000000 RUST_LOG=info NO_COLOR=1)
database=sqlite://$work/ledger.db

# The run's own credentials, in the fresh database before the server opens it.
token_names=schemathesis-run,schemathesis-admin
create_token() { # NAME ROLE...
  local name=$1 out
  shift
  out=$("${server_env[@]}" "$bin" token create --name "$name" "${@/#/--role=}" --database-url "$database" 2>"$work/token.err") \
    || { cat "$work/token.err" >&2; fail "cannot create the token $name"; }
  out=$(printf '%s\n' "$out" | tail -n 1)
  [[ $out == kl_* ]] || fail "token create printed no token for $name"
  printf '%s' "$out"
}
token=$(create_token schemathesis-run inquiry clerk auditor feed_consumer exporter my_number)
admin_token=$(create_token schemathesis-admin admin)

"${server_env[@]}" "$bin" serve --listen 127.0.0.1:0 --database-url "$database" >"$work/server.log" 2>&1 &
server=$!
addr=
for _ in $(seq 1 300); do
  addr=$(sed -n 's/\x1b\[[0-9;]*m//g; s/.*serving addr=\([0-9.]*:[0-9]*\).*/\1/p' "$work/server.log" | head -n 1)
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; fail "the server did not start"; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$work/server.log" >&2; fail "the server did not report its address within 30 s"; }
base=http://$addr
echo "schemathesis.sh: server at $base (database $work/ledger.db)"

head=$(KOKUHO_ST_TOKEN=$token "$venv/bin/python" "$here/seed.py" "$base") || { tail -n 50 "$work/server.log" >&2; fail "seeding failed"; }
echo "schemathesis.sh: seeded, log head $head"

generation=(--generation-deterministic)
if [ -n "${KOKUHO_ST_SEED:-}" ]; then
  generation=(--seed "$KOKUHO_ST_SEED")
fi

# Two runs against the same server: the generated phases, then the stateful one (sequences of
# calls through the document's links) with its own budget; both must be clean.
failed_runs=()
counts=()
run_st() { # NAME PHASES MAX_EXAMPLES
  local name=$1 phases=$2 examples=$3 started status result
  started=$(date +%s)
  echo "schemathesis.sh: $name: st run --checks all --phases $phases --max-examples $examples"
  set +e
  (
    cd "$work" &&
      KOKUHO_ST_LOG_HEAD=$head KOKUHO_ST_TOKEN=$token KOKUHO_ST_ADMIN_TOKEN=$admin_token \
        KOKUHO_ST_TOKEN_NAMES=$token_names SCHEMATHESIS_HOOKS=$here/hooks.py \
        "$st" --config-file "$here/schemathesis.toml" run "$base/v1/openapi.json" \
        --checks all \
        --phases "$phases" \
        --max-examples "$examples" \
        "${generation[@]}" \
        --no-color \
        --report-dir "${KOKUHO_ST_REPORT_DIR:-$work/report}" \
        --report-json-path "$work/$name.json" \
        "${st_args[@]}"
  )
  status=$?
  set -e
  echo "schemathesis.sh: $name: st exited $status after $(($(date +%s) - started)) s"
  if ! kill -0 "$server" 2>/dev/null; then
    tail -n 50 "$work/server.log" >&2
    fail "the server died during the run"
  fi
  # `st` exits 0 on test cases it could not run ("errored"); those fail here too.
  if ! result=$("$venv/bin/python" - "$work/$name.json" "$phases" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = r["test_cases"]
problems = []
if r["exit_code"] != 0 or not r["complete"] or r["stop_reason"] != "completed":
    problems.append(f"exit code {r['exit_code']}, stop reason {r['stop_reason']}")
if t["with_failures"] or r["failures"]:
    problems.append(f"{t['with_failures']} test cases with failures")
if t["errored"] or r["errors"]:
    problems.append(f"{t['errored']} test cases errored, {len(r['errors'])} errors")
for phase in sys.argv[2].split(","):
    p = r["phases"].get(phase, {"status": "missing"})
    if p["status"] != "success":
        problems.append(f"phase {phase}: {p['status']} {p.get('skip_reason') or ''}")
for p in problems:
    print(f"schemathesis.sh: {p}", file=sys.stderr)
failed = t["with_failures"] + t["errored"]
print(t["generated"] - failed, failed)
sys.exit(1 if problems else 0)
PY
  ); then
    failed_runs+=("$name")
  fi
  [ "$status" -eq 0 ] || failed_runs+=("$name")
  counts+=(${result:-0 1})
}

st_args=("$@")
run_st generated examples,coverage,fuzzing "${KOKUHO_ST_MAX_EXAMPLES:-200}"
run_st stateful stateful "${KOKUHO_ST_STATEFUL_EXAMPLES:-100}"

passed=0
failed=0
for ((i = 0; i < ${#counts[@]}; i += 2)); do
  passed=$((passed + counts[i]))
  failed=$((failed + counts[i + 1]))
done
if grep -qE ' ERROR |panicked' "$work/server.log"; then
  grep -E ' ERROR |panicked' "$work/server.log" | head -n 20 >&2
  failed_runs+=("server log")
  echo "schemathesis.sh: the server logged errors during the run" >&2
fi
echo "schemathesis: $passed passed, $failed failed"
[ ${#failed_runs[@]} -eq 0 ] || fail "findings in: ${failed_runs[*]}"
echo "schemathesis.sh: no findings"
