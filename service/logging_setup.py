"""Structured (one JSON object per line) logs on stderr, quiet by default."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


# A query parameter whose name says it carries a secret, a sharpwatch token anywhere, and the
# credentials of an Authorization value: never written to a log line.
_SECRET_PARAM = re.compile(
    r"([?&;][^=&;\s\"]*(?:token|key|secret|password|passwd|auth)[^=&;\s\"]*=)[^&;\s\"]*",
    re.IGNORECASE,
)
_SHARPWATCH_TOKEN = re.compile(r"\b(sw[ior]_)[A-Za-z0-9_-]{8,}")
_BEARER = re.compile(r"(\bbearer\s+)[^\s\"']+", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with secrets replaced by ``[redacted]``."""
    text = _SECRET_PARAM.sub(rf"\1{REDACTED}", text)
    text = _SHARPWATCH_TOKEN.sub(rf"\1{REDACTED}", text)
    return _BEARER.sub(rf"\1{REDACTED}", text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message (uvicorn's access line included: it carries the query string)
    so that tokens never reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(
        logging.INFO if level in ("debug", "info") else logging.WARNING
    )
