#!/bin/sh
# haraka-gateway.sh - run a private Haraka (from the npm registry, installed
# by ci/real-mtas.sh into its cache, never system-wide) as the gateway under
# test: the configuration faultgate made from the templates beside this
# script in WORKDIR/haraka/config, this directory's faultgate_route plugin,
# the outbound queue in WORKDIR/haraka/queue; in the foreground, so that
# faultgate owns its process group.
#
# usage: haraka-gateway.sh WORKDIR
#        haraka-gateway.sh --version
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$("$here/../../../ci/real-mtas.sh" haraka | sed -n 's/^haraka //p')
haraka=$dir/node_modules/Haraka/bin/haraka
[ -f "$haraka" ] || { echo "haraka-gateway.sh: $haraka not found" >&2; exit 2; }
if [ "${1:-}" = --version ]; then
    node -e 'console.log("Haraka " + require(process.argv[1]).version)' "$dir/node_modules/Haraka/package.json"
    exit 0
fi
[ $# -eq 1 ] || { echo "usage: $0 WORKDIR" >&2; exit 2; }
inst=$1/haraka
mkdir -p "$inst/config" "$inst/plugins" "$inst/queue"
# Haraka's shipped defaults (connection.ini, ...) under the files made from
# the templates, which win.
cp -R -n "$dir/node_modules/Haraka/config/." "$inst/config/"
cp "$here/faultgate_route.js" "$inst/plugins/faultgate_route.js"
cd "$inst"
exec node "$haraka" -c "$inst"
