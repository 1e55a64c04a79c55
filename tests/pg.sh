#!/bin/sh
# pg.sh - a private, throw-away PostgreSQL cluster for the demo, the bench and CI.
#
# Owns: initdb/start/stop of a cluster in a directory of the caller's choice.
# Must never: touch a system cluster, or run the server as root (PostgreSQL
# refuses to; as root we run it as the 'postgres' user).
#
#   sh tests/pg.sh start DIR PORT   # prints the conninfo on stdout
#   sh tests/pg.sh stop DIR
set -eu

bindir=${PG_BINDIR:-}
if [ -z "$bindir" ]; then
	for d in /usr/lib/postgresql/*/bin; do
		[ -x "$d/initdb" ] && bindir=$d
	done
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
	echo "pg.sh: no PostgreSQL server binaries found (install postgresql-15 or set PG_BINDIR)" >&2
	exit 1
fi

as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

cmd=${1:-}
dir=${2:-}
[ -n "$dir" ] || { echo "usage: pg.sh start DIR PORT | stop DIR" >&2; exit 2; }

case "$cmd" in
start)
	port=${3:?port}
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && chown postgres "$dir"
	if [ ! -f "$dir/data/PG_VERSION" ]; then
		as_pg "$bindir/initdb" -D "$dir/data" -A trust --nosync -U postgres >"$dir/initdb.log" 2>&1 ||
			{ cat "$dir/initdb.log" >&2; exit 1; }
	fi
	if ! as_pg "$bindir/pg_ctl" -D "$dir/data" -w -t 30 -l "$dir/server.log" \
		-o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" \
		start >/dev/null; then
		echo "pg.sh: PostgreSQL failed to start; its log:" >&2
		cat "$dir/server.log" >&2
		exit 1
	fi
	echo "host=127.0.0.1 port=$port user=postgres dbname=postgres"
	;;
stop)
	if [ -f "$dir/data/postmaster.pid" ]; then
		as_pg "$bindir/pg_ctl" -D "$dir/data" -w -m fast stop >/dev/null 2>&1 || true
	fi
	;;
*)
	echo "usage: pg.sh start DIR PORT | stop DIR" >&2
	exit 2
	;;
esac
