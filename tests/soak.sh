#!/bin/sh
# soak.sh - `make soak`: the long run, not part of CI.
#
# Owns: a private PostgreSQL, two gocd instances on it, and a loop of
# goc-bench runs (both instances at once, connection counts changing every
# round: client churn) while PostgreSQL is restarted every few rounds, half
# the time with -m immediate.  Prints one summary: requests answered,
# errors by code, verification failures (one row id per key, created:true
# at most once, rows counted in PostgreSQL), keys with two rows, and the
# RSS of each gocd at start and end.
# Must never: run unbounded (SOAK_MINUTES, default 30) or touch anything but
# its own cluster and processes.
set -eu
B=${GOCD_BUILD:-build}
MIN=${SOAK_MINUTES:-30}
ROUND=${SOAK_ROUND_SECONDS:-20}
DIR=$(mktemp -d /tmp/gocd-soak.XXXXXX)
chmod 755 "$DIR"
PGPORT=${SOAK_PG_PORT:-25432}
A=${SOAK_PORT_A:-27432}
Bp=${SOAK_PORT_B:-27433}
PIDS=""
cleanup() {
	set +e
	for p in $PIDS; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	sh tests/pg.sh stop "$DIR/pg"
	if [ "${SOAK_KEEP:-0}" = 1 ]; then
		echo "soak: kept $DIR (runs.jsonl, gocd logs)" >&2
	else
		rm -rf "$DIR"
	fi
}
trap cleanup EXIT INT TERM

PG=$(sh tests/pg.sh start "$DIR/pg" $PGPORT)
psql -X -q "$PG" -c "CREATE TABLE soak_kv (id bigserial PRIMARY KEY, k text NOT NULL UNIQUE, v text)"
psql -X -q "$PG" -c "ALTER ROLE postgres SET synchronous_commit = on" # acknowledged = durable

start_gocd() { # port logfile
	"$B/gocd" --listen=127.0.0.1:$1 --postgres="$PG" --table=soak_kv=k --admin-listen= \
		--request-timeout=3000 --log-level=warn >"$2" 2>&1 &
	echo $!
}
GA=$(start_gocd $A "$DIR/a.log")
GB=$(start_gocd $Bp "$DIR/b.log")
PIDS="$GA $GB"
sleep 1
rss() { awk '/VmRSS/ { print $2 }' /proc/"$1"/status; }
RSS_A0=$(rss "$GA"); RSS_B0=$(rss "$GB")

END=$(( $(date +%s) + MIN * 60 ))
round=0
: >"$DIR/runs.jsonl"
echo "soak: ${MIN} min, rounds of ${ROUND}s, gocd on $A and $Bp, PostgreSQL on $PGPORT" >&2
while [ "$(date +%s)" -lt "$END" ]; do
	round=$((round + 1))
	case $((round % 4)) in 0) c=8 ;; 1) c=32 ;; 2) c=64 ;; 3) c=128 ;; esac
	# separate key spaces: each run's exactly-once check needs to know
	# every writer of its keys (two-instance races are in test_e2e_core)
	bp=""
	for port in $A $Bp; do
		"$B/goc-bench" --addr=127.0.0.1:$port --table=soak_kv --connections=$c \
			--duration=$ROUND --keys=zipf:200000:0.9 --key-prefix=p$port- --defaults='{"v":"soak"}' \
			--verify-db="$PG" --drain-timeout=10 --json --quiet \
			>>"$DIR/runs.jsonl" 2>>"$DIR/bench.err" &
		bp="$bp $!"
	done
	# PostgreSQL restarts mid-round, every third round; immediate every other time
	if [ $((round % 3)) = 0 ]; then
		sleep $((ROUND / 2))
		mode=fast; [ $((round % 6)) = 0 ] && mode=immediate
		echo "soak: round $round: restarting PostgreSQL (-m $mode)" >&2
		if [ "$(id -u)" = 0 ]; then
			runuser -u postgres -- "$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")/pg_ctl" \
				-D "$DIR/pg/data" -m $mode -w stop >/dev/null
		else
			pg_ctl -D "$DIR/pg/data" -m $mode -w stop >/dev/null
		fi
		sleep 2
		sh tests/pg.sh start "$DIR/pg" $PGPORT >/dev/null
	fi
	for p in $bp; do wait "$p" || true; done # exit 1 = a violation, counted below
	kill -0 "$GA" && kill -0 "$GB" || { echo "soak: a gocd died" >&2; break; }
done

RSS_A1=$(rss "$GA"); RSS_B1=$(rss "$GB")
dups=$(psql -X -A -t "$PG" -c "SELECT count(*) FROM (SELECT k FROM soak_kv GROUP BY k HAVING count(*) > 1) d")
rows=$(psql -X -A -t "$PG" -c "SELECT count(*) FROM soak_kv")
awk -v rounds=$round -v dups="$dups" -v rows="$rows" \
    -v ra0="$RSS_A0" -v ra1="$RSS_A1" -v rb0="$RSS_B0" -v rb1="$RSS_B1" '
function num(key,   v) { if (match($0, "\"" key "\":[0-9.]+")) { v = substr($0, RSTART, RLENGTH); sub(/.*:/, "", v); return v + 0 } return 0 }
{
	runs++; req += num("requests"); ok += num("ok"); created += num("created")
	viol += num("violations"); dupk += num("duplicate_keys"); miss += num("missing")
	s = $0
	if (match(s, /"errors":\{[^}]*\}/)) {
		e = substr(s, RSTART + 10, RLENGTH - 11); n = split(e, parts, ",")
		for (i = 1; i <= n; i++) if (split(parts[i], kv, ":") == 2) { gsub(/"/, "", kv[1]); err[kv[1]] += kv[2] }
	}
}
END {
	printf "soak: %d rounds, %d goc-bench runs, %d requests, %d answered ok, %d created, %d rows\n", rounds, runs, req, ok, created, rows
	printf "soak: errors by code:"; for (k in err) printf " %s=%d", k, err[k]; printf "\n"
	printf "soak: verification: %d violations (row id / created:true), %d keys with two rows, %d acknowledged rows missing; table-wide keys with two rows: %d\n", viol, dupk, miss, dups
	printf "soak: gocd RSS A %d -> %d kB, B %d -> %d kB\n", ra0, ra1, rb0, rb1
}' "$DIR/runs.jsonl"
grep -h -c "error" "$DIR/a.log" "$DIR/b.log" | paste -sd' ' | sed 's/^/soak: error lines in the two gocd logs: /'
