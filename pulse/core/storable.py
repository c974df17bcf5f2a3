"""Text PostgreSQL can store: it refuses U+0000 in ``text`` and in ``jsonb`` strings, and no
UTF-8 can carry a lone surrogate (how Python decodes undecodable bytes, e.g. in file names).

What a worker records comes from tenants' code and providers' answers (an error message, a
traceback, a webhook's reply, a progress note): one NUL there must not make the batch statement
that records everyone's outcomes fail again and again. Such text is kept with U+FFFD in each
one's place; a task's *result* holding one is refused instead (the run fails,
ResultNotSerializable), since a changed result would be a wrong one.
"""

from __future__ import annotations

import re

NUL = "\x00"
REPLACEMENT = "\ufffd"
# The escape of a NUL inside JSON text: ``\u0000`` after an even number of backslashes (an odd
# number would make it a literal backslash followed by "u0000").
_ESCAPED_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str | None) -> str | None:
    """``text`` with every NUL and lone surrogate replaced by U+FFFD."""
    if text is None or _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def json_holds_nul(encoded: bytes) -> bool:
    """Whether JSON text holds a string with a NUL in it (jsonb would refuse it)."""
    return b"\\u0000" in encoded and _ESCAPED_NUL.search(encoded) is not None


def storable_json(encoded: bytes) -> bytes:
    """JSON text with each NUL inside its strings replaced by U+FFFD (still valid JSON)."""
    if b"\\u0000" not in encoded:
        return encoded
    return _ESCAPED_NUL.sub(rb"\1\\ufffd", encoded)
