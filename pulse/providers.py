"""Named providers and routes: which configured accounts may deliver a channel, in which order.

A *provider* is one configured account of a provider kind: an SMTP relay, a Twilio account, an
FCM project. Each channel has a default provider built from the flat settings (``smtp`` for
email, ``twilio`` for sms and whatsapp, ``fcm`` for push, the channel's own name for the
others). More providers are named in the environment, one variable per field::

    PULSE_PROVIDER_RELAY2__KIND=smtp
    PULSE_PROVIDER_RELAY2__HOST=smtp.backup.example.com
    PULSE_PROVIDER_RELAY2__PASSWORD=...

(name ``relay2``; underscores in a name become dashes). A *route* lists a channel's providers in
order; the runtime sends through the first one whose circuit breaker admits it. Routes come from
a tenant's own table (the API), else from ``PULSE_ROUTES``, else the default provider alone.
Secrets stay in the environment: routes name providers, never credentials.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Literal

import msgspec

from pulse.errors import ConfigError
from pulse.ports import ChannelSpec

PROVIDER_PREFIX = "PULSE_PROVIDER_"
PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Names the flat settings and Pulse's own channels already give a provider.
RESERVED_NAMES = frozenset({"smtp", "twilio", "fcm", "webhook", "log", "receipt"})
MAX_ROUTE_LENGTH = 8

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
ProviderName = Annotated[str, msgspec.Meta(pattern=PROVIDER_NAME.pattern)]


class _Provider(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields shared by every kind; ``kind`` is the tag."""


class SmtpProvider(_Provider, frozen=True, tag_field="kind", tag="smtp"):
    host: str
    port: Port = 587
    tls: Literal["none", "starttls", "implicit"] = "starttls"
    username: str | None = None
    password: str | None = None
    sender: str = msgspec.field(default="Pulse <pulse@localhost>", name="from")
    timeout_s: PositiveFloat = 30.0
    ca_file: str | None = None


class TwilioProvider(_Provider, frozen=True, tag_field="kind", tag="twilio"):
    account_sid: str
    auth_token: str
    base_url: str = "https://api.twilio.com"
    sender: str | None = msgspec.field(default=None, name="from")
    messaging_service_sid: str | None = None
    whatsapp_from: str | None = None


class FcmProvider(_Provider, frozen=True, tag_field="kind", tag="fcm"):
    service_account_file: str
    base_url: str = "https://fcm.googleapis.com"


ProviderConfig = SmtpProvider | TwilioProvider | FcmProvider
SECRET_PROVIDER_FIELDS = frozenset({"password", "auth_token"})


def provider_env_name(name: str, field: str) -> str:
    return f"{PROVIDER_PREFIX}{name.upper().replace('-', '_')}__{field.upper()}"


def split_provider_variable(variable: str) -> tuple[str, str]:
    """``PULSE_PROVIDER_RELAY2__HOST`` -> ``("relay2", "host")``."""
    rest = variable[len(PROVIDER_PREFIX) :]
    raw_name, sep, field = rest.partition("__")
    name = raw_name.lower().replace("_", "-")
    if not sep or not field or not PROVIDER_NAME.match(name):
        raise ConfigError(
            f"{variable} is not a provider setting: use PULSE_PROVIDER_<NAME>__<FIELD>"
        )
    if name in RESERVED_NAMES:
        raise ConfigError(f"{variable}: {name!r} is the default provider's name; pick another")
    return name, field.lower()


def parse_providers(env: Mapping[str, str]) -> dict[str, ProviderConfig]:
    """Every named provider in ``env``; a bad or missing field stops start-up naming it."""
    fields: dict[str, dict[str, str]] = {}
    for variable, value in env.items():
        if variable.startswith(PROVIDER_PREFIX):
            name, field = split_provider_variable(variable)
            fields.setdefault(name, {})[field] = value
    return {name: _convert(name, raw) for name, raw in sorted(fields.items())}


def _convert(name: str, raw: dict[str, str]) -> ProviderConfig:
    if "kind" not in raw:
        raise ConfigError(f"{provider_env_name(name, 'kind')} is not set: use smtp, twilio or fcm")
    try:
        config: ProviderConfig = msgspec.convert(raw, ProviderConfig, strict=False)
        return config
    except msgspec.ValidationError as exc:
        text = str(exc)
        missing = re.search(r"missing required field `(\w+)`", text)
        if missing:
            variable = provider_env_name(name, missing.group(1))
            raise ConfigError(
                f"{variable} is not set (a {raw['kind']} provider needs it)"
            ) from None
        match = re.search(r"at `\$\.(\w+)`", text) or re.search(r"field `(\w+)`", text)
        field = match.group(1) if match else "kind"
        shown = "***" if field in SECRET_PROVIDER_FIELDS else repr(raw.get(field))
        reason = text.split(" - at ")[0]
        variable = provider_env_name(name, field)
        raise ConfigError(f"{variable}={shown} is invalid: {reason}") from None


def provider_secrets(providers: Mapping[str, ProviderConfig]) -> list[str]:
    values = []
    for config in providers.values():
        for field in SECRET_PROVIDER_FIELDS:
            value = getattr(config, field, None)
            if isinstance(value, str):
                values.append(value)
    return values


def default_provider(spec: ChannelSpec) -> str:
    """The provider the flat settings configure for a channel."""
    return spec.provider_kind or spec.name


def catalog(
    specs: Mapping[str, ChannelSpec], providers: Mapping[str, ProviderConfig]
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
    specs: Mapping[str, ChannelSpec], configured: Mapping[str, list[str]]
) -> dict[str, list[str]]:
    """Each channel's route when a tenant has none: ``PULSE_ROUTES``, else its default provider."""
    return {
        name: list(configured.get(name, [default_provider(spec)])) for name, spec in specs.items()
    }


def configured_routes(
    text: str, specs: Mapping[str, ChannelSpec], providers: Mapping[str, ProviderConfig]
) -> dict[str, list[str]]:
    """Every channel's default route: ``PULSE_ROUTES`` (``text``) checked against the
    providers configured, else the channel's default provider."""
    return default_routes(specs, parse_default_routes(text, specs, catalog(specs, providers)))


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
