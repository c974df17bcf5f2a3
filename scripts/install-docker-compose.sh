#!/usr/bin/env bash
# `make tools` (and CI, in .ci/run): the compose test validates compose.yaml with Debian's
# docker-compose; install it where missing.
set -euo pipefail
command -v docker-compose >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "docker-compose is missing and cannot be installed here; the compose test will fail" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
