#!/bin/sh
# tests/run-suites.sh - run every test binary given and print one total.
#
# Owns: running suites (each under its own timeout), showing their output and
# adding up cmocka's "[  PASSED  ] N test(s)." / "[  FAILED  ] N test(s)" lines.
# Must never: stop at the first failing suite (CI wants the whole picture), or
# print anything after the final "N passed, N failed" line, which CI reads.
#
# A binary that crashes, times out, cannot be run, or exits non-zero without
# a FAILED line counts as 1 failed: a suite that dies must never look green.
#
# Usage: sh tests/run-suites.sh [--build=DIR] BINARY... [--build=DIR BINARY...]...
# --build=DIR sets GOCD_BUILD (where the integration harness finds gocd) for
# the binaries after it, so one run can add up several configurations (the
# normal build, the sanitizer build, gocd under valgrind).  Without it the
# environment's GOCD_BUILD is used.
# Environment: GOCD_SUITE_TIMEOUT (seconds per binary, default 300).
set -u

limit=${GOCD_SUITE_TIMEOUT:-300}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gocd-suites.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT INT TERM

passed=0
failed=0
for bin in "$@"; do
	case "$bin" in
	--build=*)
		GOCD_BUILD=${bin#--build=}
		export GOCD_BUILD
		continue
		;;
	esac
	label=$bin
	[ -n "${GOCD_BUILD:-}" ] && label="$bin (gocd from ${GOCD_BUILD})"
	echo "=== $label"
	t0=$(date +%s)
	out="$tmp/out"
	rcf="$tmp/rc"
	: >"$out"
	echo 1 >"$rcf"
	# cmocka writes its summary to stdout only in its default format.
	# timeout -k: a suite that ignores SIGTERM still gets killed.
	{
		CMOCKA_MESSAGE_OUTPUT=stdout timeout -k 10 "$limit" "$bin" 2>&1
		echo $? >"$rcf"
	} | tee "$out"
	rc=$(cat "$rcf")

	p=$(awk '/^\[  PASSED  \] [0-9]+ test\(s\)\./ { n += $4 } END { print n + 0 }' "$out")
	f=$(awk '/^\[  FAILED  \] [0-9]+ test\(s\)/ { n += $4 } END { print n + 0 }' "$out")
	has_failed_line=$(grep -c '^\[  FAILED  \] [0-9][0-9]* test(s)' "$out")

	if [ "$rc" -ne 0 ] && [ "$has_failed_line" -eq 0 ]; then
		case "$rc" in
		124) why="timed out after ${limit}s" ;;
		126|127) why="could not be run" ;;
		*) if [ "$rc" -gt 128 ]; then why="killed by signal $((rc - 128))"; else why="exited $rc"; fi ;;
		esac
		echo "=== $label: $why without a FAILED line; counted as 1 failed"
		f=$((f + 1))
	fi
	# the time too: CI has 15 minutes for all of it
	echo "=== $label: $p passed, $f failed (exit $rc, $(($(date +%s) - t0)) s)"
	passed=$((passed + p))
	failed=$((failed + f))
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
