#!/usr/bin/env bash
# `make cluster`: N `manage.py serve` processes on PORT, PORT+1, … sharing one PostgreSQL and one
# Redis, in the foreground; with NGINX=1, nginx (deploy/nginx.conf) in front on NGINX_PORT; with
# REDIS_CLUSTER=1, a Redis Cluster instead of one Redis: the one REDIS_CLUSTER_NODES names, or
# (unset) three masters and three replicas started here on REDIS_CLUSTER_PORT… +5 (7000), their
# files under var/redis-cluster. Ctrl-C stops them all. docs/deployment.md explains the settings.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-2}
PORT=${PORT:-8000}
HOST=${HOST:-127.0.0.1}
NGINX=${NGINX:-0}
NGINX_PORT=${NGINX_PORT:-8080}
PY=${PY:-.venv/bin/python}
REDIS_CLUSTER=${REDIS_CLUSTER:-0}
REDIS_CLUSTER_PORT=${REDIS_CLUSTER_PORT:-7000}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/biogram}
if [ "$REDIS_CLUSTER" = 1 ]; then
    unset REDIS_URL
else
    export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
fi

# One database for every process: create it if missing, migrate once, before any starts.
"$PY" - <<'PYTHON'
import os

import dj_database_url
import psycopg
from psycopg import sql

config = dj_database_url.parse(os.environ["DATABASE_URL"])
if config["ENGINE"].endswith("postgresql"):
    server = {
        "host": config["HOST"] or None,
        "port": config["PORT"] or None,
        "user": config["USER"] or None,
        "password": config["PASSWORD"] or None,
    }
    server = {key: value for key, value in server.items() if value}
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as connection:
        query = "SELECT 1 FROM pg_database WHERE datname = %s"
        if connection.execute(query, [config["NAME"]]).fetchone() is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))
            print(f"created database {config['NAME']}")
PYTHON
"$PY" manage.py migrate --noinput
# Without SECRET_KEY, every process reads the same generated var/secret_key, so a token
# issued by one is accepted by all.

pids=()
stop() {
    trap - INT TERM EXIT
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait || true
}
trap stop INT TERM EXIT

if [ "$REDIS_CLUSTER" = 1 ] && [ -z "${REDIS_CLUSTER_NODES:-}" ]; then
    nodes=()
    for ((i = 0; i < 6; i++)); do
        port=$((REDIS_CLUSTER_PORT + i))
        dir=$PWD/var/redis-cluster/$port
        mkdir -p "$dir"
        rm -f "$dir/nodes.conf"
        redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
            --save "" --appendonly no --dir "$dir" --logfile "$dir/redis.log" &
        pids+=($!)
        nodes+=("127.0.0.1:$port")
    done
    for node in "${nodes[@]}"; do
        until redis-cli -p "${node##*:}" ping >/dev/null 2>&1; do sleep 0.1; done
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
    until redis-cli -p "$REDIS_CLUSTER_PORT" cluster info | grep -q cluster_state:ok; do sleep 0.2; done
    REDIS_CLUSTER_NODES=$(IFS=,; echo "${nodes[*]}")
    echo "Redis Cluster: three masters, three replicas on $REDIS_CLUSTER_NODES"
fi
[ "$REDIS_CLUSTER" = 1 ] && export REDIS_CLUSTER_NODES

for ((i = 0; i < N; i++)); do
    "$PY" manage.py serve --host "$HOST" --port $((PORT + i)) &
    pids+=($!)
done

if [ "$NGINX" = 1 ]; then
    nginx=$(command -v nginx || echo /usr/sbin/nginx)
    run_dir=$PWD/var/nginx
    mkdir -p "$run_dir"
    servers=""
    for ((i = 0; i < N; i++)); do
        servers+="        server $HOST:$((PORT + i)) max_fails=1 fail_timeout=5s;\n"
    done
    sed -e "s|@LISTEN@|$HOST:$NGINX_PORT|" -e "s|@RUN_DIR@|$run_dir|g" \
        -e "s|^ *@UPSTREAM_SERVERS@|${servers%\\n}|" deploy/nginx.conf >"$run_dir/nginx.conf"
    "$nginx" -p "$run_dir" -c "$run_dir/nginx.conf" -e "$run_dir/error.log" -g 'daemon off;' &
    pids+=($!)
    echo "nginx on http://$HOST:$NGINX_PORT/ in front of ports $PORT…$((PORT + N - 1)) (logs in $run_dir)"
fi

wait
