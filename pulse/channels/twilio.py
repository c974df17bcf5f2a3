"""SMS and WhatsApp through Twilio's Messages API.

``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded, basic auth with
the account SID and auth token; WhatsApp addresses take the ``whatsapp:`` form. The sender is
``From`` (a number) or ``MessagingServiceSid``, for WhatsApp too: a Messaging Service whose
pool holds a WhatsApp sender picks it for a ``whatsapp:`` recipient (Twilio's Messages API).
A request with neither is refused by Twilio (21603), so a channel with no sender configured
is not sent at all. A StatusCallback URL brings Twilio's delivery reports
back to Pulse, verified by ``X-Twilio-Signature``. Errors: 429 and 5xx are retried (with
Retry-After); other 4xx (an invalid number, an unsubscribed recipient...) are permanent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

import aiohttp
import msgspec

from pulse import tracing
from pulse.config import provider_env_name
from pulse.core.ports import ChannelSpec, Delivered, Envelope, Failed, Outcome, Retry
from pulse.core.retry_after import retry_after_seconds

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
RETRYABLE = frozenset({408, 429})


class TextPayload(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=1600)]


def check_e164(value: str) -> str:
    if not E164.match(value):
        raise ValueError(f"{value!r} is not an E.164 phone number such as +14155552671")
    return value


SMS_SPEC = ChannelSpec(
    name="sms", payload_type=TextPayload, check_recipient=check_e164, provider_kind="twilio"
)
WHATSAPP_SPEC = ChannelSpec(
    name="whatsapp", payload_type=TextPayload, check_recipient=check_e164, provider_kind="twilio"
)


@dataclass(frozen=True, slots=True)
class TwilioConfig:
    account_sid: str
    auth_token: str
    base_url: str = "https://api.twilio.com"
    from_number: str | None = None
    messaging_service_sid: str | None = None
    whatsapp_from: str | None = None
    status_callback_base: str | None = None  # Pulse's public URL, for delivery reports
    timeout_s: float = 15.0
    provider: str | None = None  # a named provider's name: its callbacks say so, for the token


class TwilioChannel:
    def __init__(self, config: TwilioConfig, *, whatsapp: bool) -> None:
        self._config = config
        self._whatsapp = whatsapp
        self.spec = WHATSAPP_SPEC if whatsapp else SMS_SPEC
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        auth = aiohttp.encode_basic_auth(self._config.account_sid, self._config.auth_token)
        timeout = aiohttp.ClientTimeout(total=self._config.timeout_s)
        self._session = aiohttp.ClientSession(headers={"Authorization": auth}, timeout=timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, envelope: Envelope) -> Outcome:
        if not self._config.account_sid or not self._config.auth_token:
            return Retry(
                error="Twilio is not configured (PULSE_TWILIO_*)", error_class="NotConfigured"
            )
        sender = twilio_sender(self._config, whatsapp=self._whatsapp)
        if sender is None:
            return self._no_sender()
        if self._session is None:
            await self.start()
        assert self._session is not None
        url = (
            f"{self._config.base_url.rstrip('/')}/2010-04-01/Accounts/"
            f"{self._config.account_sid}/Messages.json"
        )
        try:
            form, headers = self._form(envelope, sender), tracing.outgoing_headers()
            async with self._session.post(url, data=form, headers=headers) as response:
                text = await response.text()
                return _classify(response.status, response.headers.get("Retry-After"), text)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Retry(error=f"{type(exc).__name__}: {exc}", error_class=type(exc).__name__)

    def _no_sender(self) -> Retry:
        """Not the provider's fault: its breaker, shared with the other channel, stays shut."""
        number, service = sender_variables(self._config.provider, whatsapp=self._whatsapp)
        return Retry(
            error=f"Twilio has no {self.spec.name} sender: set {number} or {service}",
            error_class="NotConfigured",
            provider_fault=False,
        )

    def _form(self, envelope: Envelope, sender: tuple[str, str]) -> dict[str, str]:
        payload: TextPayload = envelope.payload
        prefix = "whatsapp:" if self._whatsapp else ""
        form = {"To": prefix + envelope.recipient, "Body": payload.body}
        form[sender[0]] = sender[1]
        if self._config.status_callback_base:
            base = self._config.status_callback_base.rstrip("/")
            callback = f"{base}/providers/twilio/status/{envelope.notification_id}"
            if self._config.provider:
                callback += f"?provider={self._config.provider}"
            form["StatusCallback"] = callback
        return form


def twilio_sender(config: TwilioConfig, *, whatsapp: bool) -> tuple[str, str] | None:
    """The form field and value that name the sender of one channel, or None when the account
    has none for it. SMS: the Messaging Service first (its sender pool, as before), else the
    number. WhatsApp: its own number first (a service may lack a WhatsApp sender), else the
    Messaging Service."""
    service = ("MessagingServiceSid", config.messaging_service_sid)
    if whatsapp:
        number = ("From", f"whatsapp:{config.whatsapp_from}" if config.whatsapp_from else None)
        ordered = (number, service)
    else:
        ordered = (service, ("From", config.from_number))
    return next(((field, value) for field, value in ordered if value), None)


def sender_variables(provider: str | None, *, whatsapp: bool) -> tuple[str, str]:
    """The variables that give a sender: the flat ones, or a named provider's."""
    if provider is None:
        number = "PULSE_TWILIO_WHATSAPP_FROM" if whatsapp else "PULSE_TWILIO_FROM"
        return number, "PULSE_TWILIO_MESSAGING_SERVICE_SID"
    number = provider_env_name(provider, "whatsapp_from" if whatsapp else "from")
    return number, provider_env_name(provider, "messaging_service_sid")


def _classify(status: int, retry_after: str | None, text: str) -> Outcome:
    try:
        body = msgspec.json.decode(text)
    except msgspec.DecodeError:
        body = {}
    body = body if isinstance(body, dict) else {}
    if 200 <= status < 300:
        return Delivered(provider_id=body.get("sid"), response=f"{status} {body.get('status', '')}")
    code = body.get("code")
    error = f"Twilio {status} (code {code}): {body.get('message', text[:200])}"
    error_class = f"Twilio{code}" if code else f"HTTP{status}"
    if status >= 500 or status in RETRYABLE:
        after = retry_after_seconds(retry_after)
        return Retry(error=error, after_s=after, error_class=error_class, response=text[:500])
    return Failed(error=error, error_class=error_class, response=text[:500])
