#!/usr/bin/env bash
# The compose deployment, built and run: `make compose-test`.
#
# Builds the images, brings docker-compose.yml (with docker-compose.cpu.yml, and
# deploy/test/compose.smoke.yml for a machine without an image registry) up with podman-compose
# under its own project name, and from this host, with the tuner CLI against the published API:
#   1. `tuner submit --wait` a small job: it succeeds, its trials ran on the Ray worker
#      container (their `tuner.node` tags), the MLflow server holds its runs, the export downloads;
#   2. submits a second job, restarts the tuner container in the middle of it, and checks that
#      the job still finishes with exactly its trial budget per optimizer;
# then tears everything down (always, also when a check fails): no container, network or
# volume of the project is left.
#
# Needs root (or a working podman) and: podman, runc, netavark, aardvark-dns, iptables,
# debootstrap (installed with apt-get when missing and root), podman-compose >= 1.1 (the `dev`
# extra of the package) and the tuner CLI on the host.
#
# Environment:
#   TUNER_PYTHON     the Python with the tuner package and podman-compose (.venv/bin/python)
#   SMOKE_PROJECT    compose project name (tuner-smoke)
#   SMOKE_KEEP=1     leave the stack running at the end (for debugging; tear down by hand)
#   SMOKE_BASE_IMAGE use this Python 3.11 image as the Dockerfile's BASE_IMAGE instead of the
#                    debootstrap one (e.g. python:3.11-slim where a registry is reachable)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PROJECT=${SMOKE_PROJECT:-tuner-smoke}
TUNER_PYTHON=${TUNER_PYTHON:-$ROOT/.venv/bin/python}
IMAGE_TAG=smoke
DEBIAN_IMAGE=localhost/tuner-test/debian:bookworm
PYTHON_IMAGE=localhost/tuner-test/python:3.11
POSTGRES_IMAGE=localhost/tuner-test/postgres:15
TORCH_VERSION=2.13.0
COMPOSE_FILES=(-f docker-compose.yml -f docker-compose.cpu.yml -f deploy/test/compose.smoke.yml)

t0=$SECONDS
step() { printf '\n== [%4ss] %s\n' "$((SECONDS - t0))" "$*"; }
die() { printf 'smoke: FAIL: %s\n' "$*" >&2; exit 1; }

# ---- prerequisites ---------------------------------------------------------------------------
step "prerequisites"
[ -x "$TUNER_PYTHON" ] || die "no Python with the tuner package at $TUNER_PYTHON (run make setup, or set TUNER_PYTHON)"
missing=()
for pair in podman:podman runc:runc debootstrap:debootstrap iptables:iptables; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[ -x /usr/lib/podman/netavark ] || [ -x /usr/libexec/podman/netavark ] || missing+=(netavark)
[ -x /usr/lib/podman/aardvark-dns ] || [ -x /usr/libexec/podman/aardvark-dns ] || missing+=(aardvark-dns)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing with apt-get: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    die "missing: ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]})"
  fi
fi
COMPOSE=$(dirname "$TUNER_PYTHON")/podman-compose
[ -x "$COMPOSE" ] || COMPOSE=$(command -v podman-compose || true)
[ -n "$COMPOSE" ] || die "missing: podman-compose >= 1.1 ($TUNER_PYTHON -m pip install podman-compose; the dev extra has it)"
compose_version=$("$COMPOSE" --version 2>/dev/null | sed -n 's/^podman-compose version \([0-9.]*\).*/\1/p')
"$TUNER_PYTHON" -c 'import sys; v = tuple(int(x) for x in sys.argv[1].split(".")[:2]); sys.exit(v < (1, 1))' \
  "${compose_version:-0.0}" \
  || die "podman-compose ${compose_version:-?} is too old: docker-compose.cpu.yml's !reset needs >= 1.1"
# This host's podman settings (runc, no default ulimits, netavark), for this script only.
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/test/containers.conf}
podman info >/dev/null 2>&1 || die "podman does not run here: $(podman info 2>&1 | tail -1)"
echo "podman $(podman version --format '{{.Client.Version}}'), runtime $(podman info --format '{{.Host.OCIRuntime.Name}}'), podman-compose $compose_version"

