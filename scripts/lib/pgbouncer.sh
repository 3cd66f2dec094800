# Make sure a pgBouncer in transaction pooling mode answers in front of the test PostgreSQL, and
# export AUTONOMIC_TEST_PGBOUNCER_URL (no user in it: each test connects as a role of its own).
# Uses the one this checkout started if it still answers; otherwise installs Debian's pgbouncer if
# it is missing and starts one on 127.0.0.1 (a free port), its config, auth file, log and pid
# under .tools/pgbouncer/. It points at the server and database of AUTONOMIC_TEST_PG_URL (call
# ensure_postgres first), which must let the test roles in without a password (trust on
# 127.0.0.1): clients authenticate to pgBouncer by trust, and pgBouncer looks up roles it has
# not seen with auth_query, as the URL's user.

pgbouncer_try() {
    .venv/bin/python - "$1" <<'PY' >/dev/null 2>&1
import sys, psycopg
with psycopg.connect(sys.argv[1], connect_timeout=3, prepare_threshold=None) as conn:
    conn.execute("SELECT 1")
PY
}

ensure_pgbouncer() {
    local dir="$PWD/.tools/pgbouncer"
    if [ -n "${AUTONOMIC_TEST_PGBOUNCER_URL:-}" ]; then
        return
    fi
    if [ -f "$dir/url" ] && [ -f "$dir/pgbouncer.pid" ] && kill -0 "$(cat "$dir/pgbouncer.pid")" 2>/dev/null; then
        if pgbouncer_try "$(cat "$dir/check_url")"; then
            export AUTONOMIC_TEST_PGBOUNCER_URL="$(cat "$dir/url")"
            return
        fi
    fi
    if ! command -v pgbouncer >/dev/null 2>&1; then
        echo "==> installing pgbouncer from Debian packages" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "pgbouncer is not installed and this user cannot apt-get install it;" \
                 "install pgbouncer or set AUTONOMIC_TEST_PGBOUNCER_URL" >&2
            exit 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
    fi
    mkdir -p "$dir"
    # Where the server is, and a free port to listen on.
    local target
    target=$(.venv/bin/python - "${AUTONOMIC_TEST_PG_URL:?call ensure_postgres first}" <<'PY'
import socket, sys
from psycopg.conninfo import conninfo_to_dict
p = conninfo_to_dict(sys.argv[1])
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
print(p.get("host") or "127.0.0.1", p.get("port") or 5432, p.get("dbname") or "test",
      p.get("user") or "postgres", p.get("password") or "", port, sep="|")
PY
) || { echo "cannot read AUTONOMIC_TEST_PG_URL; call ensure_postgres first" >&2; exit 1; }
    local host port db user password listen
    IFS='|' read -r host port db user password listen <<<"$target"
    printf '"%s" "%s"\n' "$user" "$password" >"$dir/userlist.txt"
    cat >"$dir/pgbouncer.ini" <<EOF
; Written by scripts/lib/pgbouncer.sh: the tests' pgBouncer, in transaction pooling mode.
[databases]
$db = host=$host port=$port dbname=$db auth_user=$user

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $listen
unix_socket_dir =
pool_mode = transaction
auth_type = trust
auth_file = $dir/userlist.txt
auth_query = SELECT usename, passwd FROM pg_shadow WHERE usename = \$1
max_client_conn = 1000
default_pool_size = 10
server_idle_timeout = 20
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
    echo "==> starting pgbouncer (transaction pooling) on 127.0.0.1:$listen -> $host:$port/$db" >&2
    if [ -f "$dir/pgbouncer.pid" ]; then  # ours, no longer answering
        kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
        rm -f "$dir/pgbouncer.pid"
    fi
    if [ "$(id -u)" -eq 0 ]; then  # pgbouncer refuses to run as root
        local runas=postgres
        id -u postgres >/dev/null 2>&1 || runas=nobody
        chown -R "$runas" "$dir"
        pgbouncer -d -u "$runas" "$dir/pgbouncer.ini" || exit 1
    else
        pgbouncer -d "$dir/pgbouncer.ini" || exit 1
    fi
    local url="postgresql://127.0.0.1:$listen/$db"
    for _ in $(seq 1 60); do
        pgbouncer_try "postgresql://$user@127.0.0.1:$listen/$db" && break
        sleep 0.5  # waiting for a pooler we just started; bounded to 30 s
    done
    if ! pgbouncer_try "postgresql://$user@127.0.0.1:$listen/$db"; then
        echo "cannot reach pgbouncer on 127.0.0.1:$listen (log: $dir/pgbouncer.log);" \
             "set AUTONOMIC_TEST_PGBOUNCER_URL" >&2
        exit 1
    fi
    echo "$url" >"$dir/url"
    echo "postgresql://$user@127.0.0.1:$listen/$db" >"$dir/check_url"
    export AUTONOMIC_TEST_PGBOUNCER_URL="$url"
}
