#!/bin/sh
# tests/deps.sh - make sure the packages gocd's build and tests need are installed.
#
# Owns: the list of Debian 12 packages the build and the test suites depend on.
# Must never: touch anything but missing packages (no upgrades, no removals),
# or print anything when nothing is missing, so `make check` stays quiet.
set -eu

PKGS="build-essential pkg-config libevent-dev libpq-dev libjansson-dev libcmocka-dev postgresql-15 netcat-openbsd valgrind"

missing=""
for p in $PKGS; do
	# "ii " means installed; anything else (rc, un, not known) needs an install.
	st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
	case "$st" in
	ii*) ;;
	*) missing="$missing $p" ;;
	esac
done

[ -z "$missing" ] && exit 0

echo "tests/deps.sh: installing:$missing" >&2
if [ "$(id -u)" -eq 0 ]; then
	SUDO=""
else
	SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# One update, one install: only the missing packages, never an upgrade of others.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
# shellcheck disable=SC2086  # word splitting of the package list is intended
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-upgrade $missing
