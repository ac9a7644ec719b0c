#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (/usr/bin/chromium). On a fresh
# machine it is missing: install it when we can (root with apt-get), so that
# `deno task test` alone works there.
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser tests..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && exit 0
fi
echo "Chromium is missing at /usr/bin/chromium; the browser tests will fail. Install it: apt-get install -y chromium" >&2
exit 0
