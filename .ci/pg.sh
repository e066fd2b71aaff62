# Start a throwaway PostgreSQL server for the review store's tests, and export its URL.
#
#   source .ci/pg.sh        # installs Debian's postgresql when missing, starts a server on
#                           # 127.0.0.1:$HISTOGEN_PG_PORT (default 54329) with a temp data dir,
#                           # exports HISTOGEN_TEST_PG_URL; `pg_stop` stops it and removes the dir
#
# Sourced (not run) so the URL reaches the caller's environment. It never changes the caller's shell
# options; it returns non-zero (and leaves HISTOGEN_TEST_PG_URL unset, so those tests skip) when the
# server cannot be started. The server trusts local connections: it listens on 127.0.0.1 only and
# lives as long as the CI run.

_histogen_pg_start() {
    local port="${HISTOGEN_PG_PORT:-54329}" bin data
    if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
        echo "pg.sh: installing postgresql (Debian package)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
            >/tmp/histogen-pg-install.log 2>&1 || { echo "pg.sh: apt-get install postgresql failed" \
            "(see /tmp/histogen-pg-install.log)"; return 1; }
    fi
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    data="$(mktemp -d /tmp/histogen-pg.XXXXXX)" || return 1
    chown postgres:postgres "$data" && chmod 700 "$data" || return 1
    # initdb and the server refuse to run as root: the Debian package's `postgres` user runs them.
    su postgres -s /bin/sh -c "'$bin/initdb' -D '$data' -A trust -U postgres -E UTF8 --no-sync" \
        >"$data.initdb.log" 2>&1 || { echo "pg.sh: initdb failed (see $data.initdb.log)"; return 1; }
    su postgres -s /bin/sh -c "'$bin/pg_ctl' -D '$data' -l '$data/server.log' -w -t 60 \
        -o \"-k '$data' -c listen_addresses=127.0.0.1 -p $port -c fsync=off\" start" >/dev/null \
        || { echo "pg.sh: the server did not start (see $data/server.log)"; return 1; }
    su postgres -s /bin/sh -c "'$bin/createdb' -h 127.0.0.1 -p $port -U postgres histogen_test" \
        || { echo "pg.sh: createdb failed"; return 1; }
    export HISTOGEN_PG_DATA="$data" HISTOGEN_PG_BIN="$bin"
    export HISTOGEN_TEST_PG_URL="postgresql://postgres@127.0.0.1:$port/histogen_test"
    echo "pg.sh: PostgreSQL at $HISTOGEN_TEST_PG_URL (data $data)"
}

pg_stop() {
    [ -n "${HISTOGEN_PG_DATA:-}" ] || return 0
    su postgres -s /bin/sh -c "'$HISTOGEN_PG_BIN/pg_ctl' -D '$HISTOGEN_PG_DATA' -m fast -w stop" >/dev/null 2>&1
    rm -rf "$HISTOGEN_PG_DATA" "$HISTOGEN_PG_DATA.initdb.log"
    unset HISTOGEN_PG_DATA HISTOGEN_PG_BIN HISTOGEN_TEST_PG_URL
}

_histogen_pg_start
