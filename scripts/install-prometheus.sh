#!/usr/bin/env bash
# `make tools` (and CI, in .ci/run), or the Prometheus tests themselves: Debian's `prometheus`
# package ships the server and promtool, which check the metrics, the rules and the dashboard
# against a real Prometheus; install it where missing. Its service is not started (the tests
# start their own server on loopback).
set -euo pipefail
command -v prometheus >/dev/null && command -v promtool >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "prometheus/promtool are missing and cannot be installed here; the Prometheus tests will fail" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# policy-rc.d 101: no init script starts the packaged service while installing.
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
fi
trap 'if [ "$created" -eq 1 ]; then rm -f "$policy"; fi' EXIT
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
