#!/usr/bin/env bash
# ci/features.sh - check that what the tests rely on works, not only that
# its package is installed: a tool's optional part (swaks' TLS needs
# Net::SSLeay, which swaks only recommends) would otherwise show up as a
# wrong verdict deep in a test.  Stops at the first missing feature with a
# one-line message naming the package (exit 2).  ci/setup.sh runs it after
# installing ci/packages.txt.
set -uo pipefail

# need PACKAGE WHAT COMMAND... - COMMAND must succeed (output discarded).
need() {
    local pkg=$1 what=$2
    shift 2
    if ! "$@" >/dev/null 2>&1; then
        echo "ci/features.sh: $what is missing: install the Debian package $pkg (ci/packages.txt)" >&2
        exit 2
    fi
}
# need_out PACKAGE WHAT REGEX COMMAND... - COMMAND's output must match REGEX.
need_out() {
    local pkg=$1 what=$2 re=$3
    shift 3
    if ! "$@" 2>&1 | grep -Eq "$re"; then
        echo "ci/features.sh: $what is missing: install the Debian package $pkg (ci/packages.txt)" >&2
        exit 2
    fi
}
py_module() { python3 -c "import $1"; }
# c_links CC FLAGS... - a trivial program builds and links with FLAGS.
c_links() {
    local cc=$1
    shift
    local d
    d=$(mktemp -d)
    printf 'int main(void){return 0;}\n' >"$d/t.c"
    "$cc" "$@" -o "$d/t" "$d/t.c"
    local rc=$?
    rm -rf "$d"
    return $rc
}
fuzz_links() {
    local d rc
    d=$(mktemp -d)
    printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n){(void)d;(void)n;return 0;}\n' >"$d/f.c"
    clang -fsanitize=fuzzer -o "$d/f" "$d/f.c"
    rc=$?
    rm -rf "$d"
    return $rc
}

# the build and its sanitizer passes
need meson "meson" meson --version
need ninja-build "ninja" ninja --version
need pkg-config "pkg-config" pkg-config --version
libs="libuv libpcap yaml-0.1 jansson libssl libcrypto libmicrohttpd"
[ "${1:-}" = "--build-only" ] || libs="$libs check"
for lib in $libs; do
    case $lib in
    libuv) pkg=libuv1-dev ;; libpcap) pkg=libpcap-dev ;; yaml-0.1) pkg=libyaml-dev ;;
    jansson) pkg=libjansson-dev ;; libssl | libcrypto) pkg=libssl-dev ;; check) pkg=check ;;
    libmicrohttpd) pkg=libmicrohttpd-dev ;;
    esac
    need "$pkg" "the $lib development files" pkg-config --exists "$lib"
done
need python3 "python3" python3 --version
# --build-only: what building and running faultgate needs, nothing more.
[ "${1:-}" = "--build-only" ] && exit 0
need gcc "gcc's AddressSanitizer and UndefinedBehaviorSanitizer" c_links gcc -fsanitize=address,undefined
need clang "clang" clang --version
need libclang-rt-14-dev "clang's ThreadSanitizer runtime" c_links clang -fsanitize=thread
need libclang-rt-14-dev "clang's libFuzzer" fuzz_links
need clang-format "clang-format" clang-format --version
# the test suites' peers and decoders
need python3-jsonschema "Python's jsonschema module" py_module jsonschema
need tshark "tshark" tshark --version
need libxml2-utils "xmllint" xmllint --version
need chromium "chromium" chromium --version
need postfix "Postfix" test -x /usr/sbin/postfix
need postfix "Postfix's smtp-source and smtp-sink" test -x /usr/sbin/smtp-source -a -x /usr/sbin/smtp-sink
need msmtp "msmtp" msmtp --version
need_out msmtp "msmtp's TLS" 'TLS/SSL library: (GnuTLS|OpenSSL)' msmtp --version
need swaks "swaks" swaks --version
need_out libnet-ssleay-perl "swaks' STARTTLS (Perl's Net::SSLeay)" '^=== TLS supported' swaks --support
need openssl "openssl" openssl version
need socat "socat" socat -V
need haproxy "haproxy" haproxy -v
need curl "curl (ci/toxiproxy_curl.sh, ci/bench's API rows)" curl --version
need time "/usr/bin/time" test -x /usr/bin/time
# the real MTAs under test (ci/real-mtas.sh unpacks them; these run them)
need util-linux "unshare (OpenSMTPD's private queue)" unshare --version
need mount "mount (OpenSMTPD's private queue)" mount --version
need apt "apt-get download (the real MTAs are unpacked, not installed)" apt-get --version
need "nodejs npm" "npm (Haraka comes from the npm registry)" npm --version
exit 0
