"""Exception hierarchy of the service.

``SharpwatchError`` is the root. Subclasses carry the HTTP status the app answers with, so the
storage layer can raise them without knowing about HTTP and the app's exception handler maps them.

- ``NotFoundError`` (404): a run, query or command does not exist.
- ``ConflictError`` (409): a re-sent record differs from what is stored.
- ``InvalidInputError`` (422): input passed schema validation but breaks a rule that needs the store
  (for example a step record whose group size disagrees with the run's).
- ``ConfigurationError``: settings are unsafe or inconsistent; raised at start-up, never over HTTP.
"""

from __future__ import annotations


class SharpwatchError(Exception):
    """Root of every exception the service raises on purpose."""

    status_code: int = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFoundError(SharpwatchError):
    status_code = 404


class ConflictError(SharpwatchError):
    status_code = 409


class InvalidInputError(SharpwatchError):
    status_code = 422


class ConfigurationError(SharpwatchError, ValueError):
    """Unsafe or inconsistent settings; the message says which setting and what to do."""
