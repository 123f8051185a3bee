"""Exceptions raised by ``trainer_hooks``.

Every exception this package raises on purpose derives from :class:`SharpwatchHooksError`:

- :class:`ConfigurationError` (also a ``ValueError``): a constructor or call argument is invalid;
  the message names the argument and the reason.
- :class:`ShapeError` (also a ``ValueError``): tensors handed to a hook disagree in shape or device.
- :class:`ServiceError`: the service answered in a way the client cannot use (only raised from
  explicit, user-initiated calls such as ``register_run``; the background sender never raises
  into the training loop).
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "ServiceError", "ShapeError", "SharpwatchHooksError"]


class SharpwatchHooksError(Exception):
    """Root of every exception ``trainer_hooks`` raises on purpose."""


class ConfigurationError(SharpwatchHooksError, ValueError):
    """An argument is invalid; the message names it and says why."""


class ShapeError(SharpwatchHooksError, ValueError):
    """Tensors disagree in shape, dtype or device."""


class ServiceError(SharpwatchHooksError):
    """The sharpwatch service rejected a request or answered with something unusable."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
