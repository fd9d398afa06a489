#!/usr/bin/env bash
# The JIT story in one run, against a fresh jitd: an agent asks for
# data:write, works, signals done; asks again, sets a price below the floor;
# the guardrail fires; the grant is revoked and the agent suspended; the
# resource server refuses it. Run by `make demo` (after `make build`); BIN
# names the directory of the binaries (default ./bin). Ends by itself.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$ROOT/bin}"
CONFIG="${CONFIG:-$ROOT/examples/jit.yaml}"
for b in jitd jitctl resource-server guardrail-prices agent-price-optimizer; do
  [ -x "$BIN/$b" ] || { echo "demo: $BIN/$b is missing: run make build" >&2; exit 2; }
done

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
# A watchdog: the demo never runs for more than a minute.
( trap 'kill "$sp" 2>/dev/null; exit 0' TERM; sleep 55 & sp=$!; wait "$sp"; kill -TERM $$ ) >/dev/null 2>&1 &
WATCHDOG=$!
PIDS+=("$WATCHDOG")

step() { printf '\n== %s\n' "$*"; }
# wait_for FILE REGEX: until a line of FILE matches, at most 15 s.
wait_for() {
  for _ in $(seq 150); do
    if grep -qE "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "demo: gave up waiting for /$2/ in $1" >&2; cat "$1" >&2; return 1
}

step "Starting a fresh jitd (embedded NATS on a free port, data in a temp dir)"
"$BIN/jitd" --config "$CONFIG" --data-dir "$WORK/data" --nats-listen 127.0.0.1:-1 --http-listen "" \
  --checkpoint-interval 1s >"$WORK/jitd.log" 2>&1 &
PIDS+=("$!")
wait_for "$WORK/jitd.log" '"message":"jitd running"'
NATS_URL="$(grep -o '"nats":"nats://[^"]*"' "$WORK/jitd.log" | head -1 | cut -d'"' -f4)"
export NATS_URL
CREDS="$WORK/data/creds"
# jitctl picks the credential each command acts as from here.
export JIT_CREDS_DIR="$CREDS"
echo "jitd is up at $NATS_URL with examples/jit.yaml (svc-price-optimizer: base data:read, data:write by policy)"
echo "one NATS credential per principal in $CREDS: $(cd "$CREDS" && echo *.creds)"

step "Starting the price guardrail (as pricing-guard) and the resource server (its checker, as checker)"
"$BIN/guardrail-prices" --floor 2.00 --creds "$CREDS/guardrail-pricing-guard.creds" > >(tee "$WORK/guardrail.log") 2>&1 &
PIDS+=("$!")
wait_for "$WORK/guardrail.log" 'watching'
GUARDRAIL="$(grep -o 'http://[0-9.:]*/price-changes' "$WORK/guardrail.log" | head -1)"
"$BIN/resource-server" --token demo-token=svc-price-optimizer --creds "$CREDS/checker.creds" --guardrail "$GUARDRAIL" \
  > >(tee "$WORK/resource.log") 2>&1 &
PIDS+=("$!")
wait_for "$WORK/resource.log" 'listening on http://'
RESOURCE="$(grep -o 'http://[0-9.:]*' "$WORK/resource.log" | head -1)"

step "The agent (as svc-price-optimizer): request, grant, work, done; then a second task with a bug"
"$BIN/agent-price-optimizer" --resource "$RESOURCE" --token demo-token --creds "$CREDS/agent-svc-price-optimizer.creds"

step "What the system says now"
set +e
"$BIN/jitctl" check --agent svc-price-optimizer --perm data:read
code=$?
set -e
if [ "$code" -ne 1 ]; then echo "demo: expected the suspended agent to be refused (exit 1), got $code" >&2; exit 1; fi
echo
echo "The audit trail (every change of a permission is one CloudEvent):"
"$BIN/jitctl" audit --since 5m | grep -E 'requested|decided|granted|revoked|guardrail|suspended|withdrawn' || true

step "The trail is signed: the auditor's checkpoints, checked with its public key"
for _ in $(seq 50); do
  "$BIN/jitctl" audit --json | grep -q '"type":"jit.checkpoint"' && break
  sleep 0.1
done
"$BIN/jitctl" audit verify --key "$WORK/data/keys/audit-ed25519.pub"

step "Done: the agent was granted, worked, finished, was stopped by a guardrail, and is refused everywhere until an admin reinstates it"
kill "$WATCHDOG" 2>/dev/null || true
exit 0
