#!/usr/bin/env bash
# Build the daemon image from ./Dockerfile with podman and check it end to end, on a machine that has no
# Docker engine and cannot pull from Docker Hub (Debian bookworm, root, PyPI and the Debian mirror reachable).
#
#   sudo bash scripts/image-check.sh
#
# What it does, in order (every check prints a PASS or FAIL line; the exit status is 1 when any failed):
#   1. installs podman, runc and debootstrap with apt-get when they are missing;
#   2. makes a stand-in for python:3.11-slim once (debootstrap of Debian bookworm, minbase, with Debian's
#      python3 3.11 and pip; no EXTERNALLY-MANAGED marker; python/pip/groupadd/useradd on PATH) and imports
#      it as localhost/python-standin:3.11-slim; later runs reuse it;
#   3. builds the Dockerfile unchanged with `podman build --from <stand-in>` (the flag replaces the first
#      FROM) from `git archive HEAD` (the committed tree: uncommitted edits do not reach the image);
#   4. runs the image like the Dockerfile's header says: a named volume on /var/lib/reconciler, a read-only
#      bind of a config dir on /etc/reconciler, -p to 8080, PAYMENTS_API_TOKEN=demo-token; the config
#      tracks a bare git repository of sample-repo/ (file:// remote, writable bind, owned by uid 10001: the
#      daemon mirrors it into the volume and pushes its status branch back there);
#   5. checks uid 10001, /healthz through the published port, `podman healthcheck run`, /readyz after the
#      first sync, the status branch, the sample service's route, `podman stop` (SIGTERM) exiting 0, and
#      that a restarted container and a new container on the same volume resume without applying again;
#   6. removes its containers, its volume and its scratch files (IMAGE_CHECK_KEEP=1 keeps them). The
#      stand-in base and the built image are kept.
#
# Not part of the pytest suite or CI: it needs root, apt and a few minutes (about 1 min for the stand-in
# the first time, 30 s for the build, 30 s for the checks, on 2 cores).
#
# Environment (all optional):
#   IMAGE_CHECK_DIR           scratch directory (default /var/tmp/reconciler-image-check)
#   IMAGE_CHECK_BASE          the stand-in base image name (default localhost/python-standin:3.11-slim)
#   IMAGE_CHECK_IMAGE         the image built (default localhost/reconciler:image-check)
#   IMAGE_CHECK_REBUILD_BASE  1: make the stand-in again even if it exists
#   IMAGE_CHECK_NO_CACHE      1: podman build --no-cache
#   IMAGE_CHECK_WORKTREE      1: build from the work tree as it is (uncommitted edits included)
#   IMAGE_CHECK_PORT          host port published to 8080 (default: a free one)
#   IMAGE_CHECK_TIMEOUT       seconds to wait for /readyz (default 300)
#   IMAGE_CHECK_RUNTIME       OCI runtime (default runc; crun 1.8 refuses this VM's hybrid cgroup layout)
#   IMAGE_CHECK_MIRROR        Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   IMAGE_CHECK_KEEP          1: leave the container, volume and scratch files for inspection
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${IMAGE_CHECK_DIR:-/var/tmp/reconciler-image-check}
BASE=${IMAGE_CHECK_BASE:-localhost/python-standin:3.11-slim}
IMAGE=${IMAGE_CHECK_IMAGE:-localhost/reconciler:image-check}
TIMEOUT=${IMAGE_CHECK_TIMEOUT:-300}
RUNTIME=${IMAGE_CHECK_RUNTIME:-runc}
MIRROR=${IMAGE_CHECK_MIRROR:-http://deb.debian.org/debian}
NAME=reconciler-image-check
VOLUME=reconciler-image-check-state
RUN_DIR=$WORK/run
BARE=$RUN_DIR/git/sample.git
PODMAN_LOG=$WORK/podman.log

PASSED=0
FAILED=0
say() { printf '==> %s\n' "$*"; }
pass() { printf 'PASS  %s\n' "$*"; PASSED=$((PASSED + 1)); }
fail() { printf 'FAIL  %s\n' "$*"; FAILED=$((FAILED + 1)); }
die() { fail "$*"; summary; exit 1; }
summary() { printf '\n%d passed, %d failed\n' "$PASSED" "$FAILED"; }

[[ $(id -u) == 0 ]] || { echo "image-check: run as root (rootful podman, apt-get, debootstrap)" >&2; exit 2; }
mkdir -p "$WORK"
: >"$PODMAN_LOG"

# 1. Tools ------------------------------------------------------------------------------------------------
# podman builds (its build is buildah's) and runs; runc is the OCI runtime; debootstrap makes the stand-in;
# netavark/aardvark-dns/iptables give the bridge network that publishes -p; uidmap, slirp4netns and
# fuse-overlayfs are podman's usual companions (only rootless podman needs them).
PKGS=(podman runc debootstrap netavark aardvark-dns iptables uidmap slirp4netns fuse-overlayfs)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$WORK/apt.log" 2>&1 \
    || { tail -n 20 "$WORK/apt.log" >&2; die "apt-get install ${missing[*]} (log: $WORK/apt.log)"; }
fi
pass "tools: $(podman --version), $(runc --version | head -n 1), debootstrap $(dpkg-query -W -f='${Version}' debootstrap)"

# Rootful podman asks the runtime for nofile=1048576 and nproc=4194304 unless told otherwise; without
# CAP_SYS_RESOURCE (this VM) setrlimit refuses to raise limits, so ask for what podman itself has: the
# hard nofile limit of this shell, and nproc capped at 32768 (what podman's own process runs with here).
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[[ $nofile == unlimited ]] && nofile=1048576
[[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768
RUN_OPTS=(--runtime "$RUNTIME" --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")

# podman logs "unable to get systemd connection" for every container with a HEALTHCHECK when systemd is
# not PID 1 (it schedules healthchecks with systemd timers): those lines go to $PODMAN_LOG, not the screen.
pm() { podman "$@" 2>>"$PODMAN_LOG"; }
podman_errors() { grep -v 'systemd connection' "$PODMAN_LOG" | tail -n 3; }  # the last real ones

# 2. The stand-in for python:3.11-slim --------------------------------------------------------------------
# An image replaced by a new one under the same name is removed (by its id), not left dangling.
drop_replaced() {  # $1: the id the name had before, $2: the name
  local now
  now=$(podman image inspect -f '{{.Id}}' "$2" 2>/dev/null)
  [[ -n $1 && $1 != "$now" ]] && pm rmi "$1" >/dev/null
  return 0
}

if [[ ${IMAGE_CHECK_REBUILD_BASE:-0} == 1 ]] || ! podman image exists "$BASE"; then
  say "making the stand-in base $BASE (debootstrap bookworm minbase from $MIRROR)"
  old_base=$(podman image inspect -f '{{.Id}}' "$BASE" 2>/dev/null)
  rootfs=$WORK/rootfs
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates,netbase,tzdata \
    bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap (log: $WORK/debootstrap.log)"; }
  # python:3.11-slim lets pip install system-wide (its Python is not Debian's: no EXTERNALLY-MANAGED).
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  # The build VM's own identity and resolver, and apt's caches, do not belong in an image.
  rm -f "$rootfs/etc/hostname"
  : >"$rootfs/etc/resolv.conf"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  tar --numeric-owner --xattrs -C "$rootfs" -cf - . | pm import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'LABEL org.opencontainers.image.description="Stand-in for python:3.11-slim: Debian bookworm minbase with python3 and pip, made by scripts/image-check.sh"' \
      --change 'CMD ["python3"]' - "$BASE" >/dev/null \
    || die "podman import of the stand-in base (log: $PODMAN_LOG)"
  rm -rf "$rootfs"
  drop_replaced "$old_base" "$BASE"
else
  say "reusing the stand-in base $BASE (IMAGE_CHECK_REBUILD_BASE=1 makes it again)"
fi
base_probe=$(pm run --rm --network none "${RUN_OPTS[@]}" "$BASE" sh -c '
  python --version; pip --version | cut -d" " -f1-2
  command -v groupadd >/dev/null && command -v useradd >/dev/null && echo groupadd+useradd
  python -c "import sys, sysconfig, pathlib; p = pathlib.Path(sysconfig.get_path(\"stdlib\"), \"EXTERNALLY-MANAGED\"); print(\"externally-managed\" if p.exists() else \"pip-may-install\")"' 2>&1)
if grep -q '^Python 3\.11\.' <<<"$base_probe" && grep -q '^pip ' <<<"$base_probe" \
    && grep -q groupadd+useradd <<<"$base_probe" && grep -q pip-may-install <<<"$base_probe"; then
  pass "stand-in base $BASE: $(tr '\n' ' ' <<<"$base_probe")"
else
  die "stand-in base $BASE is not like python:3.11-slim: ${base_probe:-$(podman_errors)}"
fi

# 3. Build ------------------------------------------------------------------------------------------------
# pip inside the build must reach PyPI the way pip on this host does. The host's index is PyPI itself (its
# extra indexes and find-links are local directories of unrelated wheels), reached through a TLS-inspecting
# proxy whose CA is in the host's bundle (pip's `cert` setting): the build uses the host network and sees the
# host's CA bundle, bind-mounted read-only over the base's for the build's RUN steps only (nothing of it is
# committed into the image). An http(s) index-url/extra-index-url/trusted-host set on the host (pip config or
# PIP_* variables) is passed as /etc/pip.conf the same way (that leaves an empty /etc/pip.conf mount point).
host_pip=$(python3 -m pip config list 2>/dev/null || true)
pip_setting() {  # the host's value of pip setting $1: PIP_* variable, then any config file's
  local env=PIP_${1^^}
  env=${env//-/_}
  if [[ -n ${!env:-} ]]; then printf '%s' "${!env}"; return; fi
  sed -n "s/^[^.]*\.$1='\(.*\)'\$/\1/p" <<<"$host_pip" | head -n 1
}
ca_bundle=$(pip_setting cert)
[[ -f $ca_bundle ]] || ca_bundle=/etc/ssl/certs/ca-certificates.crt
BUILD_MOUNTS=()
[[ -f $ca_bundle ]] && BUILD_MOUNTS+=(-v "$ca_bundle:/etc/ssl/certs/ca-certificates.crt:ro")
pip_conf=""
for key in index-url extra-index-url trusted-host; do
  value=$(pip_setting "$key")
  [[ $key == *index-url ]] && value=$(tr ' ' '\n' <<<"$value" | grep -E '^https?://' | tr '\n' ' ')
  value=${value% }
  [[ -n $value ]] && pip_conf+="$key = $value"$'\n'
done
rm -f "$WORK/pip.conf"
if [[ -n $pip_conf ]]; then
  printf '[global]\n%s' "$pip_conf" >"$WORK/pip.conf"
  BUILD_MOUNTS+=(-v "$WORK/pip.conf:/etc/pip.conf:ro")
  say "passing the host's pip index settings to the build as /etc/pip.conf: $(paste -s -d ';' "$WORK/pip.conf")"
fi

if [[ ${IMAGE_CHECK_WORKTREE:-0} == 1 ]]; then
  CONTEXT=$ROOT
  context_label="the work tree $ROOT (uncommitted edits included)"
else
  CONTEXT=$WORK/context
  rm -rf "$CONTEXT" && mkdir -p "$CONTEXT"
  git -C "$ROOT" archive HEAD | tar -x -C "$CONTEXT" || die "git archive HEAD of $ROOT"
  context_label="git archive of HEAD $(git -C "$ROOT" rev-parse --short HEAD)"
fi
build_opts=(--format docker --network host "${RUN_OPTS[@]}" "${BUILD_MOUNTS[@]}")
[[ ${IMAGE_CHECK_NO_CACHE:-0} == 1 ]] && build_opts+=(--no-cache)
# --format docker: the OCI image format has no HEALTHCHECK (podman drops it with a warning).
say "podman build ${build_opts[*]} --from $BASE -t $IMAGE -f Dockerfile ($context_label)"
started=$SECONDS
old_image=$(podman image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null)
if podman build "${build_opts[@]}" --from "$BASE" -t "$IMAGE" -f "$CONTEXT/Dockerfile" "$CONTEXT" \
    >"$WORK/build.log" 2>&1; then
  drop_replaced "$old_image" "$IMAGE"
  size=$(podman image inspect -f '{{.Size}}' "$IMAGE")
  pass "build: $IMAGE in $((SECONDS - started)) s, $((size / 1000000)) MB ($(grep -m1 '^STEP 1/' "$WORK/build.log"))"
else
  tail -n 30 "$WORK/build.log" >&2
  die "build (log: $WORK/build.log)"
fi
config=$(podman image inspect -f '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Volumes}}' "$IMAGE")
health=$(podman image inspect -f '{{json .HealthCheck}}' "$IMAGE")
if [[ $config == 'reconciler|["reconciler","daemon"]|{"/var/lib/reconciler":{}}' && $health == *"/healthz"* ]]; then
  pass "image config: USER reconciler, ENTRYPOINT reconciler daemon, VOLUME /var/lib/reconciler, HEALTHCHECK kept"
else
  fail "image config: $config; healthcheck $health"
fi
# The build-time mounts stay out of the image: its CA bundle is the base's, not this host's.
bundle_sum() { pm run --rm --network none "${RUN_OPTS[@]}" --entrypoint sha256sum "$1" /etc/ssl/certs/ca-certificates.crt | cut -c1-16; }
image_sum=$(bundle_sum "$IMAGE")
base_sum=$(bundle_sum "$BASE")
if [[ -n $image_sum && $image_sum == "$base_sum" ]]; then
  pass "the image's CA bundle is the base's ($image_sum...): the host's, mounted for the build, was not committed"
else
  fail "the image's CA bundle ($image_sum) differs from the base's ($base_sum)"
fi

# 4. A repository, a config and the container -------------------------------------------------------------
cleanup() {
  if [[ ${IMAGE_CHECK_KEEP:-0} == 1 ]]; then
    say "kept: container $NAME, volume $VOLUME, $RUN_DIR (IMAGE_CHECK_KEEP=1)"
    return
  fi
  pm rm -f -t 5 "$NAME" >/dev/null
  pm volume rm -f "$VOLUME" >/dev/null
  rm -rf "$RUN_DIR" "$WORK/context"
  if podman container exists "$NAME" || podman volume exists "$VOLUME"; then
    echo "FAIL  cleanup: $NAME or $VOLUME is still there"
  else
    say "cleaned up: container $NAME, volume $VOLUME, $RUN_DIR (kept: $BASE, $IMAGE)"
  fi
}
pm rm -f -t 5 "$NAME" >/dev/null  # left over from an interrupted run
pm volume rm -f "$VOLUME" >/dev/null
trap cleanup EXIT

rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR/src" "$RUN_DIR/etc" "$RUN_DIR/git"
cp -R "$ROOT/sample-repo/." "$RUN_DIR/src/"
find "$RUN_DIR/src" -name __pycache__ -type d -prune -exec rm -rf {} +
git -C "$RUN_DIR/src" init -q -b main && git -C "$RUN_DIR/src" add -A \
  && git -C "$RUN_DIR/src" -c user.name=image-check -c user.email=image-check@example.com -c commit.gpgsign=false \
       commit -q -m "The sample payments data product" \
  && git clone -q --bare "$RUN_DIR/src" "$BARE" || die "a git repository of sample-repo"
HEAD_COMMIT=$(git -C "$BARE" rev-parse main)
# libgit2 refuses a repository its user does not own ("not owned by current user"): the daemon runs as 10001.
chown -R 10001:10001 "$RUN_DIR/git"
cat >"$RUN_DIR/etc/reconciler.yaml" <<'EOF'
# Written by scripts/image-check.sh. The daemon mirrors the repository into its state volume and pushes
# the status branch back to it (a file:// remote; the CMD's --listen and --state-dir complete this).
repo: file:///srv/git/sample.git
branch: main
interval: 5s
EOF
PORT=${IMAGE_CHECK_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
URL=http://127.0.0.1:$PORT

run_container() {
  pm run -d --name "$NAME" "${RUN_OPTS[@]}" \
    -e PAYMENTS_API_TOKEN=demo-token \
    -v "$VOLUME:/var/lib/reconciler" \
    -v "$RUN_DIR/etc:/etc/reconciler:ro" \
    -v "$RUN_DIR/git:/srv/git" \
    -p "127.0.0.1:$PORT:8080" \
    "$IMAGE" >/dev/null
}

# GET $1 (optional header $2): prints the HTTP status on the first line, then the body (0: no answer).
http_get() {
  python3 - "$@" <<'EOF'
import sys, urllib.error, urllib.request
req = urllib.request.Request(sys.argv[1], headers=dict([sys.argv[2].split(": ", 1)]) if len(sys.argv) > 2 else {})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
try:
    with opener.open(req, timeout=5) as r:
        print(r.status); sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); sys.stdout.write(e.read().decode())
except Exception as e:  # noqa: BLE001
    print(0); print(type(e).__name__, e)
EOF
}
status_of() { head -n 1 <<<"$1"; }
body_of() { tail -n +2 <<<"$1"; }

# Wait for $1 to answer 200 while the container runs; prints the seconds waited.
wait_for() {
  local path=$1 started=$SECONDS out
  while ((SECONDS - started < TIMEOUT)); do
    out=$(http_get "$URL$path")
    [[ $(status_of "$out") == 200 ]] && { echo $((SECONDS - started)); return 0; }
    [[ $(podman inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null) == true ]] || return 1
    sleep 0.5
  done
  return 1
}

# What an apply changes: each resource's applied_at, and the number of runs of the sample's workflow.
applied_state() {
  python3 - "$URL" <<'EOF'
import json, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
get = lambda path: json.load(opener.open(sys.argv[1] + path, timeout=10))
for r in sorted(get("/api/v1/resources"), key=lambda r: r["id"]):
    print(r["id"], r["applied_at"])
print("workflow runs:", len(get("/api/v1/runs/payments/transactions-daily")))
EOF
}

show_logs() { echo "--- podman logs $NAME (last 30 lines)"; podman logs --tail 30 "$NAME" 2>&1; }

# Stop with SIGTERM (podman stop sends the image's stop signal, SIGTERM, then SIGKILL after -t seconds).
stop_check() {
  local label=$1 started=$SECONDS code
  pm stop -t 30 "$NAME" >/dev/null
  code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
  if [[ $code == 0 ]]; then
    pass "$label: podman stop (SIGTERM) -> exit code 0 after $((SECONDS - started)) s"
  else
    fail "$label: podman stop (SIGTERM) -> exit code $code after $((SECONDS - started)) s (137: killed)"; show_logs
  fi
}

say "podman run $NAME: volume $VOLUME, $RUN_DIR/etc read-only, $RUN_DIR/git, -p 127.0.0.1:$PORT:8080"
run_container || die "podman run: $(podman_errors)"

# 5. Checks -----------------------------------------------------------------------------------------------
if waited=$(wait_for /healthz); then
  out=$(http_get "$URL/healthz")
  pass "/healthz through the published port 127.0.0.1:$PORT -> HTTP $(status_of "$out") $(body_of "$out") (after ${waited} s)"
else
  fail "/healthz through 127.0.0.1:$PORT did not answer 200: $(http_get "$URL/healthz" | tr '\n' ' ')"; show_logs
fi

pid=$(podman inspect -f '{{.State.Pid}}' "$NAME")
uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status" 2>/dev/null)
exec_id=$(pm exec "$NAME" id)
if [[ $uids == "10001 10001 10001 10001" && $exec_id == uid=10001\(reconciler\)* ]]; then
  pass "not root: the daemon (host pid $pid, $(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-60)...) has uids $uids; podman exec id: $exec_id"
else
  fail "the daemon's uids are '$uids', podman exec id: $exec_id"
fi

mountpoint=$(podman volume inspect -f '{{.Mountpoint}}' "$VOLUME")
owner=$(stat -c '%u:%g' "$mountpoint")
[[ $owner == 10001:10001 ]] && pass "the new named volume $VOLUME took the image's ownership: $owner" \
  || fail "the named volume $VOLUME is owned by $owner, not 10001:10001"

if waited=$(wait_for /readyz); then
  out=$(http_get "$URL/readyz")
  if grep -q "\"commit\":\"$HEAD_COMMIT\"" <<<"$out"; then
    pass "/readyz -> HTTP 200 $(body_of "$out") after ${waited} s (the first sync of $HEAD_COMMIT)"
  else
    fail "/readyz answered 200 but not with commit $HEAD_COMMIT: $(body_of "$out")"
  fi
else
  fail "/readyz not 200 within ${TIMEOUT} s: $(http_get "$URL/readyz" | tr '\n' ' ')"; show_logs
fi

hc_out=$(pm healthcheck run "$NAME" 2>&1); hc_rc=$?
hc_status=$(podman inspect -f '{{.State.Health.Status}}' "$NAME" 2>/dev/null)
if [[ $hc_rc == 0 && $hc_status == healthy ]]; then
  pass "podman healthcheck run $NAME -> exit 0${hc_out:+ ($hc_out)}, health status: $hc_status"
else
  fail "podman healthcheck run $NAME -> exit $hc_rc: $hc_out; health status: $hc_status"
fi

status_md=$(git -c safe.directory='*' -C "$BARE" show reconciler/status:STATUS.md 2>&1)
if grep -q "Source commit: \`$HEAD_COMMIT\`" <<<"$status_md"; then
  pass "status branch pushed to the repository: reconciler/status:STATUS.md at $(git -c safe.directory='*' -C "$BARE" rev-parse --short reconciler/status), '$(grep -m1 'resource(s)' <<<"$status_md")'"
else
  fail "no STATUS.md for $HEAD_COMMIT on reconciler/status of $BARE: $(head -n 3 <<<"$status_md")"
fi

out=$(http_get "$URL/api/v1/services/payments/transactions-api/datasets/totals?limit=1" "Authorization: Bearer demo-token")
if [[ $(status_of "$out") == 200 ]] && grep -q '"rows"' <<<"$out"; then
  pass "the sample's service route with PAYMENTS_API_TOKEN -> HTTP 200 with rows"
else
  fail "the sample's service route -> $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
fi

before=$(applied_state)
grep -q '^workflow runs: [1-9]' <<<"$before" \
  || fail "the applied state before the restart could not be read: $(tail -n 2 <<<"$before")"
stop_check "first container"

pm start "$NAME" >/dev/null || fail "podman start $NAME"
if waited=$(wait_for /readyz); then
  after=$(applied_state)
  if [[ $after == "$before" ]]; then
    pass "restarted container on the same volume: ready after ${waited} s, nothing applied again ($(wc -l <<<"$after") lines of applied_at and run count unchanged: $(tail -n 1 <<<"$after"))"
  else
    fail "restarted container applied again:"; diff <(echo "$before") <(echo "$after")
  fi
else
  fail "restarted container: /readyz not 200 within ${TIMEOUT} s"; show_logs
fi
stop_check "restarted container"

pm rm "$NAME" >/dev/null
run_container || fail "podman run (a new container on $VOLUME)"
if waited=$(wait_for /readyz); then
  after=$(applied_state)
  if [[ $after == "$before" ]]; then
    pass "a new container on the same volume: ready after ${waited} s, nothing applied again ($(tail -n 1 <<<"$after"))"
  else
    fail "a new container on the same volume applied again:"; diff <(echo "$before") <(echo "$after")
  fi
else
  fail "a new container on the same volume: /readyz not 200 within ${TIMEOUT} s"; show_logs
fi
stop_check "new container"

summary
((FAILED == 0))
