"""The client's write-ahead log against a real service (issue 14, failures 3, 4 and 5): damaged
spool lines are skipped, counted and reported; a sender that raises is restarted; flush() says
why it failed; a bad offset file is repaired from the log; a batch over the body limit is split
down to single steps; a resumed trainer numbers its steps after its own spool."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.settings import Settings
from tests._servers import ServerThread
from tests.trainer_hooks._records import rows_of
from trainer_hooks import SharpwatchClient, StepInputs, grpo_advantages, watch
from trainer_hooks._spool import spool_key

BAD_LINES_METRIC = "client_spool_bad_lines"  # the metric the client adds to the next step


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@contextmanager
def _server(database: str, port: int = 0, **settings: Any) -> Iterator[ServerThread]:
    app = create_app(Settings(database_url=database, **settings), registry=CollectorRegistry())
    with ServerThread(app, port=port) as running:
        yield running


def _record(step: int, queries: int = 1, *, columns: bool = False) -> dict[str, Any]:
    rows = [
        {"query_id": f"q{i}", "group_size": 4, "successes": (step + i) % 5} for i in range(queries)
    ]
    return {
        "step": step,
        "metrics": {"entropy": 1.0 / (step + 1)},
        "queries": {k: [r[k] for r in rows] for k in ("query_id", "group_size", "successes")}
        if columns
        else rows,
    }


def _line(step: int) -> bytes:
    return json.dumps(_record(step), separators=(",", ":")).encode()


def _stored(url: str, run_id: int, metrics: str = "entropy") -> list[dict[str, Any]]:
    body = httpx.get(
        f"{url}/api/v1/runs/{run_id}/steps", params={"limit": 10000, "metrics": metrics}
    ).json()
    return list(body["items"])


def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def _spool_files(directory: Path, url: str, name: str) -> tuple[Path, Path]:
    key = spool_key(url.rstrip("/"), "default", name)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{key}.jsonl", directory / f"{key}.offset"


# -- failure 5: damaged lines, a sender that raises, flush() saying why, bad offset files --------


def test_damaged_spool_lines_are_skipped_counted_and_reported(
    database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    with _server(database) as server:
        log_path, _ = _spool_files(spool, server.url, "damaged")
        log_path.write_bytes(
            _line(0)
            + b"\n"
            + b'{"step": 1, "metrics": {"entropy": 0.5, "x": "\xff\xfe"}}\n'  # invalid UTF-8
            + b"\x00" * 4096
            + b"\n"  # a NUL block
            + b"[1, 2, 3]\n"  # JSON, not an object
            + _line(1)
            + b"\n"
            + b"\x00" * 512
            + _line(2)  # a NUL block run into a good record: the record is kept
            + b"\n"
            + b'{"step": 99, "metr'  # torn last line (killed mid-write): cut off
        )
        client = SharpwatchClient(server.url, spool_dir=spool, flush_interval=0.005)
        with caplog.at_level(logging.WARNING, logger="trainer_hooks.client"):
            run = client.register_run("damaged", group_size=4)
            assert _wait(lambda: client.bad_lines == 4), client.bad_lines
            client.submit(_record(3))
            assert client.flush(timeout=20), client.flush_error
        stored = _stored(server.url, run.id, metrics=f"entropy,{BAD_LINES_METRIC}")
        assert [s["step"] for s in stored] == [0, 1, 2, 3]
        # The next step record after the skips carries their count.
        assert stored[3]["metrics"][BAD_LINES_METRIC] == 4.0
        assert BAD_LINES_METRIC not in stored[0]["metrics"] or (
            stored[0]["metrics"][BAD_LINES_METRIC] is None
        )
        messages = "\n".join(r.getMessage() for r in caplog.records)
        assert "invalid UTF-8" in messages
        assert "a block of 4096 NUL bytes" in messages
        assert "JSON list, not an object" in messages
        assert "torn last record" in messages
        assert client.restarts == 0
        client.close()


class _FailingTransport(httpx.BaseTransport):
    """A real transport that raises a non-HTTP error on the first ``failures`` step posts."""

    def __init__(self, failures: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.failures = failures

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/steps") and self.failures:
            self.failures -= 1
            raise RuntimeError("a bug in some layer below the client")
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_an_exception_in_the_sender_restarts_it(database: str, tmp_path: Path) -> None:
    with _server(database) as server:
        client = SharpwatchClient(
            server.url,
            spool_dir=tmp_path / "spool",
            transport=_FailingTransport(failures=2),
            flush_interval=0.005,
        )
        run = client.register_run("restarts", group_size=4)
        for step in range(20):
            client.submit(_record(step))
        assert client.flush(timeout=30), client.flush_error
        assert [s["step"] for s in _stored(server.url, run.id)] == list(range(20))
        assert client.restarts == 2
        assert (client.dropped, client.rejected, client.bad_lines) == (0, 0, 0)
        client.close()


def test_flush_says_why_it_failed(database: str, tmp_path: Path) -> None:
    port = _free_port()
    with _server(database, port):
        client = SharpwatchClient(
            f"http://127.0.0.1:{port}", spool_dir=tmp_path / "spool", max_backoff=0.2
        )
        client.register_run("why", group_size=4)
    for step in range(5):
        client.submit(_record(step))
    assert client.flush(timeout=0.5) is False
    assert client.flush_error is not None
    assert "5 step records not acknowledged after 0.5 s" in client.flush_error
    assert str(client.spool_path) in client.flush_error
    assert "ConnectError" in client.flush_error
    client.close(timeout=0.1)
    assert client.flush(timeout=0.1) is False
    assert client.flush_error is not None
    assert "closed" in client.flush_error


@pytest.mark.parametrize(
    ("offset_text", "stored_before", "expected_log"),
    [
        ("-5", 0, "offset -5 is negative"),
        ("999999999", 0, "past the end of the log"),
        ("999999999", 6, "past the end of the log"),  # some already stored: re-sent as dups
        ("not a number\x00", 0, "not an offset"),
        ('{"offset": 7, "last_step": 9}', 0, "falls inside a line"),
    ],
)
def test_a_bad_offset_file_is_repaired_from_the_log(
    database: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    offset_text: str,
    stored_before: int,
    expected_log: str,
) -> None:
    spool = tmp_path / "spool"
    with _server(database) as server:
        if stored_before:
            with SharpwatchClient(server.url, spool_dir=False) as first:
                first.register_run("offsets", group_size=4)
                for step in range(stored_before):
                    first.submit(_record(step))
                assert first.flush(timeout=20)
        log_path, offset_path = _spool_files(spool, server.url, "offsets")
        log_path.write_bytes(b"".join(_line(step) + b"\n" for step in range(10)))
        offset_path.write_text(offset_text)
        client = SharpwatchClient(server.url, spool_dir=spool, flush_interval=0.005)
        with caplog.at_level(logging.WARNING, logger="trainer_hooks.client"):
            run = client.register_run("offsets", group_size=4)
        assert client.spooled == 10  # the spool is in use, nothing was skipped
        assert client.flush(timeout=20), client.flush_error
        assert [s["step"] for s in _stored(server.url, run.id)] == list(range(10))
        assert (client.rejected, client.dropped) == (0, 0)
        assert expected_log in caplog.text
        client.close()


def test_an_older_clients_rows_in_the_spool_send_before_the_monitors_columns(
    database: str, tmp_path: Path
) -> None:
    """Issue 21: a spool written before the hooks sent columns holds records with rows; they go
    as they are, the monitor's new records as columns, and every value reads back."""
    with _server(database) as server:
        # The spool is $SHARPWATCH_SPOOL_DIR, the test's own directory (tests/conftest.py).
        log_path, _ = _spool_files(tmp_path / "spool", server.url, "shapes")
        old = [_record(step, queries=3) for step in range(3)]
        lines = [json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in old]
        log_path.write_bytes(b"".join(lines))
        with watch(server.url, name="shapes", group_size=4, kl_beta=0.04, commands=False) as run:
            results = [run.step(_inputs(seed)) for seed in range(3)]
        assert [r.step for r in results] == [3, 4, 5]  # numbered after the spool
        assert all(isinstance(r.record["queries"], dict) for r in results)  # columns
        assert run.run is not None
        sent = old + [r.record for r in results]
        for record in sent:
            detail = httpx.get(
                f"{server.url}/api/v1/runs/{run.run.id}/steps/{record['step']}"
            ).json()
            got = sorted(detail["queries"], key=lambda q: q["query_id"])
            want = sorted(rows_of(record), key=lambda q: q["query_id"])
            assert len(got) == len(want) > 0
            for stored, row in zip(got, want, strict=True):
                for field, value in row.items():
                    assert stored[field] == pytest.approx(value), (record["step"], field)


