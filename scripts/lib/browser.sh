# Make sure Debian's chromium is installed, for the console's browser tests (Playwright drives it
# by executable path: `playwright install` downloads a browser build, which this project never
# does). Exports AUTONOMIC_TEST_CHROMIUM with its path. Idempotent: a no-op when it is there.
# Without root it says how to install it and lets the browser tests skip.

ensure_chromium() {
    local path="${AUTONOMIC_TEST_CHROMIUM:-/usr/bin/chromium}"
    if [ ! -x "$path" ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "chromium is missing and this user cannot apt-get install it;" \
                 "the console's browser tests will skip (apt-get install chromium)" >&2
            return
        fi
        echo "==> installing chromium from Debian packages (the console's browser tests)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
            chromium >/dev/null 2>&1 || {
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
                chromium >/dev/null
        }
        path=/usr/bin/chromium
    fi
    export AUTONOMIC_TEST_CHROMIUM="$path"
}
