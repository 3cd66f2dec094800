# Debian's Prometheus (prometheus, promtool) for the metrics tests: the tests start their own
# server on 127.0.0.1 with a generated configuration (tests/observability/prom.py), so this only
# makes sure the binaries are there and exports AUTONOMIC_TEST_PROMETHEUS / _PROMTOOL.

ensure_prometheus() {
    if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
        echo "==> installing Prometheus from Debian packages" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "Prometheus is not installed and this user cannot apt-get install it;" \
                 "install the prometheus package" >&2
            exit 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
            --no-install-recommends prometheus >/dev/null
    fi
    export AUTONOMIC_TEST_PROMETHEUS="$(command -v prometheus)"
    export AUTONOMIC_TEST_PROMTOOL="$(command -v promtool)"
}