# -- failure 4: a batch over the body limit ----------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "small", "huge"),
    [(False, 40, 1500), (True, 160, 6000)],  # rows: ~3 KB each, ~200 KB together; columns alike
    ids=["rows", "columns"],
)
def test_a_batch_over_the_body_limit_is_split_and_one_huge_step_reported_once(
    database: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    columns: bool,
    small: int,
    huge: int,
) -> None:
    limit = 60_000
    port = _free_port()
    records = [_record(step, queries=small, columns=columns) for step in range(64)]
    records[20] = _record(20, queries=huge, columns=columns)  # ~100 KB alone: over the limit
    assert len(json.dumps(records[20])) > limit
    assert sum(len(json.dumps(r)) for r in records) > 2 * limit  # the batch is split too
    client = SharpwatchClient(
        f"http://127.0.0.1:{port}",
        spool_dir=tmp_path / "spool",
        batch_size=64,
        max_backoff=0.2,
        flush_interval=0.005,
    )
    assert client.open_run("split", group_size=4) is None  # service down: all 64 queue up
    for record in records:
        client.submit(record)
    with (
        caplog.at_level(logging.ERROR, logger="trainer_hooks.client"),
        _server(database, port, max_body_bytes=limit) as server,
    ):
        assert client.flush(timeout=60), client.flush_error
        assert client.run is not None
        stored = [s["step"] for s in _stored(server.url, client.run.id)]
    assert stored == [step for step in range(64) if step != 20]
    assert client.rejected == 1
    reports = [r.getMessage() for r in caplog.records if "body limit" in r.getMessage()]
    assert len(reports) == 1, reports
    assert "step 20" in reports[0]
    assert f"({huge} queries)" in reports[0]  # counted in either shape
    assert f"{limit} bytes" in reports[0]
    assert "SHARPWATCH_MAX_BODY_BYTES" in reports[0]
    client.close()


