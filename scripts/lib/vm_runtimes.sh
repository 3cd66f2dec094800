# Shared by scripts/test and benchmarks: the OCI runtimes and QEMU the oci/microvm sandbox backends
# (and their tests) need, from Debian packages; then the microVM image, built once per recipe.
# Idempotent: installs only what is missing, and the image build is a cache lookup when built.

ensure_vm_runtimes() {
    local missing=()
    command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
    command -v runsc >/dev/null 2>&1 || missing+=(runsc)
    command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
    command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.ext4 ] || missing+=(e2fsprogs)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> installing ${missing[*]} (apt-get)" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "need root to apt-get install ${missing[*]}; the oci/microvm tests will be skipped" >&2
            return 0
        fi
        apt-get update -qq >/dev/null || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

ensure_microvm_image() {
    echo "==> microVM image (cached under \${XDG_CACHE_HOME:-~/.cache}/autonomic/microvm)" >&2
    .venv/bin/python -m autonomic.adapters.sandbox.image >/dev/null
}
