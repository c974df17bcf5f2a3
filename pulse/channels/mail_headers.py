"""What a tenant may put in a mail's header section, decided by the rules the mail is built with.

Routing and identity are Pulse's: the SMTP envelope is given explicitly, and the headers that
relays, receivers or the SMTP library read as routing, identity or trust (``Resent-*``,
``Return-Path``, ``Sender``, ``DKIM-Signature``, ``To``...) are never the tenant's. Custom
headers therefore come from an allow-list: ``X-*`` names (except the relays' control headers
and trace headers below), mailing-list headers and a few descriptive ones.

A header-bound value (subject, custom header values, addresses) is checked by building it with
the policy the channel builds mails with and flattening it with aiosmtplib's own
``flatten_message`` in every form aiosmtplib may send (7/8 bit, SMTPUTF8 or not): what the mail
library refuses at send time is refused at accept time, by the same code, so the rule cannot
drift. Control characters (which RFC 5322 forbids and the library lets through) are refused too.
"""

from __future__ import annotations

import re
import unicodedata
from email.message import EmailMessage
from email.policy import default as mail_policy
from functools import lru_cache

from aiosmtplib.email import flatten_message

MAX_NAME_LENGTH = 76  # a name and its colon fit a 78-character line
MAX_VALUE_LENGTH = 998  # RFC 5322's limit of one line; longer values are folded, not refused
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")

# Standard headers that describe a mail without routing it nor claiming who sent it.
ALLOWED = frozenset(
    {
        "list-id", "list-unsubscribe", "list-unsubscribe-post", "list-help", "list-subscribe",
        "list-post", "list-owner", "list-archive", "keywords", "comments", "importance",
        "priority", "sensitivity", "auto-submitted", "precedence", "feedback-id", "organization",
        "in-reply-to", "references",
    }
)  # fmt: skip
# ``X-`` names that relays read as instructions (extra recipients, sending identity, templates)
# or that claim a hop's verdict (spam scores, original recipients): refused although ``X-``.
RELAY_CONTROL = (
    "x-smtpapi", "x-ses-", "x-mailgun-", "x-mc-", "x-pm-", "x-msys-", "x-mj-", "x-sg-",
    "x-ms-exchange-", "x-spam", "x-virus", "x-original-", "x-forwarded-", "x-envelope-",
    "x-sender", "x-receiver", "x-rcpt-", "x-apparently-", "x-originating-", "x-auth",
)  # fmt: skip
PULSE_SETS = frozenset({"from", "to", "subject", "date", "message-id", "reply-to"})
# Every way aiosmtplib may flatten a mail: (SMTPUTF8, content transfer encoding).
SEND_FORMS = ((False, "7bit"), (False, "8bit"), (True, "7bit"), (True, "8bit"))


def name_fault(name: str) -> str | None:
    """Why ``name`` may not be a tenant's header, or None if it may."""
    if not NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        return f"{name!r} is not a header name (letters, digits and '-', at most 76)"
    lower = name.lower()
    if lower in PULSE_SETS:
        return f"{name} is set by Pulse"
    if lower in ALLOWED or (lower.startswith("x-") and not lower.startswith(RELAY_CONTROL)):
        return None
    return (
        f"{name} is not an allowed header: custom headers are X-* (relay control and trace "
        "headers excepted), List-*, Keywords, Comments, Importance, Priority, Sensitivity, "
        "Auto-Submitted, Precedence, Feedback-ID, Organization, In-Reply-To and References"
    )


@lru_cache(maxsize=4096)
def value_fault(name: str, value: str) -> str | None:
    """Why ``value`` cannot be the value of header ``name`` in a mail Pulse sends, or None."""
    if len(value) > MAX_VALUE_LENGTH:
        return f"longer than {MAX_VALUE_LENGTH} characters"
    message = EmailMessage(policy=mail_policy)
    try:
        message[name] = value
    except (ValueError, TypeError) as exc:
        return _explained(value, exc)
    return render_fault(message) or _control_fault(value)


@lru_cache(maxsize=4096)
def address_fault(address: str) -> str | None:
    """Why ``address`` cannot stand in an address header as itself (built, flattened and read
    back as exactly this one address), or None."""
    fault = value_fault("To", address)
    if fault is not None:
        return fault
    message = EmailMessage(policy=mail_policy)
    message["To"] = address
    parsed = [mailbox.addr_spec for mailbox in message["To"].addresses]
    if parsed != [address]:
        return f"the mail library reads {address!r} as {', '.join(parsed) or 'no address'}"
    return None


def render_fault(message: EmailMessage) -> str | None:
    """Why aiosmtplib could not flatten ``message`` in one of the forms it sends, or None."""
    for utf8, cte_type in SEND_FORMS:
        try:
            flatten_message(message, utf8=utf8, cte_type=cte_type)
        except (ValueError, TypeError, LookupError, UnicodeError) as exc:
            return f"{type(exc).__name__}: {exc}"
    return None


def _explained(value: str, exc: Exception) -> str:
    breaks = [char for char in value if len(f"a{char}b".splitlines()) > 1]
    return f"{exc} ({_code(breaks[0])} is a line break to the mail library)" if breaks else str(exc)


def _control_fault(value: str) -> str | None:
    controls = [char for char in value if unicodedata.category(char) == "Cc" and char != "\t"]
    return f"holds the control character {_code(controls[0])}" if controls else None


def _code(char: str) -> str:
    return f"U+{ord(char):04X}"