class _DropAfterSplitTransport(httpx.BaseTransport):
    """A real transport whose second step post after the first 413 fails to connect once, as a
    post timing out on a loaded machine does: the split batch is sent again later."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.after_413: int | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/steps") and self.after_413 is not None:
            self.after_413 += 1
            if self.after_413 == 2:
                raise httpx.ConnectError("connection reset", request=request)
        response = self.inner.handle_request(request)
        if response.status_code == 413 and self.after_413 is None:
            self.after_413 = 0
        return response

    def close(self) -> None:
        self.inner.close()


def test_an_oversized_step_is_counted_once_when_its_split_batch_is_sent_again(
    database: str, tmp_path: Path
) -> None:
    limit = 60_000
    port = _free_port()
    records = [_record(step, queries=40) for step in range(64)]
    records[20] = _record(20, queries=1500)
    client = SharpwatchClient(
        f"http://127.0.0.1:{port}",
        spool_dir=tmp_path / "spool",
        batch_size=64,
        max_backoff=0.2,
        flush_interval=0.005,
        transport=_DropAfterSplitTransport(),
    )
    assert client.open_run("split-again", group_size=4) is None  # all 64 queue up, one batch
    for record in records:
        client.submit(record)
    with _server(database, port, max_body_bytes=limit) as server:
        assert client.flush(timeout=60), client.flush_error
        assert client.run is not None
        stored = [s["step"] for s in _stored(server.url, client.run.id)]
        client.close()
    assert stored == [step for step in range(64) if step != 20]
    assert client.rejected == 1


# -- failure 3: resume with an unsent spool ---------------------------------------------------


def _inputs(seed: int) -> StepInputs:
    generator = torch.Generator().manual_seed(seed)
    rewards = (torch.rand(4, 4, generator=generator) > 0.5).float()
    return StepInputs(
        rewards=rewards,
        advantages=grpo_advantages(rewards),
        token_entropy=torch.rand(4, 4, 6, generator=generator),
        mask=torch.ones(4, 4, 6),
    )


def test_a_resumed_trainer_numbers_its_steps_after_its_unsent_spool(
    database: str, tmp_path: Path
) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # The spool is $SHARPWATCH_SPOOL_DIR, the test's own directory (tests/conftest.py).
    options: dict[str, Any] = {"group_size": 4, "kl_beta": 0.04, "commands": False}
    with _server(database, port):
        first = watch(url, name="resume-spool", **options)
        for seed in range(5):
            first.step(_inputs(seed))
        assert first.client is not None
        assert first.client.flush(timeout=20)
    # The service goes down; the trainer makes 20 more steps and dies (its client never
    # flushes: everything since step 5 is only in its spool).
    for seed in range(5, 25):
        first.step(_inputs(seed))
    first.client.close(timeout=0.2)
    with _server(database, port) as server:
        second = watch(url, name="resume-spool", **options)
        results = [second.step(_inputs(seed)) for seed in range(25, 30)]
        assert [r.step for r in results] == list(range(25, 30))
        second.close()
        assert second.run is not None
        stored = _stored(server.url, second.run.id)
    assert [s["step"] for s in stored] == list(range(30))
    expected = [_inputs(seed).token_entropy.mean().item() for seed in range(30)]  # type: ignore[union-attr]
    assert [s["metrics"]["entropy"] for s in stored] == pytest.approx(expected)


def test_a_trainer_restarted_while_the_service_is_down_numbers_after_its_spool(
    database: str, tmp_path: Path
) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    options: dict[str, Any] = {"group_size": 4, "kl_beta": 0.04, "commands": False}
    with _server(database, port), watch(url, name="resume-down", **options) as first:
        for seed in range(5):
            first.step(_inputs(seed))
    second = watch(url, name="resume-down", **options)  # service down: cannot register yet
    assert [second.step(_inputs(seed)).step for seed in range(5, 8)] == [5, 6, 7]
    with _server(database, port) as server:
        second.close()
        assert second.run is not None
        assert [s["step"] for s in _stored(server.url, second.run.id)] == list(range(8))


# -- the log itself: batched fsync, one writer per run ------------------------------------------


def test_fsync_is_batched_within_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[float] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(time.monotonic())
        real_fsync(fd)

    monkeypatch.setattr("trainer_hooks._spool.os.fsync", counting_fsync)
    client = SharpwatchClient(
        f"http://127.0.0.1:{_free_port()}",
        spool_dir=tmp_path / "spool",
        fsync_interval=0.25,
        max_backoff=0.2,
    )
    client.open_run("fsync", group_size=4)  # the service is down: records stay in the log
    start = time.monotonic()
    for step in range(100):
        client.submit(_record(step))
        time.sleep(0.01)
    last_submit = time.monotonic()
    assert _wait(lambda: bool(synced) and synced[-1] >= last_submit, timeout=0.25 + 1.0)
    # ~1 s of submissions, one fsync per 0.25 s at most (not one per record).
    assert 2 <= len([t for t in synced if t >= start]) <= 1 / 0.25 + 3
    assert client.spooled == 100
    client.close(timeout=0.1)


def test_a_second_process_on_the_same_run_keeps_to_memory(database: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with _server(database) as server:
        first = SharpwatchClient(server.url, spool_dir=spool)
        first.register_run("shared", group_size=4)
        second = SharpwatchClient(server.url, spool_dir=spool, flush_interval=0.005)
        run = second.register_run("shared", group_size=4)
        assert first.spool_path is not None
        assert second.spool_path is None  # the log is locked by the first
        for step in range(5):
            second.submit(_record(step))
        assert second.flush(timeout=20), second.flush_error
        assert [s["step"] for s in _stored(server.url, run.id)] == list(range(5))
        second.close()
        first.close()


def test_records_survive_many_compactions_of_the_log(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer_hooks import _spool

    monkeypatch.setattr(_spool, "COMPACT_BYTES", 1)  # empty the log whenever it is drained
    with _server(database) as server:
        client = SharpwatchClient(
            server.url, spool_dir=tmp_path / "spool", batch_size=7, flush_interval=0.001
        )
        run = client.register_run("compactions", group_size=4)
        for step in range(300):
            client.submit(_record(step, queries=1 + step % 5))  # lines of varying length
            if step % 13 == 0:
                time.sleep(0.01)
        assert client.flush(timeout=60), client.flush_error
        stored = _stored(server.url, run.id)
        assert [s["step"] for s in stored] == list(range(300))
        assert (client.rejected, client.dropped, client.bad_lines) == (0, 0, 0)
        client.close()


def test_the_log_reads_new_records_after_a_compaction(tmp_path: Path) -> None:
    from trainer_hooks._spool import WriteAheadLog

    wal = WriteAheadLog(tmp_path, "k", compact_bytes=1)
    wal.append([_line(0), _line(1)], 1)
    first = wal.read(wal.acked, wal.end, 1, None)  # the reader buffers more than it returns
    rest = wal.read(first.end, wal.end, 10, None)
    assert [json.loads(x)["step"] for x in first.lines + rest.lines] == [0, 1]
    wal.ack(rest.end, first.consumed + rest.consumed)
    wal.read(0, 1, 1, None)  # a read that leaves the old bytes in the reader's buffer
    assert wal.compact()
    wal.append([_line(2), _line(3)], 3)  # the same byte positions as steps 0 and 1
    chunk = wal.read(wal.acked, wal.end, 10, None)
    assert [json.loads(x)["step"] for x in chunk.lines] == [2, 3]
    wal.close()


def test_a_spool_that_cannot_be_written_keeps_records_in_memory_until_it_can(
    database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import errno

    from trainer_hooks._spool import WriteAheadLog

    def disk_full(self: WriteAheadLog, lines: list[bytes], last_step: int | None) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with _server(database) as server, caplog.at_level(logging.WARNING, "trainer_hooks.client"):
        client = SharpwatchClient(server.url, spool_dir=tmp_path / "spool", flush_interval=0.005)
        run = client.register_run("disk-full", group_size=4)
        for step in range(10):
            client.submit(_record(step))
        assert client.flush(timeout=20), client.flush_error
        with monkeypatch.context() as patch:
            patch.setattr(WriteAheadLog, "append", disk_full)
            for step in range(10, 30):
                client.submit(_record(step))
            assert client.flush(timeout=20), client.flush_error
        for step in range(30, 40):
            client.submit(_record(step))
        assert client.flush(timeout=20), client.flush_error
        assert [s["step"] for s in _stored(server.url, run.id)] == list(range(40))
        assert (client.dropped, client.rejected) == (0, 0)
        assert caplog.text.count("No space left on device") == 1  # said once, not per record
        assert "writes its spool" in caplog.text
        client.close()


def test_a_compaction_keeps_what_was_appended_while_offset_zero_was_written(
    tmp_path: Path,
) -> None:
    """The sender makes offset 0 durable outside the client's lock; a record the writer appends
    meanwhile stops the truncation, and a crash then re-sends the whole log, skipping none."""
    from trainer_hooks._spool import WriteAheadLog

    wal = WriteAheadLog(tmp_path, "k", compact_bytes=1)
    wal.append([_line(0), _line(1)], 1)
    chunk = wal.read(wal.acked, wal.end, 10, None)
    wal.ack(chunk.end, chunk.consumed)
    assert wal.compactable
    drained_at = wal.end
    wal.write_offset(0, wal.last_step, durable=True)
    wal.append([_line(2)], 2)  # the writer, between the offset's write and the truncation
    assert not wal.truncate(drained_at)
    assert (wal.acked, wal.pending, wal.offset_unsaved) == (drained_at, 1, True)
    wal._reader.close()  # the process dies here: no close(), the offset file says 0
    os.close(wal._fd)
    reopened = WriteAheadLog(tmp_path, "k", compact_bytes=1)
    assert (reopened.acked, reopened.pending) == (0, 3)
    chunk = reopened.read(reopened.acked, reopened.end, 10, None)
    assert [json.loads(x)["step"] for x in chunk.lines] == [0, 1, 2]
    assert reopened.truncate(drained_at) is False  # not fully acknowledged
    reopened.close()


def test_submit_does_not_wait_for_the_offset_files_disk_writes(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the sender is inside a slow offset write (a compaction's fsync and rename), the
    training thread's submit() returns at once, and every record still arrives in order."""
    import threading

    from trainer_hooks import _spool

    monkeypatch.setattr(_spool, "COMPACT_BYTES", 1)  # every drained log is compacted
    inside, release = threading.Event(), threading.Event()
    rename = Path.replace

    def slow_disk(self: Path, target: Any) -> Path:
        if str(target).endswith(".offset") and not release.is_set():
            inside.set()  # the offset file's rename (after its fsync, for a compaction)
            release.wait(30)
        return rename(self, target)

    monkeypatch.setattr(Path, "replace", slow_disk)
    with _server(database) as server:
        client = SharpwatchClient(server.url, spool_dir=tmp_path / "spool", flush_interval=0.001)
        run = client.register_run("slow-disk", group_size=4)
        try:
            client.submit(_record(0))
            assert inside.wait(20), "the sender never saved its offset"

            def train() -> None:
                for step in range(1, 20):
                    client.submit(_record(step))

            submitter = threading.Thread(target=train)
            submitter.start()
            submitter.join(timeout=5)
            assert not submitter.is_alive(), "submit() waited for the offset file's write"
            assert _wait(lambda: client.spooled == 19), "the writer waited for it too"
        finally:
            release.set()
        assert client.flush(timeout=30), client.flush_error
        assert [s["step"] for s in _stored(server.url, run.id)] == list(range(20))
        assert (client.rejected, client.dropped, client.bad_lines) == (0, 0, 0)
        client.close()
