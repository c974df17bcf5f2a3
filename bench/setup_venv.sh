#!/usr/bin/env bash
# Create (once) the virtual environment of one peer of `make bench`:
#   setup_venv.sh VENV_DIR REQUIREMENTS_TXT
# Idempotent: a stamp holding the hash of the requirements skips the install when it matches.
# Quiet: pip's output goes to VENV_DIR/.install.log and is shown only when the install fails.
set -euo pipefail
venv=${1:?usage: setup_venv.sh VENV_DIR REQUIREMENTS_TXT}
requirements=${2:?usage: setup_venv.sh VENV_DIR REQUIREMENTS_TXT}
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ -x "$venv/bin/python" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup_venv.sh: installing $requirements into $venv" >&2
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
rm -f "$stamp"
log="$venv/.install.log"
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$requirements" >"$log" 2>&1; then
  echo "setup_venv.sh: installing $requirements into $venv failed:" >&2
  cat "$log" >&2
  exit 1
fi
echo "$want" >"$stamp"
