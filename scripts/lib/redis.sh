# Make sure a Redis server answers (the gateway's shared rate-limit and plan-cache tests) and
# export AUTONOMIC_TEST_REDIS_URL. Uses a running server if there is one; otherwise starts Debian's
# redis-server on 127.0.0.1:6379 (installing it first if it is missing).

redis_try() {
    .venv/bin/python -c 'import sys, redis; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=2).ping()' "$1" >/dev/null 2>&1
}

ensure_redis() {
    local url="${AUTONOMIC_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"
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
    url="redis://127.0.0.1:6379/0"
    for _ in $(seq 1 40); do
        redis_try "$url" && break
        sleep 0.25  # waiting for a server we just started; bounded to 10 s
    done
    if ! redis_try "$url"; then
        echo "cannot reach Redis on 127.0.0.1:6379; set AUTONOMIC_TEST_REDIS_URL" >&2
        exit 1
    fi
    export AUTONOMIC_TEST_REDIS_URL="$url"
}
