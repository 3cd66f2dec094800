# Make sure a PostgreSQL server answers on 127.0.0.1:5432 and export AUTONOMIC_TEST_PG_URL.
# Uses a running server if there is one; otherwise starts the Debian cluster, installing
# PostgreSQL from Debian's packages first if it is missing.

pg_try() { psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }

ensure_postgres() {
    local url="${AUTONOMIC_TEST_PG_URL:-postgresql://postgres@127.0.0.1:5432/test}"
    if command -v psql >/dev/null 2>&1 && pg_try "$url"; then
        export AUTONOMIC_TEST_PG_URL="$url"
        return
    fi
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "==> installing PostgreSQL from Debian packages" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "PostgreSQL is not installed and this user cannot apt-get install it;" \
                 "install postgresql or set AUTONOMIC_TEST_PG_URL" >&2
            exit 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    if [ -z "$version" ]; then
        pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -n 1)" main >/dev/null
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
    fi
    echo "==> starting PostgreSQL ${version} on 127.0.0.1:5432" >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
    for _ in $(seq 1 60); do
        pg_isready -q -h 127.0.0.1 -p 5432 && break
        sleep 0.5  # waiting for a server we just started; bounded to 30 s
    done
    # A fresh Debian cluster allows only peer auth for postgres: make a password role and a db.
    url="postgresql://autonomic:autonomic@127.0.0.1:5432/autonomic_test"
    if ! pg_try "$url"; then
        su postgres -c "psql -qc \"DO \\\$\\\$BEGIN CREATE ROLE autonomic LOGIN SUPERUSER PASSWORD 'autonomic'; EXCEPTION WHEN duplicate_object THEN NULL; END\\\$\\\$\"" >/dev/null
        su postgres -c "createdb -O autonomic autonomic_test" 2>/dev/null || true
    fi
    if ! pg_try "$url"; then
        echo "cannot reach PostgreSQL on 127.0.0.1:5432; set AUTONOMIC_TEST_PG_URL" >&2
        exit 1
    fi
    export AUTONOMIC_TEST_PG_URL="$url"
}
