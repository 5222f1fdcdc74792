#!/usr/bin/env bash
# ci/isode.sh - ISODE 8, a real OSI stack (RFC 1006, ISO 8327 session, RTS in
# X.410-1984 and 1988 modes), as the foreign X.400 system of the e2e tests.
# It is built once from its source outside the checkout into a cache
# directory and reused; none of it is part of faultgate.
#
#   ci/isode.sh                      build if needed; print the install prefix
#   ci/isode.sh add-entity NAME PORT    isoc's NAME -> 127.0.0.1:PORT
#   ci/isode.sh remove-entity NAME
#
# FG_ISODE_SRC: the directory with build.sh and the tarball (default
# ../shared/peers/isode beside the checkout); FG_ISODE_PREFIX: where it is
# installed (default ${XDG_CACHE_HOME:-~/.cache}/faultgate/isode).  Exit 77
# (a skip under meson) when the source is not there.  bison and flex come
# from ci/packages.txt.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src=${FG_ISODE_SRC:-$here/../shared/peers/isode}
prefix=${FG_ISODE_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/faultgate/isode}
mkdir -p "$(dirname "$prefix")"
lock="$prefix.lock"

case "${1:-}" in
add-entity)
    # isoentities is one file in the shared install: edits take the lock
    # and each test uses a name of its own (the OID only has to be unique).
    name=$2 port=$3
    oid="1.17.4.99.$port.$$"
    (flock 9
     printf '%s default %s Internet=127.0.0.1+%s\n' "$name" "$oid" "$port" \
         >>"$prefix/etc/isode/isoentities") 9>"$lock"
    exit 0 ;;
remove-entity)
    name=$2
    (flock 9; sed -i "/^$name /d" "$prefix/etc/isode/isoentities") 9>"$lock"
    exit 0 ;;
"") ;;
*) echo "usage: ci/isode.sh [add-entity NAME PORT | remove-entity NAME]" >&2; exit 2 ;;
esac

if [ ! -x "$prefix/bin/isoc" ] || [ ! -x "$prefix/sbin/tsapd" ]; then
    [ -f "$src/build.sh" ] || { echo "ci/isode.sh: no ISODE source in $src" >&2; exit 77; }
    (flock 9; bash "$src/build.sh" "$prefix" >&2) 9>"$lock"
fi
echo "$prefix"
