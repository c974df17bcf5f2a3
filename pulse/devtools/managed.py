"""A start/stop resource that is also a context manager (embedded servers, the SMTP sink)."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Managed:
    """Subclasses implement ``start`` and ``stop``; ``with`` calls them in pairs."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError
