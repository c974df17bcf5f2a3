#!/usr/bin/env bash
# The dashboard's browser test drives Debian's Chromium (Playwright uses it, never downloads its
# own); install it where missing, like install-docker-compose.sh does for docker-compose.
set -euo pipefail
for candidate in /usr/lib/chromium/chromium /usr/bin/chromium; do
  [ -x "$candidate" ] && exit 0
done
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "chromium is missing and cannot be installed here; the dashboard browser test will fail" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
