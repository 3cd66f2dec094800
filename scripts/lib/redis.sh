# Make sure a Redis server answers and export AUTONOMIC_TEST_REDIS_URL (database 15, for tests).
# Uses a running server if there is one; otherwise starts Debian's redis-server on 127.0.0.1:6379,
# installing it from Debian's packages first if it is missing.

redis_try() {
    .venv/bin/python - "$1" <<'PY' >/dev/null 2>&1
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=2).ping()
PY
}

ensure_redis() {
    local url="${AUTONOMIC_TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
    if redis_try "$url"; then
        export AUTONOMIC_TEST_REDIS_URL="$url"
        return
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "==> installing Redis from Debian packages" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "Redis is not installed and this user cannot apt-get install it;" \
                 "install redis-server or set AUTONOMIC_TEST_REDIS_URL" >&2
            exit 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    fi
    echo "==> starting Redis on 127.0.0.1:6379" >&2
    redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no >/dev/null
    for _ in $(seq 1 60); do
        redis_try "$url" && break
        sleep 0.5  # waiting for a server we just started; bounded to 30 s
    done
    if ! redis_try "$url"; then
        echo "cannot reach Redis at $url; set AUTONOMIC_TEST_REDIS_URL" >&2
        exit 1
    fi
    export AUTONOMIC_TEST_REDIS_URL="$url"
}
