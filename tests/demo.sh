#!/bin/sh
# demo.sh - `make demo`: a private PostgreSQL with a demo table, and gocd in
# the foreground on 127.0.0.1:7432 until Ctrl-C.
#
# Owns: the demo database's lifetime (removed on exit).
# Must never: touch a PostgreSQL the user already runs (it uses its own
# cluster on a port of its own).
set -eu
build=${1:-build}
port=${DEMO_PG_PORT:-55439}
listen=${DEMO_LISTEN:-127.0.0.1:7432}
dir=$(mktemp -d /tmp/gocd-demo.XXXXXX)
chmod 755 "$dir"

cleanup() {
	sh tests/pg.sh stop "$dir"
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

conninfo=$(sh tests/pg.sh start "$dir" "$port")
psql -q -X "$conninfo" <<'SQL'
CREATE TABLE users (
    id         bigserial PRIMARY KEY,
    email      text NOT NULL UNIQUE,
    name       text,
    created_at timestamptz NOT NULL DEFAULT now()
);
SQL

# goc's default address is the demo's default listen
goc_addr=
[ "$listen" = 127.0.0.1:7432 ] || goc_addr=" --addr=$listen"
cat <<TXT

gocd demo: PostgreSQL on port $port (data in $dir), table users(id, email UNIQUE, name, created_at).
In another terminal:

  echo '{"op":"get_or_create","table":"users","key":{"email":"ann@example.com"},"defaults":{"name":"Ann"}}' | nc -N ${listen%:*} ${listen##*:}
  $build/goc$goc_addr get-or-create users email=ann@example.com --defaults '{"name":"Ann"}'
  psql "$conninfo" -c 'TABLE users'

Ctrl-C stops gocd and removes the demo database.

TXT
# Not exec: the trap must still remove the cluster when gocd exits.
"$build/gocd" --listen="$listen" --postgres="$conninfo" --table=users=email || true
