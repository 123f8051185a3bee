"""The endpoint paths of the ``/api/v1`` API that the trainer hooks call, built in one place."""

from __future__ import annotations

__all__ = ["API_PREFIX", "ApiPaths"]

API_PREFIX = "/api/v1"


class ApiPaths:
    """Paths relative to the service's base URL."""

    @staticmethod
    def runs() -> str:
        """Register (or reattach to) a run: ``POST``."""
        return f"{API_PREFIX}/runs"

    @staticmethod
    def run(run_id: int) -> str:
        """A run: ``GET``, ``PATCH`` (status, failure reason)."""
        return f"{API_PREFIX}/runs/{run_id}"

    @staticmethod
    def steps(run_id: int) -> str:
        """A run's step records: ``POST`` a batch."""
        return f"{API_PREFIX}/runs/{run_id}/steps"

    @staticmethod
    def collapse(run_id: int) -> str:
        """A run's collapse status (verdict, open alerts): ``GET``."""
        return f"{API_PREFIX}/runs/{run_id}/collapse"

    @staticmethod
    def commands(run_id: int) -> str:
        """A run's outstanding commands: ``GET ?wait=`` long-polls."""
        return f"{API_PREFIX}/runs/{run_id}/commands"

    @staticmethod
    def command_ack(run_id: int, command_id: int) -> str:
        """Acknowledge a command: ``POST``."""
        return f"{API_PREFIX}/runs/{run_id}/commands/{command_id}/ack"
