#!/usr/bin/env bash
# ci/deb.sh - build the Debian package from a clean copy of the committed
# tree, check it with lintian (no E: line), and, with --scratch, install it
# with apt-get into a minimal Debian root (debootstrap) that has nothing but
# the package's declared dependencies, and run the KB suite from there.
# The .deb and the lintian report land in build-deb/.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
out=$top/build-deb
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
cleanup() {
    if [ -n "${root:-}" ]; then
        for m in dev/pts dev sys proc; do umount "$root/$m" 2>/dev/null || true; done
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# A clean copy: what is committed (plus the working tree's edits to tracked
# files, so that a local run builds what is being tested).
mkdir "$work/faultgate"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$work/faultgate"
(cd "$work/faultgate" && dpkg-buildpackage -b -us -uc) >"$out/build.log" 2>&1 || {
    tail -40 "$out/build.log" >&2
    echo "ci/deb.sh: dpkg-buildpackage failed (log: $out/build.log)" >&2
    exit 1
}
cp "$work"/faultgate_*.deb "$out/"
deb=$(ls "$out"/faultgate_*.deb | grep -v dbgsym | head -1)
echo "ci/deb.sh: built $(basename "$deb")"

lintian --tag-display-limit 0 "$deb" >"$out/lintian.txt" 2>&1 || true
cat "$out/lintian.txt"
if grep -q '^E:' "$out/lintian.txt"; then
    echo "ci/deb.sh: lintian reports errors" >&2
    exit 1
fi
echo "ci/deb.sh: lintian: no error"

[ "${1:-}" = "--scratch" ] || exit 0

# A minimal Debian (the host's release) with only the package's declared
# dependencies, which apt-get resolves from the package itself.
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$work/root
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$out/debootstrap.log" 2>&1 || {
    tail -20 "$out/debootstrap.log" >&2
    echo "ci/deb.sh: debootstrap $suite failed (log: $out/debootstrap.log)" >&2
    exit 1
}
cp /etc/resolv.conf "$root/etc/resolv.conf"
for m in proc sys dev dev/pts; do mount --bind "/$m" "$root/$m"; done
cp "$deb" "$root/tmp/"
chroot "$root" /bin/sh -c "apt-get update -q >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /tmp/$(basename "$deb")" \
    >"$out/install.log" 2>&1 || {
    tail -20 "$out/install.log" >&2
    echo "ci/deb.sh: apt-get install of the package failed in the scratch root" >&2
    exit 1
}
# The KB suite, run as a new user would: outside any checkout, no -g.
chroot "$root" /bin/sh -c "mkdir -p /srv/kb && cd /srv/kb && faultgate run -o out kb"
echo "ci/deb.sh: the KB suite passes from the installed package"
