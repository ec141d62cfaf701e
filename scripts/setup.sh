#!/usr/bin/env bash
# Idempotent set-up for a fresh machine of this project's kind (Debian, Python 3.11, root):
# a virtualenv in .venv with reprlab and every extra installed, and Redis + PostgreSQL running.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it skips finished work).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=${REPRLAB_VENV:-.venv}
log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# Reinstall only when the dependency declaration changed.
stamp="$VENV/.reprlab-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # The CPU wheel of torch lies on this machine's disk; asking for it first keeps pip from
  # resolving a multi-GB CUDA build for the 'torch>=2.4' requirement.
  log "installing torch (CPU) and reprlab[all,dev] (first run: a few minutes)"
  "$PY" -m pip install -q --upgrade pip 2>&1 | grep -v 'is ignored' || true
  "$PY" -m pip install -q "torch==2.13.0" 2>&1 | grep -v 'is ignored' || true
  "$PY" -m pip install -q -e ".[all,dev]" 2>&1 | grep -v 'is ignored' || true
  "$PY" -c "import reprlab.worker.pipeline, reprlab.server.app, reprlab.client.cli" \
    || { log "installation failed"; exit 1; }
  echo "$want" > "$stamp"
fi

have() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  log "installing $* from Debian's packages"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Redis: the Celery broker (127.0.0.1:6379).
if ! (have redis-cli && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1); then
  have redis-server || apt_install redis-server
  log "starting redis-server on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/reprlab.log
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

# PostgreSQL: the deployment database; the test suite runs the job store against it too.
if [ "${REPRLAB_SKIP_POSTGRES:-0}" != 1 ]; then
  if ! (have pg_isready && pg_isready -q -h 127.0.0.1 -p 5432); then
    if [ -d /etc/postgresql ]; then
      log "starting PostgreSQL"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start \
        || log "could not start PostgreSQL; its tests will skip"
    else
      log "PostgreSQL is not installed; its tests will skip"
    fi
  fi
fi
