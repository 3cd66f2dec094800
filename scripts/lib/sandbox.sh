# Make sure bubblewrap (the namespace sandbox backend) and the tools of its egress allow-lists
# (iproute2's `ip`, nftables' `nft`) are installed: from Debian's packages, as root, only when
# missing. Without root it says how to install them and lets the tests skip.

ensure_bubblewrap() {
    _ensure_debian_tool bwrap bubblewrap "the namespace sandbox"
    ensure_egress_tools
}

ensure_egress_tools() {
    _ensure_debian_tool ip iproute2 "sandbox egress allow-lists"
    _ensure_debian_tool nft nftables "sandbox egress allow-lists"
}

_ensure_debian_tool() {
    local tool=$1 package=$2 what=$3
    if command -v "$tool" >/dev/null 2>&1; then
        return
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "$package is missing and this user cannot apt-get install it;" \
             "the tests of $what will skip (apt-get install $package)" >&2
        return
    fi
    echo "==> installing $package from Debian packages ($what)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
    }
}
