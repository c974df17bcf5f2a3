"""Mail goes only where it was accepted for: tenants' custom headers come from an allow-list,
header-bound values are checked at accept time with the mail library's own rule (422 naming
the field), the SMTP envelope is Pulse's alone, and a mail that cannot be built fails for good
instead of raising."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.utils import formatdate
from typing import Any

import msgspec
import pytest

from pulse.channels.email import EmailChannel, EmailPayload
from pulse.channels.registry import smtp_config
from pulse.config import Settings
from pulse.core.ids import uuid7
from pulse.core.ports import Delivered, Envelope, Failed
from pulse.devtools.smtp_sink import ReceivedMail, SmtpSink
from tests.conftest import EXAMPLE, Client, RunningWorker, wait_for_status

pytestmark = pytest.mark.integration

RECIPIENT = "someone@example.com"
ROUTING_AND_IDENTITY = [
    "Resent-Date", "Resent-To", "Resent-Cc", "Resent-Bcc", "Resent-From", "Resent-Sender",
    "Resent-Message-ID", "Return-Path", "Sender", "Envelope-To", "Envelope-From",
    "DKIM-Signature", "ARC-Seal", "Received", "Authentication-Results", "To", "Cc", "Bcc",
    "From", "Reply-To", "Subject", "Message-ID", "Date", "MIME-Version", "Content-Type",
    "Content-Transfer-Encoding", "Disposition-Notification-To", "Return-Receipt-To",
    "Errors-To", "Delivered-To", "X-SMTPAPI", "X-MC-BccAddress", "X-SES-FROM-ARN",
    "X-Mailgun-Variables", "X-Original-To", "X-Envelope-From", "X-MS-Exchange-Organization-SCL",
    "resent-to", "BCC",
]  # fmt: skip
HARMLESS = {
    "X-Campaign": "spring",
    "List-Unsubscribe": "<mailto:unsubscribe@example.com>, <https://example.com/u/1>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    "List-Id": "Orders <orders.example.com>",
    "Auto-Submitted": "auto-generated",
    "Precedence": "bulk",
    "Importance": "high",
    "Keywords": "order, receipt",
    "Feedback-ID": "campaign:tenant:mail:sender",
}
# Characters Python's mail library takes for line breaks (str.splitlines) or RFC 5322 forbids.
POISON = {
    "LINE SEPARATOR": "\u2028",
    "PARAGRAPH SEPARATOR": "\u2029",
    "NEXT LINE": "\x85",
    "VT": "\x0b",
    "FF": "\x0c",
    "FS": "\x1c",
    "GS": "\x1d",
    "RS": "\x1e",
    "CR": "\r",
    "LF": "\n",
    "ESC": "\x1b",
    "DEL": "\x7f",
}


def email_body(**payload: Any) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(EXAMPLE))
    body["payload"] = {"subject": "Hello", "body": "Welcome"} | payload
    return body


async def post(client: Client, auth: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
    response = await client.post("/api/notifications/", json=body, headers=auth)
    return response.status, msgspec.json.decode(await response.read())


def pointer(document: Any) -> str:
    pointers: list[str] = [error["pointer"] for error in document["errors"]]
    assert len(pointers) == 1, document
    return pointers[0]


# --- accept time: routing and identity headers are refused, naming the header -------------


@pytest.mark.parametrize("name", ROUTING_AND_IDENTITY)
async def test_headers_that_route_or_identify_are_refused(
    client: Client, auth: dict[str, str], name: str
) -> None:
    status, document = await post(client, auth, email_body(headers={name: "x@evil.example"}))

    assert status == 422, document
    assert pointer(document) == f"/payload/headers/{name}"


async def test_harmless_custom_headers_are_accepted(client: Client, auth: dict[str, str]) -> None:
    status, document = await post(client, auth, email_body(headers=HARMLESS))

    assert status == 202, document


@pytest.mark.parametrize("name", ["X.Campaign", "X Campaign", "X:Campaign", "", "X-" + "a" * 80])
async def test_malformed_header_names_are_refused(
    client: Client, auth: dict[str, str], name: str
) -> None:
    status, document = await post(client, auth, email_body(headers={name: "v"}))

    assert status == 422, document
    assert pointer(document).startswith("/payload/headers")


# --- accept time: header-bound values follow the mail library's rule ----------------------


@pytest.mark.parametrize("char", POISON.values(), ids=POISON.keys())
async def test_a_poison_subject_is_refused_naming_the_subject(
    client: Client, auth: dict[str, str], char: str
) -> None:
    status, document = await post(client, auth, email_body(subject=f"Hello{char}there"))

    assert status == 422, document
    assert pointer(document) == "/payload/subject"


@pytest.mark.parametrize("char", POISON.values(), ids=POISON.keys())
async def test_a_poison_header_value_is_refused_naming_the_header(
    client: Client, auth: dict[str, str], char: str
) -> None:
    headers = {"X-Campaign": "spring", "X-Order": f"10{char}42"}

    status, document = await post(client, auth, email_body(headers=headers))

    assert status == 422, document
    assert pointer(document) == "/payload/headers/X-Order"


@pytest.mark.parametrize("char", POISON.values(), ids=POISON.keys())
async def test_a_poison_reply_to_or_recipient_is_refused_naming_it(
    client: Client, auth: dict[str, str], char: str
) -> None:
    reply_status, reply = await post(client, auth, email_body(reply_to=f"a{char}b@example.com"))
    body = email_body()
    body["recipient"] = f"a{char}b@example.com"
    recipient_status, recipient = await post(client, auth, body)

    assert (reply_status, pointer(reply)) == (422, "/payload/reply_to")
    assert (recipient_status, pointer(recipient)) == (422, "/recipient")


async def test_an_address_the_mail_library_would_rewrite_is_refused(
    client: Client, auth: dict[str, str]
) -> None:
    # The library writes a\b@example.com as "a\\b"@example.com: To would not be the recipient.
    body = email_body(reply_to="a\\b@example.com")

    status, document = await post(client, auth, body)

    assert (status, pointer(document)) == (422, "/payload/reply_to")


async def test_unicode_text_and_long_subjects_are_still_accepted(
    client: Client, auth: dict[str, str]
) -> None:
    body = email_body(subject="Grüße, 注文 " + "long " * 150, headers={"X-Tag": "café\tbar"})

    status, document = await post(client, auth, body)

    assert status == 202, document


# --- delivery: the envelope is Pulse's, whatever the headers say --------------------------


def payload_past_validation(**fields: Any) -> EmailPayload:
    """A payload as a job accepted before these checks (or a plugin) could hand the channel:
    fields set after construction are not validated."""
    payload = EmailPayload(subject="Hello", body="Welcome to Pulse")
    for name, value in fields.items():
        setattr(payload, name, value)
    return payload


def sink_channel(sink: SmtpSink) -> EmailChannel:
    settings = Settings(smtp_host=sink.host, smtp_port=sink.port, smtp_tls="none")
    return EmailChannel(smtp_config(settings))


def envelope_of(payload: EmailPayload) -> Envelope:
    return Envelope(str(uuid7()), str(uuid7()), RECIPIENT, payload, attempt=1)


def mails_of(sink: SmtpSink, sent: Envelope) -> list[ReceivedMail]:
    """The mails the sink received for this notification (the sink is shared by tests)."""
    return [
        mail for mail in sink.messages() if mail.message_id == f"<{sent.notification_id}@pulse>"
    ]


async def test_resent_and_copy_headers_never_change_the_envelope(smtp_sink: SmtpSink) -> None:
    hostile = {
        "Resent-Date": formatdate(),
        "Resent-From": "boss@evil.example",
        "Resent-Sender": "boss@evil.example",
        "Resent-To": "attacker@evil.example",
        "Resent-Cc": "attacker2@evil.example",
        "Resent-Bcc": "attacker3@evil.example",
        "Cc": "cc@evil.example",
        "Bcc": "bcc@evil.example",
        "Sender": "boss@evil.example",
        "Return-Path": "<bounce@evil.example>",
    }
    sent = envelope_of(payload_past_validation(headers=hostile))

    outcome = await sink_channel(smtp_sink).send(sent)

    assert isinstance(outcome, Delivered), outcome
    [mail] = mails_of(smtp_sink, sent)
    assert mail.rcpt_tos == [RECIPIENT]
    assert mail.mail_from == "pulse@localhost"
    received = message_from_bytes(mail.raw, policy=policy.default)
    assert received["To"] == RECIPIENT
    assert received["Bcc"] is None  # never written into the mail either
    assert received["Resent-Bcc"] is None


# --- delivery: a mail that cannot be built is a permanent failure, never an exception -----


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "Hello\u2028there"},
        {"subject": "Hello\x1cthere"},
        {"headers": {"X-Order": "10\x8542"}},
        {"headers": {"To": "second-to@evil.example"}},  # a mail has one To: the library refuses
        {"reply_to": "a\u2029b@example.com"},
    ],
    ids=["LS-subject", "FS-subject", "NEL-header", "second-To", "PS-reply-to"],
)
async def test_a_mail_that_cannot_be_built_fails_for_good(
    smtp_sink: SmtpSink, fields: dict[str, Any]
) -> None:
    sent = envelope_of(payload_past_validation(**fields))

    outcome = await sink_channel(smtp_sink).send(sent)

    assert isinstance(outcome, Failed), outcome
    assert outcome.error_class == "UnbuildableMessage"
    assert "ValueError" in outcome.error
    assert not [
        m for m in smtp_sink.messages() if m.message_id == f"<{sent.notification_id}@pulse>"
    ]


def test_the_channel_refuses_a_sender_without_an_address() -> None:
    from pulse.core.errors import ConfigError

    settings = Settings(smtp_host="127.0.0.1", smtp_tls="none", smtp_from="Pulse")

    with pytest.raises(ConfigError, match="sender"):
        EmailChannel(smtp_config(settings))


# --- end to end: allowed headers arrive, the mail reaches only the accepted recipient -------


async def test_a_mail_with_custom_headers_reaches_only_its_recipient(
    client: Client, auth: dict[str, str], worker: RunningWorker, smtp_sink: SmtpSink
) -> None:
    status, accepted = await post(client, auth, email_body(headers=HARMLESS))
    assert status == 202, accepted

    location = f"/api/notifications/{accepted['id']}"
    document = await wait_for_status(client, auth, location, "delivered", "failed")

    assert document["status"] == "delivered"
    [mail] = [m for m in smtp_sink.messages() if m.message_id == f"<{accepted['id']}@pulse>"]
    assert mail.rcpt_tos == [RECIPIENT]
    received = message_from_bytes(mail.raw, policy=policy.default)
    assert {name: received[name] for name in HARMLESS} == HARMLESS


def test_a_job_accepted_before_the_allow_list_no_longer_converts() -> None:
    # The worker converts each job's payload with the channel's type before sending, so a
    # queued job carrying Resent-To fails as InvalidPayload instead of reaching the relay.
    stored = {"subject": "s", "body": "b", "headers": {"Resent-To": "attacker@evil.example"}}

    with pytest.raises(msgspec.ValidationError, match=r"headers\.Resent-To"):
        msgspec.convert(stored, EmailPayload)