# ---- tear-down: always, and before a run too (leftovers of an interrupted run) -------------------
compose() { "$COMPOSE" --in-pod=false --env-file "$WORK/smoke.env" -p "$PROJECT" "${COMPOSE_FILES[@]}" "$@"; }
leftovers() {
  local label="io.podman.compose.project=$PROJECT"
  podman ps -a -q --filter "label=$label"
  podman volume ls -q --filter "label=$label"
  podman network ls -q --filter "label=$label"
}
teardown() {
  local code=$?
  trap - EXIT INT TERM
  if [ "${SMOKE_KEEP:-0}" = 1 ]; then
    echo "SMOKE_KEEP=1: the stack is left running (project $PROJECT, env $WORK/smoke.env)"
    exit "$code"
  fi
  if [ "$code" != 0 ] && [ -f "$WORK/smoke.env" ]; then
    step "logs (the run failed)"
    for c in $(podman ps -a --format '{{.Names}}' --filter "label=io.podman.compose.project=$PROJECT"); do
      echo "---- $c"; podman logs --tail 40 "$c" 2>&1 || true
    done
  fi
  step "tear-down"
  [ -f "$WORK/smoke.env" ] && compose down -v -t 20 >/dev/null 2>&1 || true
  local label="io.podman.compose.project=$PROJECT"
  podman ps -a -q --filter "label=$label" | xargs -r podman rm -f -t 5 >/dev/null 2>&1 || true
  podman volume ls -q --filter "label=$label" | xargs -r podman volume rm -f >/dev/null 2>&1 || true
  podman network ls -q --filter "label=$label" | xargs -r podman network rm -f >/dev/null 2>&1 || true
  local left
  left=$(leftovers)
  rm -rf "$WORK"
  if [ -n "$left" ]; then
    printf 'smoke: FAIL: left behind:\n%s\n' "$left" >&2
    exit 1
  fi
  echo "nothing left: no container, volume or network of project $PROJECT"
  if [ "$code" = 0 ]; then
    echo "compose smoke test passed in $((SECONDS - t0)) s"
  fi
  exit "$code"
}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tuner-smoke.XXXXXX")
trap teardown EXIT
trap 'exit 130' INT TERM
if [ -n "$(leftovers)" ]; then
  echo "removing what an earlier run of project $PROJECT left"
  label="io.podman.compose.project=$PROJECT"
  podman ps -a -q --filter "label=$label" | xargs -r podman rm -f -t 5 >/dev/null
  podman volume ls -q --filter "label=$label" | xargs -r podman volume rm -f >/dev/null
  podman network ls -q --filter "label=$label" | xargs -r podman network rm -f >/dev/null
fi

# ---- images --------------------------------------------------------------------------------
step "images"
if ! podman image exists "$DEBIAN_IMAGE"; then
  echo "$DEBIAN_IMAGE: debootstrap --variant=minbase bookworm (no image registry here)"
  rootfs="$WORK/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi
if [ -n "${SMOKE_BASE_IMAGE:-}" ]; then
  PYTHON_IMAGE=$SMOKE_BASE_IMAGE
else
  podman build -q -f deploy/test/python.Containerfile -t "$PYTHON_IMAGE" deploy/test >/dev/null
fi
podman build -q -f deploy/test/postgres.Containerfile -t "$POSTGRES_IMAGE" deploy/test >/dev/null

# pip inside the build: the host's CA bundle (what pip's configuration here names) and the CPU
# torch wheel from a find-links folder of the host, else PyTorch's CPU index.
pip_config=$("$TUNER_PYTHON" -m pip config list 2>/dev/null || true)
ca=${PIP_CERT:-$(printf '%s\n' "$pip_config" | sed -n "s/^[a-z:.]*cert='\(.*\)'$/\1/p" | head -1)}
[ -n "$ca" ] && [ -f "$ca" ] || ca=/etc/ssl/certs/ca-certificates.crt
wheel=
for dir in ${PIP_FIND_LINKS:-} $(printf '%s\n' "$pip_config" | sed -n "s/^[a-z:.]*find-links='\(.*\)'$/\1/p"); do
  found=$(ls "$dir"/torch-"$TORCH_VERSION"+cpu-cp311-*.whl 2>/dev/null | head -1 || true)
  if [ -n "$found" ]; then wheel=$found; break; fi
done
build=(podman build -f Dockerfile -t "tuner:$IMAGE_TAG" --layers --format docker
       --build-arg "BASE_IMAGE=$PYTHON_IMAGE"
       --build-arg "TORCH_REQUIREMENT=torch==$TORCH_VERSION+cpu"
       -v "$ca:/run/smoke/ca.crt:ro")
if [ -n "$wheel" ]; then
  echo "torch: $wheel"
  build+=(-v "$(dirname "$wheel"):/run/smoke/wheels:ro"
          --build-arg "PIP_OPTIONS=--cert /run/smoke/ca.crt --find-links /run/smoke/wheels")
else
  echo "torch: PyTorch's CPU index"
  build+=(--build-arg "PIP_OPTIONS=--cert /run/smoke/ca.crt --extra-index-url https://download.pytorch.org/whl/cpu")
