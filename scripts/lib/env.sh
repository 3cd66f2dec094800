# Shared by scripts/demo and scripts/test: make sure uv and the project's virtualenv exist.
# Only PyPI is needed; Python itself must be 3.11+ on PATH as python3.

UV_VERSION="0.13.9"
export UV_PYTHON_DOWNLOADS=never
export UV_PYTHON="${UV_PYTHON:-python3}"

ensure_uv() {
    if command -v uv >/dev/null 2>&1; then
        UV=$(command -v uv)
        return
    fi
    if [ ! -x .tools/bin/uv ]; then
        echo "==> installing uv ${UV_VERSION} into .tools/ (from PyPI)" >&2
        python3 -m venv .tools
        .tools/bin/pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}"
    fi
    UV="$PWD/.tools/bin/uv"
}

ensure_python() {
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "autonomic needs Python 3.11 or newer as python3 (found: $(python3 --version 2>&1))" >&2
        exit 1
    fi
}

# ensure_venv [uv sync flags...]: create .venv from uv.lock exactly (--frozen: the lock is the truth).
ensure_venv() {
    ensure_python
    ensure_uv
    echo "==> syncing .venv from uv.lock" >&2
    "$UV" sync --frozen --quiet "$@"
}
