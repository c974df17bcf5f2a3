"""``/openapi.json`` (OpenAPI 3.1) generated from the msgspec types the handlers use, and the
``/docs`` page (Swagger UI, served from the ``swagger-ui-bundle-v2`` wheel: no internet)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from pulse import __version__
from pulse.core import documents
from pulse.core.jobs import (
    JobAccepted,
    JobBatchAccepted,
    JobBatchRequest,
    JobDocument,
    JobGroupAccepted,
    JobGroupRequest,
    JobList,
    JobRequest,
)
from pulse.core.views import NotificationView
from pulse.http import (
    admin,
    batches,
    dead_letters,
    jobs,
    limits,
    notification_queries,
    provider_routes,
    receipts,
    recipient_caps,
    schedule_rules,
    schedules,
    scheduling,
    tenant_weights,
    webhook_secrets,
)
from pulse.http.validation import NotificationRequest

routes = web.RouteTableDef()
REF = "#/components/schemas/{name}"
PROBLEM_CODES = {
    "400": "Invalid JSON or header",
    "401": "No or wrong API key",
    "403": "The key lacks the scope",
    "404": "Not found for this tenant",
    "409": "Conflict",
    "413": "Body too large",
    "415": "Not JSON",
    "422": "A field is invalid",
    "429": "Over a rate limit: nothing accepted; retry after Retry-After (RateLimit headers)",
    "501": "The deployment lacks a setting this needs",
    "503": "Redis or PostgreSQL unreachable; retry after Retry-After",
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    ok: tuple[str, type | None]
    body: type | None = None
    query: type | None = None
    problems: tuple[str, ...] = ("401", "403", "503")
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    headers: tuple[str, ...] = ()


UUID_ID = {"id": {"type": "string", "format": "uuid"}}


def schedules_operations() -> tuple[Operation, ...]:
    """``/api/schedules``: cron schedules."""
    document = ("200", schedule_rules.ScheduleDocument)
    body_problems = ("400", "401", "403", "404", "409", "413", "415", "422", "501", "503")
    one = ("401", "403", "404", "409", "503")
    return (
        Operation("post", "/api/schedules", "Create a cron schedule (with its next fire times)",
                  ("201", schedule_rules.ScheduleDocument), body=schedule_rules.ScheduleRequest,
                  problems=("400", "401", "403", "409", "413", "415", "422", "501", "503")),
        Operation("get", "/api/schedules", "List the tenant's schedules, oldest first",
                  ("200", schedule_rules.ScheduleList), query=schedules.ListQuery,
                  problems=("401", "403", "422", "503")),
        Operation("get", "/api/schedules/{id}", "A schedule with its next fire times", document,
                  problems=("401", "403", "404", "503"), path_params=UUID_ID),
        Operation("patch", "/api/schedules/{id}", "Change a schedule", document,
                  body=schedule_rules.SchedulePatch, problems=body_problems, path_params=UUID_ID),
        Operation("post", "/api/schedules/{id}/pause", "Pause: no occurrence fires", document,
                  problems=one, path_params=UUID_ID),
        Operation("post", "/api/schedules/{id}/resume",
                  "Resume from now (occurrences while paused are not fired)", document,
                  problems=one, path_params=UUID_ID),
        Operation("delete", "/api/schedules/{id}", "Delete a schedule", ("204", None),
                  problems=("401", "403", "404", "503"), path_params=UUID_ID),
    )  # fmt: skip


CHANNEL = {"channel": {"type": "string"}}
INT_ID = {"id": {"type": "integer", "minimum": 0}}

OPERATIONS = (
    Operation("post", "/api/notifications/", "Accept a notification (202 after commit)",
              ("202", documents.Accepted), body=NotificationRequest,
              problems=("400", "401", "403", "409", "413", "415", "422", "429", "501", "503"),
              headers=("Idempotency-Key",)),
    Operation("post", "/api/notifications/batch", "Accept a batch; workers fan it out",
              ("202", batches.BatchAccepted), body=batches.BatchRequest,
              problems=("400", "401", "403", "409", "413", "415", "422", "429", "501", "503"),
              headers=("Idempotency-Key",)),
    Operation("get", "/api/notifications/", "List notifications, newest first",
              ("200", documents.NotificationList), query=notification_queries.ListQuery,
              problems=("401", "403", "422", "503")),
    Operation("get", "/api/notifications/{id}", "A notification with its history",
              ("200", documents.NotificationDocument), problems=("401", "403", "404", "503"),
              path_params=UUID_ID),
    Operation("get", "/api/notifications/{id}/attempts", "Attempts and history",
              ("200", documents.AttemptsDocument), problems=("401", "403", "404", "503"),
              path_params=UUID_ID),
    Operation("post", "/api/notifications/{id}/cancel",
              "Cancel if queued, scheduled or retrying (409 once delivering or finished)",
              ("200", NotificationView), problems=("401", "403", "404", "409", "503"),
              path_params=UUID_ID),
    Operation("patch", "/api/notifications/{id}",
              "Reschedule while scheduled: a new send_at or delay_s (409 once no longer "
              "scheduled; a time now or past sends it at once)",
              ("200", NotificationView), body=scheduling.RescheduleRequest,
              problems=("400", "401", "403", "404", "409", "413", "415", "422", "503"),
              path_params=UUID_ID),
    Operation("get", "/api/dead-letters", "List dead letters",
              ("200", documents.DeadLetterList), query=dead_letters.ListQuery,
              problems=("401", "403", "422", "503")),
    Operation("get", "/api/dead-letters/{id}", "A dead letter with its attempts",
              ("200", documents.DeadLetterDocument), problems=("401", "403", "404", "503"),
              path_params=INT_ID),
    Operation("post", "/api/dead-letters/{id}/replay", "Replay one dead letter",
              ("202", documents.Replayed), problems=("401", "403", "404", "503"),
              path_params=INT_ID),
    Operation("delete", "/api/dead-letters/{id}", "Purge one dead letter", ("204", None),
              problems=("401", "403", "404", "503"), path_params=INT_ID),
    Operation("post", "/api/dead-letters/replay", "Replay dead letters by filter",
              ("202", documents.Replayed), body=dead_letters.ReplayRequest,
              problems=("400", "401", "403", "422", "503")),
    Operation("post", "/api/tenants", "Create a tenant (operator admin)",
              ("201", documents.NewTenantDocument), body=admin.NewTenantRequest,
              problems=("400", "401", "403", "422", "503")),
    Operation("get", "/api/tenants/{id}/limits", "A tenant's rate limits (operator admin)",
              ("200", limits.LimitsDocument), problems=("401", "403", "404", "503"),
              path_params=UUID_ID),
    Operation("put", "/api/tenants/{id}/limits",
              "Set a tenant's rate limits (null: the deployment's default; 0: off)",
              ("200", limits.LimitsDocument), body=limits.LimitsRequest,
              problems=("400", "401", "403", "404", "422", "503"), path_params=UUID_ID),
    Operation("get", "/api/tenants/{id}/weight",
              "A tenant's weight in the fair share within a priority (operator admin)",
              ("200", tenant_weights.WeightDocument), problems=("401", "403", "404", "503"),
              path_params=UUID_ID),
    Operation("put", "/api/tenants/{id}/weight", "Set a tenant's weight (1..1000, default 1)",
              ("200", tenant_weights.WeightDocument), body=tenant_weights.WeightRequest,
              problems=("400", "401", "403", "404", "422", "503"), path_params=UUID_ID),
    Operation("get", "/api/keys", "The tenant's API keys", ("200", documents.KeyList)),
    Operation("post", "/api/keys", "Create an API key", ("201", documents.NewKey),
              body=admin.NewKeyRequest, problems=("400", "401", "403", "422", "503")),
    Operation("delete", "/api/keys/{id}", "Revoke an API key at once", ("204", None),
              problems=("401", "403", "404", "503"), path_params={"id": {"type": "string"}}),
    Operation("get", "/api/routes", "Every channel's route, and the providers to choose from",
              ("200", provider_routes.RouteList)),
    Operation("get", "/api/routes/{channel}", "A channel's route",
              ("200", provider_routes.RouteDocument),
              problems=("401", "403", "404", "501", "503"), path_params=CHANNEL),
    Operation("put", "/api/routes/{channel}", "Set a channel's providers, in failover order",
              ("200", provider_routes.RouteDocument), body=provider_routes.RouteRequest,
              problems=("400", "401", "403", "404", "422", "501", "503"), path_params=CHANNEL),
    Operation("delete", "/api/routes/{channel}", "Back to the default route", ("204", None),
              problems=("401", "403", "404", "501", "503"), path_params=CHANNEL),
    Operation("get", "/api/recipient-caps", "The tenant's recipient caps, per channel",
              ("200", recipient_caps.RecipientCapList)),
    Operation("put", "/api/recipient-caps/{channel}",
              "Cap deliveries to one recipient of a channel per window (defer or skip over it)",
              ("200", recipient_caps.RecipientCapDocument),
              body=recipient_caps.RecipientCapRequest,
              problems=("400", "401", "403", "404", "422", "503"), path_params=CHANNEL),
    Operation("delete", "/api/recipient-caps/{channel}", "Remove a channel's recipient cap",
              ("204", None), problems=("401", "403", "404", "503"), path_params=CHANNEL),
    Operation("get", "/api/receipts", "The receipt endpoint and its signing secret",
              ("200", receipts.ReceiptDocument), problems=("401", "403", "404", "501", "503")),
    Operation("put", "/api/receipts", "Set the endpoint that receives delivery receipts",
              ("200", receipts.ReceiptDocument), body=receipts.ReceiptRequest,
              problems=("400", "401", "403", "422", "501", "503")),
    Operation("delete", "/api/receipts", "Stop sending receipts", ("204", None),
              problems=("401", "403", "404", "503")),
    Operation("post", "/api/receipts/rotate",
              "Move to a new signing secret (409 while the last rotation's day of overlap runs)",
              ("200", receipts.ReceiptDocument),
              problems=("401", "403", "404", "409", "501", "503")),
    Operation("get", "/api/webhooks/secret", "The tenant's webhook signing secret",
              ("200", webhook_secrets.WebhookSecretDocument),
              problems=("401", "403", "501", "503")),
    Operation("post", "/api/webhooks/secret/rotate",
              "Move to a new webhook signing secret (the previous one signs for a day; 409 "
              "while the last rotation's overlap runs)",
              ("200", webhook_secrets.WebhookSecretDocument),
              problems=("401", "403", "409", "501", "503")),
    *schedules_operations(),
    Operation("post", "/api/jobs/", "Enqueue a task (202 after commit; args checked against "
              "the signature its workers published)", ("202", JobAccepted), body=JobRequest,
              problems=("400", "401", "403", "409", "413", "415", "422", "429", "503"),
              headers=("Idempotency-Key",)),
    Operation("post", "/api/jobs/batch", "Enqueue many tasks in one commit (each item answered "
              "on its own: its job or its errors; 422 if none is valid)",
              ("202", JobBatchAccepted), body=JobBatchRequest,
              problems=("400", "401", "403", "409", "413", "415", "422", "429", "503"),
              headers=("Idempotency-Key",)),
    Operation("post", "/api/jobs/group", "Enqueue a group: its jobs side by side, and 'then' "
              "once all succeeded, given their results (their job ids instead, past "
              "PULSE_MAX_GROUP_RESULTS_BYTES)", ("202", JobGroupAccepted),
              body=JobGroupRequest,
              problems=("400", "401", "403", "409", "413", "415", "422", "429", "503"),
              headers=("Idempotency-Key",)),
    Operation("get", "/api/jobs/", "List task jobs, newest first", ("200", JobList),
              query=jobs.ListQuery, problems=("401", "403", "422", "503")),
    Operation("get", "/api/jobs/{id}", "A job: status, progress, result or error (?wait=N "
              "answers once it ends or N seconds passed)", ("200", JobDocument),
              query=jobs.GetQuery, problems=("401", "403", "404", "422", "503"),
              path_params=UUID_ID),
    Operation("post", "/api/jobs/{id}/cancel", "Cancel: queued never start, running see "
              "CancelledError", ("200", JobDocument), problems=("401", "403", "404", "409", "503"),
              path_params=UUID_ID),
)  # fmt: skip


def build_spec() -> dict[str, Any]:
    """The whole document; every schema comes from a msgspec type."""
    types = {t for op in OPERATIONS for t in (op.ok[1], op.body) if t is not None}
    types |= {documents.Problem, documents.Health, documents.Ready}
    _, components = msgspec.json.schema_components(sorted(types, key=str), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    paths["/healthz"] = {"get": _plain("Liveness", "200", documents.Health, secured=False)}
    paths["/readyz"] = {"get": _plain("Readiness", "200", documents.Ready, secured=False)}
    paths["/readyz"]["get"]["responses"]["503"] = _problem("Not ready")
    return {
        "openapi": "3.1.0",
        "info": {"title": "Pulse", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(op: Operation) -> dict[str, Any]:
    spec = _plain(op.summary, op.ok[0], op.ok[1], secured=True)
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": schema}
        for name, schema in op.path_params.items()
    ]
    parameters += [
        {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
        for name in op.headers
    ]
    if op.query is not None:
        parameters += _query_parameters(op.query)
    if parameters:
        spec["parameters"] = parameters
    if op.body is not None:
        spec["requestBody"] = {
            "required": op.body is NotificationRequest or op.method == "patch",
            "content": {
                "application/json": {"schema": {"$ref": REF.format(name=op.body.__name__)}}
            },
        }
    for code in op.problems:
        spec["responses"][code] = _problem(PROBLEM_CODES[code])
    return spec


def _plain(summary: str, code: str, kind: type | None, *, secured: bool) -> dict[str, Any]:
    response: dict[str, Any] = {"description": summary}
    if kind is not None:
        ref = {"$ref": REF.format(name=kind.__name__)}
        response["content"] = {"application/json": {"schema": ref}}
    spec: dict[str, Any] = {"summary": summary, "responses": {code: response}}
    if not secured:
        spec["security"] = []
    return spec


def _problem(description: str) -> dict[str, Any]:
    ref = {"$ref": REF.format(name="Problem")}
    return {"description": description, "content": {"application/problem+json": {"schema": ref}}}


def _query_parameters(kind: type) -> list[dict[str, Any]]:
    schema = msgspec.json.schema(kind)
    definition = schema["$defs"][kind.__name__]
    return [
        {"name": name, "in": "query", "required": False, "schema": _inline(prop, schema)}
        for name, prop in definition["properties"].items()
    ]


def _inline(prop: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Query parameter schemas must stand alone: resolve references to enums."""
    text = msgspec.json.encode(prop).decode()
    for name, definition in schema.get("$defs", {}).items():
        text = text.replace(
            msgspec.json.encode({"$ref": f"#/$defs/{name}"}).decode(),
            msgspec.json.encode(definition).decode(),
        )
    inlined: dict[str, Any] = msgspec.json.decode(text)
    return inlined


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=msgspec.json.encode(build_spec()), content_type="application/json")


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pulse API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body></html>
"""
DOCS_INIT = "window.ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#ui'});\n"


@routes.get("/docs")
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_PAGE, content_type="text/html")


@routes.get("/docs/init.js")
async def docs_init(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_INIT, content_type="application/javascript")


def swagger_assets() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)
