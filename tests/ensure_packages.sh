#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (/usr/bin/chromium), the NATS bus tests
# run Debian's nats-server (/usr/sbin/nats-server), the Redis bus tests its
# redis-server, and the
# many-machines test makes network namespaces with iproute2's `ip`. On a fresh
# machine they may be missing: install them when we can (root with apt-get),
# so that `deno task test` alone works there.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
# Only root runs the many-machines test.
[ "$(id -u)" != 0 ] || command -v ip >/dev/null 2>&1 || missing+=(iproute2)
[ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ ${#missing[@]} = 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's ${missing[*]} for the tests..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null && exit 0
fi
echo "Missing for the tests: ${missing[*]}; those tests will fail. Install: apt-get install -y ${missing[*]}" >&2
exit 0
