"""Routes: which configured providers may deliver a channel, in which order (pure rules).

A *route* lists a channel's providers in order; the runtime sends through the first one whose
circuit breaker admits it. Routes come from a tenant's own table (the API), else from
``PULSE_ROUTES``, else the channel's default provider alone. Routes name providers, never
credentials: those stay in the environment (``pulse.config``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Annotated

import msgspec

from pulse.core.errors import ConfigError
from pulse.core.ports import ChannelSpec

PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_ROUTE_LENGTH = 8

ProviderName = Annotated[str, msgspec.Meta(pattern=PROVIDER_NAME.pattern)]


def default_provider(spec: ChannelSpec) -> str:
    """The provider the flat settings configure for a channel."""
    return spec.provider_kind or spec.name


def catalog(
    specs: Mapping[str, ChannelSpec], providers: Mapping[str, msgspec.Struct]
) -> dict[str, frozenset[str]]:
    """Every provider this deployment knows, with the channels it can deliver."""
    served: dict[str, set[str]] = {}
    for spec in specs.values():
        served.setdefault(default_provider(spec), set()).add(spec.name)
    for name, config in providers.items():
        kind = type(config).__struct_config__.tag
        served.setdefault(name, set()).update(
            spec.name for spec in specs.values() if spec.provider_kind == kind
        )
    return {name: frozenset(channels) for name, channels in served.items()}


def configured(
    specs: Mapping[str, ChannelSpec], known: Mapping[str, frozenset[str]]
) -> dict[str, frozenset[str]]:
    """``known`` (a ``catalog``) without the default providers whose settings are missing:
    what the API offers tenants, and what can deliver at all."""
    unset = {default_provider(spec) for spec in specs.values() if spec.missing is not None}
    return {name: channels for name, channels in known.items() if name not in unset}


def check_route(
    channel: str, providers: Iterable[str], known: Mapping[str, frozenset[str]]
) -> list[str]:
    """A route's providers, checked: known, serving ``channel``, each once. Raises ValueError
    naming the index at fault, so the API can point at it."""
    route = list(providers)
    if not route:
        raise RouteError(0, "a route needs at least one provider")
    if len(route) > MAX_ROUTE_LENGTH:
        raise RouteError(MAX_ROUTE_LENGTH, f"a route lists at most {MAX_ROUTE_LENGTH} providers")
    for index, name in enumerate(route):
        if name not in known:
            listed = ", ".join(sorted(known))
            raise RouteError(index, f"unknown provider {name!r} (known: {listed})")
        if channel not in known[name]:
            raise RouteError(index, f"provider {name!r} does not deliver {channel}")
        if name in route[:index]:
            raise RouteError(index, f"provider {name!r} is listed twice")
    return route


class RouteError(ValueError):
    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


def parse_default_routes(
    text: str, specs: Mapping[str, ChannelSpec], known: Mapping[str, frozenset[str]]
) -> dict[str, list[str]]:
    """``PULSE_ROUTES``, such as ``email=smtp,relay2;sms=twilio,twilio-backup``, checked."""
    routes: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        channel, sep, names = part.partition("=")
        channel = channel.strip()
        if not sep or channel not in specs:
            raise ConfigError(f"PULSE_ROUTES: {part!r} is not CHANNEL=PROVIDER,PROVIDER...")
        try:
            routes[channel] = check_route(
                channel, [n.strip() for n in names.split(",") if n.strip()], known
            )
        except RouteError as exc:
            raise ConfigError(f"PULSE_ROUTES: {channel}: {exc.reason}") from None
    return routes


def default_routes(
    specs: Mapping[str, ChannelSpec],
    configured: Mapping[str, list[str]],
    known: Mapping[str, frozenset[str]] | None = None,
) -> dict[str, list[str]]:
    """Each channel's route when a tenant has none: ``PULSE_ROUTES``, else its default provider
    (else, that one not configured, the configured providers that serve it, by name)."""
    return {
        name: list(configured.get(name, _fallback(spec, known))) for name, spec in specs.items()
    }


def _fallback(spec: ChannelSpec, known: Mapping[str, frozenset[str]] | None) -> list[str]:
    own = default_provider(spec)
    if known is None or spec.missing is None:
        return [own]
    return sorted(name for name, channels in known.items() if spec.name in channels) or [own]


def configured_routes(
    text: str, specs: Mapping[str, ChannelSpec], providers: Mapping[str, msgspec.Struct]
) -> dict[str, list[str]]:
    """Every channel's default route: ``PULSE_ROUTES`` (``text``) checked against the
    providers configured, else the channel's default provider."""
    known = catalog(specs, providers)
    parsed = parse_default_routes(text, specs, known)
    return default_routes(specs, parsed, configured(specs, known))


def accepting(
    specs: Mapping[str, ChannelSpec], known: Mapping[str, frozenset[str]]
) -> dict[str, ChannelSpec]:
    """The specs the API checks requests with: ``missing`` kept only on the channels that no
    configured provider serves, which the API refuses at accept time (501) rather than
    letting every attempt fail."""
    served = {channel for channels in known.values() for channel in channels}
    return {
        name: spec if name not in served else replace(spec, missing=None)
        for name, spec in specs.items()
    }


class RouteBook:
    """The routes in force: a tenant's own, else the defaults. An immutable snapshot, so a
    lookup on the delivery path is a dictionary read and a refresh is one assignment."""

    def __init__(
        self,
        defaults: Mapping[str, list[str]],
        tenants: Mapping[tuple[str, str], list[str]] | None = None,
    ) -> None:
        self._defaults = dict(defaults)
        self._tenants = dict(tenants or {})

    def with_tenant_routes(self, tenants: Mapping[tuple[str, str], list[str]]) -> RouteBook:
        return RouteBook(self._defaults, tenants)

    def route(self, tenant_id: str, channel: str) -> list[str]:
        return self._tenants.get((tenant_id, channel)) or self.default(channel)

    def default(self, channel: str) -> list[str]:
        return self._defaults.get(channel, [channel])
