#!/usr/bin/env bash
# Quickstart: install Reconciler, then start the GitOps daemon on a git copy of sample-repo/ and show
# where its API and STATUS.md are. The daemon keeps running after this script ends.
#
#   bash scripts/quickstart.sh          install (if needed), (re)start the daemon, wait until it is ready
#   bash scripts/quickstart.sh stop     stop the daemon this script started (SIGTERM; it exits 0)
#
# Re-running stops the daemon it started before and starts a new one on the same repository and state
# (nothing is applied twice). The scratch repository is made once; delete QUICKSTART_DIR to start over.
#
# Environment (all optional):
#   QUICKSTART_DIR           where the repository, state, config and log go (default .reconciler/quickstart)
#   QUICKSTART_PORT          the HTTP port on 127.0.0.1 (default 8080; a free one is picked if it is taken)
#   QUICKSTART_SKIP_INSTALL  1: do not create or update the virtualenv, use QUICKSTART_VENV as it is
#   QUICKSTART_VENV          the virtualenv to install into and run from (default .venv)
#   QUICKSTART_TIMEOUT       seconds to wait for the first sync (default 600)
#   PAYMENTS_API_TOKEN       the sample's secret (default demo-token; secrets come from the environment)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QS_DIR=${QUICKSTART_DIR:-$ROOT/.reconciler/quickstart}
mkdir -p "$QS_DIR" && QS_DIR=$(cd "$QS_DIR" && pwd)  # absolute: it is matched against the daemon's command line
VENV=${QUICKSTART_VENV:-$ROOT/.venv}
TIMEOUT=${QUICKSTART_TIMEOUT:-600}
REPO=$QS_DIR/repo
STATE=$QS_DIR/state
CONFIG=$QS_DIR/reconciler.yaml
LOG=$QS_DIR/daemon.log
PIDFILE=$QS_DIR/daemon.pid

