#!/bin/sh
# real-mtas.sh - unpack Debian's MTAs (Exim, OpenSMTPD, nullmailer) for the
# real-MTA gateway profiles (scenarios/gateways/exim.yaml, opensmtpd.yaml,
# nullmailer.yaml), and Haraka from the npm registry (haraka.yaml), without
# installing them: each provides
# mail-transport-agent and conflicts with Postfix, so `apt-get install`
# would remove it.  `apt-get download` + `dpkg -x` into a cache directory
# outside the checkout, plus the system users their privilege separation
# needs.  Idempotent: an MTA already unpacked is left as it is.
#
# usage: real-mtas.sh [exim|opensmtpd|nullmailer|haraka ...]   (default: all)
# Prints one line per MTA: NAME DIRECTORY.  Exit 0, or 2 with a reason on
# stderr when it cannot run (not Debian, no apt-get, no network, not root).
#
# The cache: $FAULTGATE_MTA_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/faultgate/mtas.
set -eu

cache=${FAULTGATE_MTA_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/faultgate/mtas}

die() {
    echo "real-mtas.sh: $*" >&2
    exit 2
}

# Haraka: one pinned version from the npm registry, into the cache.
HARAKA_VERSION=3.3.4
unpack_haraka() {
    dest=$cache/haraka
    if [ ! -f "$dest/.unpacked" ] || [ "$(cat "$dest/.unpacked")" != "$HARAKA_VERSION" ]; then
        command -v npm >/dev/null 2>&1 || die "no npm (Haraka comes from the npm registry)"
        command -v node >/dev/null 2>&1 || die "no node"
        mkdir -p "$cache"
        tmp=$(mktemp -d "$cache/.npm.XXXXXX")
        npm install --prefix "$tmp" --no-audit --no-fund --omit=optional \
            "Haraka@$HARAKA_VERSION" >&2 || { rm -rf "$tmp"; die "npm install Haraka@$HARAKA_VERSION failed"; }
        echo "$HARAKA_VERSION" >"$tmp/.unpacked"
        rm -rf "$dest"
        mv "$tmp" "$dest"
    fi
    echo "haraka $dest"
}

# The binary packages each MTA needs beyond what ci/packages.txt installs.
pkgs_of() {
    case $1 in
    exim) echo exim4-daemon-light ;;
    opensmtpd) echo opensmtpd ;;
    nullmailer) echo nullmailer ;;
    *) die "unknown MTA '$1' (exim, opensmtpd, nullmailer, haraka)" ;;
    esac
}

# System users and groups as the packages' maintainer scripts make them
# (their daemons drop privileges to these); made only when missing.
users_of() {
    case $1 in
    exim)
        ensure_user Debian-exim /var/spool/exim4
        ;;
    opensmtpd)
        ensure_user opensmtpd /var/lib/opensmtpd/empty
        ensure_user opensmtpq /var/lib/opensmtpd/empty
        mkdir -p /var/lib/opensmtpd/empty
        # As the postinst's dpkg-statoverride: smtpctl is set-group-ID
        # opensmtpq (it refuses to run otherwise).
        if [ "$(stat -c %G:%a "$cache/opensmtpd/usr/sbin/smtpctl")" != opensmtpq:2555 ]; then
            chgrp opensmtpq "$cache/opensmtpd/usr/sbin/smtpctl"
            chmod 2555 "$cache/opensmtpd/usr/sbin/smtpctl"
        fi
        ;;
    nullmailer)
        # nullmailer-send runs as the caller; its queue belongs to mail.
        id mail >/dev/null 2>&1 || ensure_user mail /var/mail
        ;;
    esac
}

ensure_user() {
    id "$1" >/dev/null 2>&1 && return 0
    [ "$(id -u)" = 0 ] || die "user $1 missing and not root to make it"
    getent group "$1" >/dev/null 2>&1 || groupadd --system "$1"
    useradd --system --gid "$1" --home-dir "$2" --no-create-home --shell /usr/sbin/nologin "$1"
}

unpack() {
    mta=$1
    if [ "$mta" = haraka ]; then
        unpack_haraka
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "no apt-get (Debian's packages are unpacked from apt)"
    command -v dpkg >/dev/null 2>&1 || die "no dpkg"
    dest=$cache/$mta
    pkgs=$(pkgs_of "$mta")
    if [ ! -f "$dest/.unpacked" ]; then
        mkdir -p "$cache"
        tmp=$(mktemp -d "$cache/.dl.XXXXXX")
        # _apt cannot write into a private directory: download as the caller.
        (cd "$tmp" && apt-get -q -o APT::Sandbox::User=root download $pkgs) >&2 ||
            { rm -rf "$tmp"; die "apt-get download $pkgs failed (no network or no apt lists?)"; }
        mkdir -p "$tmp/root"
        for deb in "$tmp"/*.deb; do
            dpkg -x "$deb" "$tmp/root"
            dpkg-deb -f "$deb" Package Version | tr '\n' ' ' >>"$tmp/root/.versions"
            echo >>"$tmp/root/.versions"
        done
        touch "$tmp/root/.unpacked"
        rm -rf "$dest"
        mv "$tmp/root" "$dest"
        rm -rf "$tmp"
    fi
    users_of "$mta"
    echo "$mta $dest"
}

[ $# -gt 0 ] || set -- exim opensmtpd nullmailer haraka
for m in "$@"; do
    unpack "$m"
done
