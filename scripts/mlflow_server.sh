#!/usr/bin/env bash
# A throwaway team tracking server on this machine: PostgreSQL (backend store) + `mlflow server`
# (artifacts proxied into a local directory), both listening on 127.0.0.1 only, on free ports.
#
#   scripts/mlflow_server.sh start [STATE_DIR]   # start both; prints the env lines to use them
#   scripts/mlflow_server.sh env   [STATE_DIR]   # print `export MLFLOW_TRACKING_URI=...` lines again
#   scripts/mlflow_server.sh stop  [STATE_DIR]   # stop both and delete the cluster and artifacts
#
# STATE_DIR defaults to $MMROUTE_SERVER_DIR or /tmp/mmroute-server. PostgreSQL comes from Debian's
# `postgresql` package (installed with apt-get when absent and running as root). The cluster is
# owned by an unprivileged user: the current one, or `mmroute-pg` (created if missing) when run as
# root, since PostgreSQL refuses to run as root. MLFLOW defaults to the mlflow next to python3 in
# $PYTHON's directory, else the one on PATH. A real deployment runs the same two programs with a
# managed database and a shared artifact store: see README, "A shared tracking server".
set -euo pipefail

cmd="${1:-}"
STATE="${2:-${MMROUTE_SERVER_DIR:-/tmp/mmroute-server}}"
PG_USER_NAME="${MMROUTE_PG_USER:-mmroute-pg}"
PYTHON="${PYTHON:-python3}"
if [[ -z "${MLFLOW:-}" ]]; then
    pydir="$(dirname "$(command -v "$PYTHON")")"
    if [[ -x "$pydir/mlflow" ]]; then MLFLOW="$pydir/mlflow"; else MLFLOW="$(command -v mlflow || true)"; fi
fi

die() { echo "mlflow_server.sh: $*" >&2; exit 1; }

pg_bindir() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -z "$dir" && "$(id -u)" == 0 && "${MMROUTE_NO_APT:-}" != 1 ]]; then
        echo "mlflow_server.sh: installing PostgreSQL (apt-get install -y postgresql)" >&2
        export DEBIAN_FRONTEND=noninteractive
        { flock 9; apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null; } \
            9>/tmp/apt.lock
        dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    fi
    [[ -n "$dir" && -x "$dir/initdb" ]] || die "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
    echo "$dir"
}

# Run a command as the cluster's owner.
as_pg() {
    if [[ "$(id -u)" == 0 ]]; then runuser -u "$PG_USER_NAME" -- "$@"; else "$@"; fi
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

print_env() {
    [[ -f "$STATE/env" ]] || die "no server state in $STATE (run: $0 start)"
    cat "$STATE/env"
}

start() {
    [[ -n "$MLFLOW" && -x "$MLFLOW" ]] || die "mlflow not found (set MLFLOW=/path/to/mlflow or PYTHON=venv/bin/python)"
    "$PYTHON" -c 'import psycopg2' 2>/dev/null || die "$PYTHON lacks psycopg2 (pip install psycopg2-binary)"
    if [[ -f "$STATE/mlflow.pid" ]] && kill -0 "$(cat "$STATE/mlflow.pid")" 2>/dev/null; then
        echo "mlflow_server.sh: already running ($STATE)" >&2; print_env; return 0
    fi
    local bindir; bindir="$(pg_bindir)"
    if [[ "$(id -u)" == 0 ]] && ! id "$PG_USER_NAME" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER_NAME"
    fi
    mkdir -p "$STATE" && chmod 755 "$STATE"
    local pgdata pgport port password uri
    pgdata="$(mktemp -d /tmp/mmroute-pgdata.XXXXXX)"          # /tmp: reachable by the pg user
    [[ "$(id -u)" == 0 ]] && chown "$PG_USER_NAME" "$pgdata"
    chmod 700 "$pgdata"
    echo "$pgdata" > "$STATE/pgdata"
    password="$("$PYTHON" -c 'import secrets; print(secrets.token_hex(16))')"
    as_pg bash -c "umask 077; printf '%s\n' '$password' > '$pgdata/.pw'"
    as_pg "$bindir/initdb" -D "$pgdata/db" -U mlflow --pwfile="$pgdata/.pw" --auth-local=scram-sha-256 \
        --auth-host=scram-sha-256 -E UTF8 >"$STATE/initdb.log" 2>&1 || { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
    as_pg rm -f "$pgdata/.pw"
    pgport="$(free_port)"
    as_pg "$bindir/pg_ctl" -D "$pgdata/db" -l "$pgdata/postgres.log" -w -t 60 \
        -o "-p $pgport -k $pgdata -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null \
        || { cat "$pgdata/postgres.log" >&2 || true; die "PostgreSQL did not start"; }
    echo "$pgport" > "$STATE/pgport"
    PGPASSWORD="$password" "$bindir/createdb" -h 127.0.0.1 -p "$pgport" -U mlflow mlflow
    uri="postgresql+psycopg2://mlflow:$password@127.0.0.1:$pgport/mlflow"
    mkdir -p "$STATE/artifacts"
    port="$(free_port)"
    # One uvicorn worker: the handlers run in its thread pool, enough for a test team on 2 cores.
    nohup "$MLFLOW" server --backend-store-uri "$uri" --artifacts-destination "$STATE/artifacts" \
        --host 127.0.0.1 --port "$port" --workers 1 >"$STATE/mlflow.log" 2>&1 &
    echo $! > "$STATE/mlflow.pid"
    local i
    for i in $(seq 1 240); do
        if "$PYTHON" - "$port" <<'PY' 2>/dev/null
import sys, urllib.request
port = sys.argv[1]
urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1", timeout=5).read()
PY
        then break; fi
        kill -0 "$(cat "$STATE/mlflow.pid")" 2>/dev/null || { tail -n 30 "$STATE/mlflow.log" >&2; stop; die "mlflow server exited"; }
        sleep 0.5
    done
    [[ $i -lt 240 ]] || { tail -n 30 "$STATE/mlflow.log" >&2; stop; die "mlflow server did not answer in 120 s"; }
    umask 077
    cat > "$STATE/env" <<ENV
export MLFLOW_TRACKING_URI=http://127.0.0.1:$port
export MMROUTE_TEST_SERVER_URI=http://127.0.0.1:$port
export MMROUTE_TEST_POSTGRES_URI=$uri
ENV
    print_env
}

stop() {
    if [[ -f "$STATE/mlflow.pid" ]]; then
        local pid; pid="$(cat "$STATE/mlflow.pid")"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$STATE/mlflow.pid"
    fi
    if [[ -f "$STATE/pgdata" ]]; then
        local pgdata bindir; pgdata="$(cat "$STATE/pgdata")"
        if [[ -f "$pgdata/db/postmaster.pid" ]]; then
            bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
            as_pg "$bindir/pg_ctl" -D "$pgdata/db" -m fast -w stop >/dev/null 2>&1 || true
        fi
        case "$pgdata" in /tmp/mmroute-pgdata.*) rm -rf "$pgdata" ;; esac
        rm -f "$STATE/pgdata"
    fi
    # Only what start wrote: the state directory may have been given by the caller.
    rm -rf "$STATE/artifacts"
    rm -f "$STATE/env" "$STATE/pgport" "$STATE/initdb.log" "$STATE/mlflow.log"
    rmdir "$STATE" 2>/dev/null || true
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    env) print_env ;;
    *) echo "usage: $0 start|env|stop [STATE_DIR]" >&2; exit 2 ;;
esac
