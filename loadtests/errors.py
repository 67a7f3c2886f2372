"""Errors of the load-test subsystem."""

from __future__ import annotations

from vigil.errors import VigilError


class LoadTestError(VigilError):
    """A load test cannot run: unknown profile, unreachable host, bad option."""


class ProfileError(LoadTestError):
    """A profile file is wrong; the message names the file and line and how to fix it.

    Example: ``loadtests/profiles/smoke.yaml:7: gates.p99_ms: unknown gate; known gates
    are: checkout_success_ratio, error_ratio, p95_ms``.
    """

    def __init__(self, message: str, *, file: str, line: int | None = None) -> None:
        self.file = file
        self.line = line
        where = f"{file}:{line}: " if line is not None else f"{file}: "
        super().__init__(where + message)
