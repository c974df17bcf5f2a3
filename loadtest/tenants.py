"""The setup step: tenants of the load test, created through the operator API.

``python -m loadtest.tenants --host URL --count N`` (operator key in ``PULSE_OPERATOR_KEY``)
prints an ``export LOADTEST_API_KEYS=...`` line, for a Locust run on another machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import urllib.request


def create_tenants(host: str, operator_key: str, count: int, prefix: str) -> list[str]:
    """``count`` new tenants named ``prefix-1``...; their API keys (send, read, admin)."""
    return [_create(host, operator_key, f"{prefix}-{n}") for n in range(1, count + 1)]


def _create(host: str, operator_key: str, name: str) -> str:
    request = urllib.request.Request(
        f"{host.rstrip('/')}/api/tenants",
        data=json.dumps({"name": name}).encode(),
        headers={"Authorization": f"Bearer {operator_key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        key: str = json.load(answer)["api_key"]
        return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", required=True, help="Pulse's base URL")
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--prefix", default=f"loadtest-{secrets.token_hex(3)}")
    args = parser.parse_args()
    keys = create_tenants(args.host, os.environ["PULSE_OPERATOR_KEY"], args.count, args.prefix)
    print(f"export LOADTEST_API_KEYS={shlex.quote(','.join(keys))}")


if __name__ == "__main__":
    main()
