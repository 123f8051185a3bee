"""sharpwatch trainer hooks: per-step RLVR health metrics, IAC/DLC calibration and the client
that streams them to the sharpwatch service.

Errors: every exception raised on purpose derives from :class:`SharpwatchHooksError`
(see ``trainer_hooks._errors``).
"""

from trainer_hooks._client import RunInfo, SharpwatchClient, sanitize_record
from trainer_hooks._errors import ConfigurationError, ServiceError, ShapeError, SharpwatchHooksError

__all__ = [
    "ConfigurationError",
    "RunInfo",
    "ServiceError",
    "ShapeError",
    "SharpwatchClient",
    "SharpwatchHooksError",
    "sanitize_record",
]