say() { printf '==> %s\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

# Whether pid runs (a zombie left for a parent to reap has exited).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# The pid of the daemon this script started on QS_DIR, if it still runs (a reused pid is not ours).
running_pid() {
  local pid
  [[ -f $PIDFILE ]] || return 1
  pid=$(<"$PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "daemon --config $CONFIG" || return 1
  echo "$pid"
}

stop_daemon() {
  local pid
  pid=$(running_pid) || { rm -f "$PIDFILE"; return 0; }
  say "stopping the daemon (pid $pid): SIGTERM finishes the resource in hand, records it and exits"
  kill -TERM "$pid"
  for _ in $(seq 1 600); do  # up to 60 s: a workflow job in hand is finished first
    alive "$pid" || { rm -f "$PIDFILE"; return 0; }
    sleep 0.1
  done
  die "the daemon (pid $pid) did not stop within 60 s; see $LOG"
}

if [[ ${1:-} == stop ]]; then
  stop_daemon
  exit 0
elif [[ $# -gt 0 ]]; then
  die "unknown argument '$1' (use no argument to start, or 'stop')"
fi

# 1. Install -----------------------------------------------------------------------------------------
if [[ ${QUICKSTART_SKIP_INSTALL:-0} != 1 ]]; then
  if [[ ! -x $VENV/bin/python ]]; then
    say "creating the virtualenv $VENV"
    python3 -m venv "$VENV"
  fi
  say "installing reconciler into $VENV (pip install -e .)"
  "$VENV/bin/pip" install -q -e "$ROOT"
  # `pip install .` compiles the package's modules; an editable install leaves that to Python's first
  # import, which writes no bytecode where PYTHONDONTWRITEBYTECODE is set, and every command would then
  # compile its modules from source again (~0.08 s of a one-file plan). Compile them once here.
  "$VENV/bin/python" -m compileall -q "$ROOT/reconciler" >/dev/null 2>&1 \
    || say "could not write bytecode into $ROOT/reconciler (a read-only checkout?): it runs from source"
fi
RECONCILER=$VENV/bin/reconciler
PY=$VENV/bin/python
[[ -x $RECONCILER ]] || die "$RECONCILER is missing: run without QUICKSTART_SKIP_INSTALL=1 to install it"

# 2. A git repository holding the sample ---------------------------------------------------------------
# sample-repo/ lives inside this project's own git work tree, so it is copied out into a repository of
# its own: the daemon tracks a branch of a git repository and writes its status branch there.
if [[ -d $REPO/.git ]]; then
  say "reusing the repository $REPO (delete $QS_DIR to start over)"
else
  say "copying sample-repo into the git repository $REPO"
  rm -rf "$REPO"
  mkdir -p "$REPO"
  cp -R "$ROOT/sample-repo/." "$REPO/"
  find "$REPO" -name __pycache__ -type d -prune -exec rm -rf {} +
  git -C "$REPO" init -q -b main
  git -C "$REPO" add -A
  git -C "$REPO" -c user.name=quickstart -c user.email=quickstart@example.com -c commit.gpgsign=false \
    commit -q -m "The sample payments data product"
fi

# 3. Stop the daemon of a previous run, pick the port, write the config -------------------------------
stop_daemon
# SO_REUSEADDR as uvicorn binds: the old daemon's closed connections (TIME_WAIT) do not make the port taken
port_free() {
  "$PY" -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}
PORT=${QUICKSTART_PORT:-8080}
if ! port_free "$PORT"; then
  NEW=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  say "port $PORT is taken; using $NEW"
  PORT=$NEW
fi
cat >"$CONFIG" <<EOF
# Written by scripts/quickstart.sh. Relative paths are relative to this file.
repo: repo
branch: main
state_dir: state
listen: 127.0.0.1:$PORT
interval: 5s
EOF

# 4. Start the daemon in the background ----------------------------------------------------------------
if [[ -z "${PAYMENTS_API_TOKEN:-}" ]]; then
  export PAYMENTS_API_TOKEN=demo-token
  TOKEN_SHOWN=demo-token            # the demo value this script chose; a value of yours is never printed
else
  TOKEN_SHOWN='$PAYMENTS_API_TOKEN'
fi
say "starting: $RECONCILER daemon --config $CONFIG (log: $LOG)"
# nohup and no terminal: the daemon outlives this script and the shell it was started from
nohup "$RECONCILER" daemon --config "$CONFIG" >>"$LOG" 2>&1 </dev/null &
PID=$!
echo "$PID" >"$PIDFILE"

URL=http://127.0.0.1:$PORT
say "waiting for the first sync (it applies everything and runs the workflow) at $URL/readyz"
started=$SECONDS
until "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$URL/readyz" 2>/dev/null; do
  if ! alive "$PID"; then
    rm -f "$PIDFILE"
    tail -n 30 "$LOG" >&2 || true
    die "the daemon exited before it was ready; the lines above are the end of $LOG"
  fi
  if (( SECONDS - started > TIMEOUT )); then
    tail -n 30 "$LOG" >&2 || true
    die "not ready after ${TIMEOUT} s (the daemon still runs, pid $PID); see $LOG"
  fi
  sleep 0.5
done
say "ready after $(( SECONDS - started )) s"

# 5. Where things are ------------------------------------------------------------------------------------
echo
echo "--- reconciler get --state-dir $STATE"
"$RECONCILER" get --state-dir "$STATE" || true
echo
echo "--- STATUS.md on the status branch (first lines)"
git -C "$REPO" show reconciler/status:STATUS.md | head -n 12 || true
cat <<EOF

The daemon runs in the background (pid $PID) and polls $REPO every 5 s.
  API (OpenAPI UI)   $URL/docs          the API itself: $URL/api/v1/resources
  health, metrics    $URL/healthz   $URL/readyz   $URL/metrics
  STATUS.md          git -C $REPO show reconciler/status:STATUS.md
  resources          $RECONCILER get --state-dir $STATE
  the data product   $RECONCILER get dataproduct card-payments --state-dir $STATE
  a service's data   curl -H "Authorization: Bearer $TOKEN_SHOWN" \\
                       "$URL/api/v1/services/payments/transactions-api/datasets/totals?limit=3"
                     (the sample's service token; it reads as user finance-reporting, through the policies)
  log                $LOG
  try a change       edit a file in $REPO, then: git -C $REPO commit -am "my change"
  stop it            bash $ROOT/scripts/quickstart.sh stop    (or: kill $PID)
EOF
