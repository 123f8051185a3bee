"""Tokens never appear in logs (issue 14): uvicorn's access line carries the query string, and a
token put there (refused with 401) used to be written in full."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from service.logging_setup import JsonFormatter, RedactSecrets, redact
from tests.reliability._procs import ServiceProcess


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ('"GET /api/v1/runs?token=swo_AbC123xyz987654321 HTTP/1.1" 401', "?token=[redacted]"),
        ("GET /x?limit=5&access_token=abc HTTP/1.1", "limit=5&access_token=[redacted]"),
        ("GET /x?api_key=k1;password=p2", "api_key=[redacted];password=[redacted]"),
        ("authorization: Bearer swi_zzzzzzzzzzzzzzzz", "Bearer [redacted]"),
        ("token swr_0123456789abcdef leaked", "swr_[redacted] leaked"),
    ],
)
def test_redact(line: str, kept: str) -> None:
    cleaned = redact(line)
    assert kept in cleaned
    assert "swo_AbC" not in cleaned
    assert "abc HTTP" not in cleaned


def test_the_filter_rewrites_uvicorns_access_record() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5555", "GET", "/api/v1/runs?token=swo_secretsecretsecret", "1.1", 401),
        None,
    )
    assert RedactSecrets().filter(record)
    line = JsonFormatter().format(record)
    assert "secretsecret" not in line
    assert "token=[redacted]" in line


def test_a_token_in_the_query_string_is_not_logged(tmp_path: Path) -> None:
    service = ServiceProcess(
        f"sqlite:///{tmp_path / 'sw.db'}",
        log_path=tmp_path / "service.log",
        extra_env={"SHARPWATCH_LOG_LEVEL": "info", "SHARPWATCH_AUTH": "true"},
    )
    service.start()
    try:
        secret = "swo_QueryStringSecret0123456789"
        response = httpx.get(f"{service.url}/api/v1/runs?token={secret}")
        assert response.status_code in (401, 422)  # refused either way
        httpx.get(f"{service.url}/healthz")  # a later line: the access log has been written
    finally:
        service.stop()
    log = (tmp_path / "service.log").read_text()
    assert "/api/v1/runs?token=[redacted]" in log  # the line is there, the token is not
    assert "QueryStringSecret" not in log
