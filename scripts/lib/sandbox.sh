# Make sure bubblewrap (the namespace sandbox backend) is installed: from Debian's packages, as
# root, only when missing. Without root it says how to install it and lets the tests skip.

ensure_bubblewrap() {
    if command -v bwrap >/dev/null 2>&1; then
        return
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "bubblewrap is missing and this user cannot apt-get install it;" \
             "the namespace sandbox tests will skip (apt-get install bubblewrap)" >&2
        return
    fi
    echo "==> installing bubblewrap from Debian packages (namespace sandbox)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
    }
}
