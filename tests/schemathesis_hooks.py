"""Schemathesis hooks for tests/test_openapi.py (loaded through ``SCHEMATHESIS_HOOKS``).

Every API operation runs as a tenant of its own, made for it with the run's operator key
(``PULSE_SCHEMATHESIS_OPERATOR_KEY``, never sent by schemathesis itself). So the DELETE
operations run too: revoking a key, a route or the receipt endpoint touches only that
operation's tenant, and the operator key can never be revoked (another tenant's key id is a
404). Should an operation's key stop working anyway (a 401), schemathesis asks for a new one.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.request
from typing import Any

import schemathesis
from schemathesis import Case
from schemathesis.auths import AuthContext


def _operation(case: Case[Any], context: AuthContext) -> str:
    return context.operation.label


def new_tenant_key() -> str:
    """Create an operator tenant through the API; answer its first (full-rights) key."""
    base = os.environ["PULSE_SCHEMATHESIS_API_URL"]
    if not base.startswith("http://127.0.0.1:"):
        raise ValueError(f"{base} is not on loopback")
    operator_key = os.environ["PULSE_SCHEMATHESIS_OPERATOR_KEY"]
    body = {"name": f"schemathesis-{secrets.token_hex(6)}", "operator": True}
    request = urllib.request.Request(
        f"{base}/api/tenants",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {operator_key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        key: str = json.load(response)["api_key"]
        return key


@schemathesis.auth(cache_by_key=_operation)
class TenantPerOperation:
    def get(self, case: Case[Any], context: AuthContext) -> str:
        return new_tenant_key()

    def set(self, case: Case[Any], data: str, context: AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {data}"