fi
"${build[@]}" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; die "podman build of the tuner image failed"; }
echo "tuner:$IMAGE_TAG $(podman image inspect "tuner:$IMAGE_TAG" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
# The image's extras (EXTRAS=rl): the cartpole-reinforce task steps gymnasium's CartPole.
podman run --rm --entrypoint python "tuner:$IMAGE_TAG" -c \
  "import gymnasium; gymnasium.make('CartPole-v1').reset(seed=0); print('gymnasium', gymnasium.__version__)" \
  || die "the image cannot run the cartpole-reinforce task (gymnasium, the rl extra)"

# ---- the stack -----------------------------------------------------------------------------
step "stack up"
free_port() { "$TUNER_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
secret() { "$TUNER_PYTHON" -c 'import secrets; print(secrets.token_hex(24))'; }
TUNER_PORT=$(free_port); MLFLOW_PORT=$(free_port); RAY_DASHBOARD_PORT=$(free_port)
API_TOKEN=$(secret)
# Every variable of .env.example, with fresh secrets; the head offers no CPU so that trials can
# only run on the Ray worker container.
cat >"$WORK/smoke.env" <<EOF
POSTGRES_PASSWORD=$(secret)
TUNER_DB_PASSWORD=$(secret)
MLFLOW_DB_PASSWORD=$(secret)
TUNER_API_TOKEN=$API_TOKEN
RAY_AUTH_TOKEN=$(secret)
TUNER_MAX_JOBS=1
RAY_HEAD_NUM_CPUS=0
RAY_WORKER_NUM_CPUS=2
RAY_SHM_SIZE=1gb
MLFLOW_ALLOWED_HOSTS=localhost
TUNER_IMAGE_TAG=$IMAGE_TAG
BIND_ADDRESS=127.0.0.1
TUNER_PORT=$TUNER_PORT
MLFLOW_PORT=$MLFLOW_PORT
RAY_DASHBOARD_PORT=$RAY_DASHBOARD_PORT
EOF
compose up -d --no-build >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; die "podman-compose up failed"; }
"$TUNER_PYTHON" deploy/test/smoke_checks.py wait-healthy --project "$PROJECT" \
  --services postgres,mlflow,ray-head,ray-worker,tuner --timeout 420

export TUNER_URL=http://127.0.0.1:$TUNER_PORT TUNER_API_TOKEN=$API_TOKEN
export MLFLOW_URL=http://127.0.0.1:$MLFLOW_PORT COLUMNS=110
tuner() { "$TUNER_PYTHON" -c 'import sys; from tuner.cli import main; sys.argv[0] = "tuner"; main()' "$@"; }
checks() { "$TUNER_PYTHON" deploy/test/smoke_checks.py "$@" --project "$PROJECT"; }

# ---- 1. a job, submitted and followed from this host ---------------------------------------
step "job 1: tuner submit --wait"
cat >"$WORK/job.yaml" <<'EOF'
name: smoke
task: digits-logreg
optimizers: [sgd, adam]
trials: 4
epochs: 3
pruner: none
final_seeds: 2
max_concurrent: 2
seed: 0
EOF
tuner submit "$WORK/job.yaml" --wait | tee "$WORK/submit.out"
job1=$(sed -n 's/^job \([0-9]*\) submitted.*/\1/p' "$WORK/submit.out" | head -1)
[ -n "$job1" ] || die "no job id in the output of tuner submit"
checks check-job "$job1" --job-file "$WORK/job.yaml"
tuner export "$job1" -o "$WORK/best.yaml"
checks check-export "$WORK/best.yaml" --job-file "$WORK/job.yaml"

# ---- 2. the tuner container restarted mid-job ------------------------------------------------
step "job 2: restart the tuner container mid-job"
cat >"$WORK/job2.yaml" <<'EOF'
name: smoke-restart
task: digits-mlp
optimizers: [sgd, adam]
trials: 6
epochs: 8
pruner: none
final_seeds: 1
max_concurrent: 2
seed: 1
EOF
tuner submit "$WORK/job2.yaml" | tee "$WORK/submit2.out"
job2=$(sed -n 's/^job \([0-9]*\) submitted.*/\1/p' "$WORK/submit2.out" | head -1)
[ -n "$job2" ] || die "no job id in the output of tuner submit"
checks wait-trials "$job2" --finished 2 --timeout 300
tuner_container=$(podman ps -q --filter "label=io.podman.compose.project=$PROJECT" \
                                --filter "label=io.podman.compose.service=tuner")
echo "restarting the tuner container ($tuner_container)"
# (Without systemd, podman logs that it cannot schedule the healthcheck timers: not a failure.)
podman restart -t 60 "$tuner_container" 2>&1 >/dev/null | grep -v 'systemd connection' >&2 || true
[ "$(podman inspect -f '{{.State.Status}}' "$tuner_container")" = running ] \
  || die "the tuner container is not running after podman restart"
checks wait-healthy --services tuner --timeout 240
tuner status "$job2" --watch || true
checks check-job "$job2" --job-file "$WORK/job2.yaml" --restarted

step "all checks passed"
