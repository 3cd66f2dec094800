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
# --compile-bytecode: byte-code is written once here (about a minute of CPU on a new venv, seconds
# afterwards) instead of on each start where Python may not write it (PYTHONDONTWRITEBYTECODE, a
# read-only venv): without it every `autonomic` command recompiles what it imports (0.7 s for --help).
ensure_venv() {
    ensure_python
    ensure_uv
    echo "==> syncing .venv from uv.lock" >&2
    "$UV" sync --frozen --quiet --compile-bytecode "$@"
}

# ensure_tiktoken_cache: tiktoken's encoding files (cl100k_base, o200k_base, p50k_base) for exact,
# offline token counts. The litellm wheel on PyPI ships them under the names tiktoken's cache uses
# (the SHA-1 of their download URL; tiktoken verifies their SHA-256 when loading), so we fetch that
# one wheel without dependencies and copy the three files out. Skipped when they are already there.
LITELLM_VERSION="1.109.1"
TIKTOKEN_FILES="9b5ad71b2ce5302211f9c61530b329a4922fc6a4 fb374d419588a4632f3f557e76b4b70aebbca790 ec7223a39ce59f226a68acc30dc1af2788490e15"
ensure_tiktoken_cache() {
    export TIKTOKEN_CACHE_DIR="${TIKTOKEN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/autonomic/tiktoken}"
    local missing=0 f
    for f in $TIKTOKEN_FILES; do [ -s "$TIKTOKEN_CACHE_DIR/$f" ] || missing=1; done
    [ "$missing" = 1 ] || return 0
    ensure_uv
    echo "==> extracting tiktoken encodings from litellm ${LITELLM_VERSION} into $TIKTOKEN_CACHE_DIR" >&2
    local tmp
    tmp=$(mktemp -d)
    "$UV" pip install --quiet --no-deps --target "$tmp" --python "${UV_PYTHON}" "litellm==${LITELLM_VERSION}"
    mkdir -p "$TIKTOKEN_CACHE_DIR"
    for f in $TIKTOKEN_FILES; do
        cp "$tmp/litellm/litellm_core_utils/tokenizers/$f" "$TIKTOKEN_CACHE_DIR/$f"
    done
    rm -rf "$tmp"
}
