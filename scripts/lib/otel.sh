# A real OTLP/HTTP trace backend for the tests: Arize Phoenix (PyPI), in a virtualenv of its own
# (its dependencies never mix with the project's), listening on 127.0.0.1 only.
#
# Why Phoenix: the OpenTelemetry Collector and Jaeger ship as Go binaries that neither Debian nor
# PyPI carries; Phoenix is a trace server on PyPI that receives OTLP/HTTP (protobuf) on
# /v1/traces, stores spans, and answers a REST query (/v1/projects/NAME/spans) the tests read
# the tree back from. ensure_otlp_receiver exports AUTONOMIC_TEST_OTLP_URL (the base URL for
# OTEL_EXPORTER_OTLP_ENDPOINT). Idempotent: an already answering server is reused.

PHOENIX_VERSION="20.26.1"
PHOENIX_HOME="${XDG_CACHE_HOME:-$HOME/.cache}/autonomic/phoenix-${PHOENIX_VERSION}"
PHOENIX_PORT="${AUTONOMIC_TEST_PHOENIX_PORT:-16006}"

otlp_receiver_try() {
    curl -fsS -m 2 "$1/healthz" >/dev/null 2>&1
}

ensure_phoenix() {
    if [ -x "$PHOENIX_HOME/bin/phoenix" ]; then
        return
    fi
    ensure_uv
    echo "==> installing Arize Phoenix ${PHOENIX_VERSION} into $PHOENIX_HOME (the test trace server)" >&2
    "$UV" venv --quiet --python "${UV_PYTHON}" "$PHOENIX_HOME"
    "$UV" pip install --quiet --python "$PHOENIX_HOME/bin/python" "arize-phoenix==${PHOENIX_VERSION}"
}

ensure_otlp_receiver() {
    local url="${AUTONOMIC_TEST_OTLP_URL:-http://127.0.0.1:${PHOENIX_PORT}}"
    if otlp_receiver_try "$url"; then
        export AUTONOMIC_TEST_OTLP_URL="$url"
        return
    fi
    ensure_phoenix
    local work="${PHOENIX_HOME}/work"
    mkdir -p "$work"
    echo "==> starting Phoenix (OTLP/HTTP receiver) on 127.0.0.1:${PHOENIX_PORT}" >&2
    (
        cd "$work" &&
        PHOENIX_WORKING_DIR="$work" PHOENIX_HOST=127.0.0.1 PHOENIX_PORT="$PHOENIX_PORT" \
        PHOENIX_GRPC_PORT="$((PHOENIX_PORT + 1))" PHOENIX_TELEMETRY_ENABLED=false \
        nohup "$PHOENIX_HOME/bin/phoenix" serve >"$work/phoenix.log" 2>&1 &
    )
    for _ in $(seq 1 240); do
        otlp_receiver_try "$url" && break
        sleep 0.5  # waiting for a server we just started (its first start compiles); bounded: 120 s
    done
    if ! otlp_receiver_try "$url"; then
        echo "Phoenix did not answer at $url (log: $work/phoenix.log); set AUTONOMIC_TEST_OTLP_URL" >&2
        exit 1
    fi
    export AUTONOMIC_TEST_OTLP_URL="$url"
}
