#!/bin/sh
# postfix-gateway.sh - run a private Postfix instance as the gateway under
# test: its own configuration directory and queue under WORKDIR, listening
# on 127.0.0.1:PORT, relaying everything to UPSTREAM (the faultgate proxy),
# with the short timeouts and retry schedule given as NAME=VALUE arguments
# (Postfix parameter names). It runs in the foreground (`postfix start-fg`)
# so that faultgate owns the process group; logs go to stdout.
#
# usage: postfix-gateway.sh WORKDIR PORT UPSTREAM_HOST UPSTREAM_PORT [param=value...]
set -eu
if [ $# -lt 4 ]; then
    echo "usage: $0 WORKDIR PORT UPSTREAM_HOST UPSTREAM_PORT [param=value...]" >&2
    exit 2
fi
workdir=$1 port=$2 uphost=$3 upport=$4
shift 4
for bin in /usr/sbin/postfix /usr/sbin/postconf; do
    [ -x "$bin" ] || { echo "postfix-gateway.sh: $bin not found (install Debian's postfix)" >&2; exit 2; }
done
id postfix >/dev/null 2>&1 || { echo "postfix-gateway.sh: no postfix user (install Debian's postfix)" >&2; exit 2; }

# Postfix's daemons run as the postfix user and must reach their queue:
# the work directory may sit below a private (0700) directory, so the
# instance lives in a directory of its own, removed when Postfix stops.
base=$(mktemp -d /var/tmp/faultgate-postfix.XXXXXX)
chmod 755 "$base"
ln -sfn "$base" "$workdir/postfix"
conf=$base/etc
queue=$base/spool
data=$base/data
mkdir -p "$conf" "$queue" "$data"
chown postfix "$data"
# Postfix insists that its configuration belongs to root.
chown root "$conf"

cat >"$conf/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $queue
data_directory = $data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = gateway.faultgate.test
mydomain = faultgate.test
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [$uphost]:$upport
smtpd_relay_restrictions = permit_mynetworks, reject
# Hermetic: no DNS, no local delivery, no aliases, logs to stdout.
smtp_dns_support_level = disabled
smtp_host_lookup = native
disable_dns_lookups = yes
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = /dev/stdout
smtputf8_enable = no
smtpd_banner = \$myhostname ESMTP
CF
# STARTTLS offered inbound (RFC 3207), so that the STARTTLS scenarios reach
# Postfix's own TLS code (scenarios/security/sec-starttls-command-injection):
# a self-signed certificate made for this instance. Outbound TLS stays off.
if command -v openssl >/dev/null 2>&1 &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj "/CN=gateway.faultgate.test" -keyout "$conf/tls-key.pem" \
        -out "$conf/tls-cert.pem" >/dev/null 2>&1; then
    chmod 600 "$conf/tls-key.pem"
    cat >>"$conf/main.cf" <<CF
smtpd_tls_security_level = may
smtpd_tls_chain_files = $conf/tls-key.pem, $conf/tls-cert.pem
CF
else
    echo "postfix-gateway.sh: openssl not found or failed: STARTTLS not offered" >&2
fi
# The profile's settings (timeouts, retry) come last and win.
for kv in "$@"; do
    echo "$kv" | sed 's/=/ = /' >>"$conf/main.cf"
done

cat >"$conf/master.cf" <<CF
127.0.0.1:$port inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
local     unix - n n - - local
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
tlsmgr    unix - - n 1000? 1 tlsmgr
CF

/usr/sbin/postfix -c "$conf" set-permissions >/dev/null 2>&1 || true
/usr/sbin/postfix -c "$conf" check
# Not exec: the shell stays to stop Postfix (its master leaves the process
# group) and remove the instance.
set +e
/usr/sbin/postfix -c "$conf" start-fg &
pid=$!
trap ':' TERM INT
wait $pid
/usr/sbin/postfix -c "$conf" abort >/dev/null 2>&1
kill -TERM $pid 2>/dev/null
wait $pid 2>/dev/null
rm -rf "$base"
