"""The client's write-ahead log: every step record is appended here before it is sent.

One log per run (keyed by service URL, project and run name): ``KEY.jsonl`` holds one JSON
object per line, ``KEY.offset`` the position of the first record the service has not yet
acknowledged (``{"offset": N, "last_step": S}``; a bare integer is read too). Records are sent
from the log and the offset advances only on the service's acknowledgement, so a trainer that
is killed finds its unsent records here when it restarts and replays them first, in order.

Damage is repaired, never trusted and never fatal: a torn last line (a kill in mid-write) is cut
off; an offset file that cannot be read, is negative, points past the end or into the middle of
a line is replaced by a safe offset found from the log itself (re-sending what the service already
holds is harmless: identical re-sends are duplicates); a line that is not a JSON object (invalid
UTF-8, a block of NUL bytes, truncated JSON, an array) is skipped and reported by :meth:`read`.

Threads: the client's writer thread calls :meth:`append` and :meth:`sync`, its sender thread
:meth:`read`, :meth:`ack`, :meth:`write_offset` and :meth:`truncate`; the client serialises
:meth:`append`, :meth:`ack` and :meth:`truncate` under its lock. :meth:`read` needs no lock: it
only reads bytes before :attr:`end`, which never change until :meth:`truncate`, and only the
sender truncates. :meth:`write_offset` (the offset file's write, fsync and rename: the slow
part) needs only the client's offset lock, so the training thread never waits for the disk:
a compaction makes offset 0 durable first, then truncates under the client's lock only if
nothing was appended meanwhile (:meth:`compact` does both, for a single thread).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("trainer_hooks.client")

_STEP = re.compile(rb'"step":(-?\d+)[,}]')
BODY_PREFIX = b'{"steps":['
BODY_SUFFIX = b"]}"
COMPACT_BYTES = 4 << 20  # a fully acknowledged log at least this big is emptied


def default_spool_dir() -> Path:
    configured = os.environ.get("SHARPWATCH_SPOOL_DIR")
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sharpwatch" / "spool"


def spool_key(base_url: str, project: str, name: str) -> str:
    return hashlib.sha256(f"{base_url}\0{project}\0{name}".encode()).hexdigest()[:24]


def body_size(lines: list[bytes]) -> int:
    """Bytes of ``{"steps":[line,line,...]}``."""
    return len(BODY_PREFIX) + sum(len(x) for x in lines) + max(0, len(lines) - 1) + len(BODY_SUFFIX)


def encode_body(lines: list[bytes]) -> bytes:
    return BODY_PREFIX + b",".join(lines) + BODY_SUFFIX


def step_of(line: bytes) -> int | None:
    """The step number of a serialised record (for logs and numbering), without parsing it."""
    match = _STEP.search(line, 0, 200)
    return int(match.group(1)) if match else None


class SpoolBusyError(OSError):
    """Another live process holds this run's log."""


@dataclass
class Chunk:
    """What :meth:`WriteAheadLog.read` found: records to send and lines it skipped."""

    lines: list[bytes] = field(default_factory=list)  # serialised records, no newline
    end: int = 0  # offset just past the last line consumed (sent or skipped)
    consumed: int = 0  # log lines consumed, records and skipped lines together
    bad: list[str] = field(default_factory=list)  # one description per skipped line


def check_line(line: bytes) -> tuple[bytes | None, str | None]:
    """A log line as a record to send, or why it is not one. A leading run of NUL bytes (a
    block the file system zero-filled after a crash) is reported and the rest still tried."""
    problem = None
    if line.startswith(b"\x00"):
        stripped = line.lstrip(b"\x00")
        problem = f"a block of {len(line) - len(stripped)} NUL bytes"
        line = stripped
        if not line.strip():
            return None, problem
    if b"\x00" in line:
        return None, "NUL bytes inside the line"
    try:
        value = json.loads(line)
    except UnicodeDecodeError as exc:
        return None, f"invalid UTF-8 at byte {exc.start}"
    except ValueError as exc:
        return None, f"not JSON ({exc})"
    if not isinstance(value, dict):
        return None, f"JSON {type(value).__name__}, not an object"
    return line, problem


class WriteAheadLog:
    """One run's log on disk. See the module docstring for the format and the repairs."""

    def __init__(self, directory: Path, key: str, *, compact_bytes: int | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{key}.jsonl"
        self.offset_path = directory / f"{key}.offset"
        self.compact_bytes = COMPACT_BYTES if compact_bytes is None else compact_bytes
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    busy = f"another process is using the spool {self.path}"
                    raise SpoolBusyError(busy) from None
            self.repairs: list[str] = []
            self._offset_problem: str | None = None
            self.end = self._cut_torn_tail()
            stored_offset, self.last_step = self._read_offset_file()
            self.acked = self._repair_offset(stored_offset)
            self.pending, last_in_log = self._scan()
            if last_in_log is not None:
                self.last_step = max(last_in_log, self.last_step or last_in_log)
            # Lines before this were written by an earlier process: check each before sending.
            self.trusted_from = self.end
            self._reader = open(self.path, "rb")  # noqa: SIM115 - closed in close()
            self._dirty = False
            self._saved_offset = stored_offset
            self._closed = False
        except BaseException:
            os.close(self._fd)
            raise
        for repair in self.repairs:
            log.warning("sharpwatch spool %s: %s", self.path, repair)

    # -- opening ------------------------------------------------------------------------------
    def _cut_torn_tail(self) -> int:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return 0
        with open(self.path, "rb") as handle:
            back = min(size, 1 << 16)
            handle.seek(size - back)
            tail = handle.read(back)
            if tail.endswith(b"\n"):
                return size
            cut = size - back + tail.rfind(b"\n") + 1 if b"\n" in tail else -1
            while cut < 0 and back < size:  # a very long torn line: look further back
                back = min(size, back * 4)
                handle.seek(size - back)
                tail = handle.read(back)
                cut = size - back + tail.rfind(b"\n") + 1 if b"\n" in tail else -1
        cut = max(cut, 0)
        os.ftruncate(self._fd, cut)
        self.repairs.append(
            f"cut off a torn last record of {size - cut} bytes (the trainer was killed while "
            "writing it; its step() had not returned)"
        )
        return cut

    def _read_offset_file(self) -> tuple[int | None, int | None]:
        """The stored offset (None when absent; -1 when unreadable) and the last step."""
        try:
            text = self.offset_path.read_bytes().decode("utf-8").strip()
        except FileNotFoundError:
            return None, None
        except (OSError, UnicodeDecodeError) as exc:
            self._offset_problem = f"offset file unreadable ({exc})"
            return -1, None
        try:
            if text.startswith("{"):
                data: Any = json.loads(text)
                offset, last = data["offset"], data.get("last_step")
                if not isinstance(offset, int) or not (last is None or isinstance(last, int)):
                    raise ValueError("offset and last_step must be integers")
                return offset, last
            return int(text), None
        except (ValueError, KeyError, TypeError) as exc:
            self._offset_problem = f"offset file holds {text[:80]!r}, not an offset ({exc})"
            return -1, None

    def _repair_offset(self, offset: int | None) -> int:
        if offset is None:
            return 0
        if offset < 0 or offset > self.end:
            problem = self._offset_problem or (
                f"offset {offset} is negative"
                if offset < 0
                else f"offset {offset} is past the end of the log ({self.end} bytes)"
            )
            self.repairs.append(
                f"{problem}; re-sending the whole log (the service drops what it already holds)"
            )
            return 0
        if offset == 0 or offset == self.end:
            return offset
        with open(self.path, "rb") as handle:
            handle.seek(offset - 1)
            if handle.read(1) == b"\n":
                return offset
            start = max(0, offset - (1 << 20))
            handle.seek(start)
            before = handle.read(offset - start)
        line_start = start + before.rfind(b"\n") + 1 if b"\n" in before else 0
        self.repairs.append(
            f"offset {offset} falls inside a line; re-sending from that line's start ({line_start})"
        )
        return line_start

    def _scan(self) -> tuple[int, int | None]:
        """Unacknowledged lines, and the highest step anywhere in the log."""
        pending = 0
        last: int | None = None
        with open(self.path, "rb") as handle:
            position = 0
            for line in handle:
                step = step_of(line)
                if step is not None:
                    last = step if last is None else max(last, step)
                if position >= self.acked and line.strip():
                    pending += 1
                position += len(line)
        return pending, last

    # -- writing ------------------------------------------------------------------------------
    def append(self, lines: list[bytes], last_step: int | None) -> None:
        """Append serialised records (no newlines inside). Caller holds the client's lock."""
        payload = b"".join(line + b"\n" for line in lines)
        view = memoryview(payload)
        written = 0
        try:
            while written < len(payload):
                written += os.write(self._fd, view[written:])
        except OSError:
            if written:  # never leave half a line behind for the next record to join
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self.end)
            raise
        self.end += len(payload)
        self.pending += len(lines)
        self._dirty = True
        if last_step is not None:
            self.last_step = last_step if self.last_step is None else max(self.last_step, last_step)

    @property
    def dirty(self) -> bool:
        """Written since the last fsync."""
        return self._dirty

    def sync(self) -> None:
        """fsync the log (a no-op when nothing was written since the last sync)."""
        if self._dirty:
            self._dirty = False
            os.fsync(self._fd)

    def sync_fd(self) -> None:
        """fsync without touching any state (for signal handlers)."""
        with contextlib.suppress(OSError):
            os.fsync(self._fd)

    # -- sending ------------------------------------------------------------------------------
    def read(self, start: int, end: int, limit: int, max_body: int | None) -> Chunk:
        """Records from ``start`` (a line start) up to ``end``: at most ``limit``, and no more
        than fit a body of ``max_body`` bytes (but at least one). Lines before
        :attr:`trusted_from` are checked first; bad ones are skipped and described."""
        chunk = Chunk(end=start)
        self._reader.seek(start)
        position = start
        size = len(BODY_PREFIX) + len(BODY_SUFFIX)
        while position < end and len(chunk.lines) < limit:
            raw = self._reader.readline()
            if not raw:
                break
            line = raw.rstrip(b"\n")
            record: bytes | None = None
            problem = None
            if line.strip():
                if position < self.trusted_from:
                    record, problem = check_line(line)
                else:
                    record = line
            if record is not None:
                extra = len(record) + (1 if chunk.lines else 0)
                if chunk.lines and max_body is not None and size + extra > max_body:
                    break
                chunk.lines.append(record)
                size += extra
            if problem is not None:
                chunk.bad.append(f"line at byte {position}: {problem}")
            position += len(raw)
            chunk.end = position
            chunk.consumed += 1 if line.strip() else 0
        return chunk

    def ack(self, end: int, count: int) -> None:
        """The service holds everything before ``end`` (``count`` lines). Caller holds the lock."""
        self.acked = max(self.acked, end)
        self.pending = max(0, self.pending - count)

    def save_offset(self, durable: bool = False) -> None:
        """Persist :attr:`acked` (and the last step) atomically."""
        if self._saved_offset == self.acked and not durable:
            return
        self.write_offset(self.acked, self.last_step, durable=durable)

    def write_offset(self, offset: int, last_step: int | None, *, durable: bool = False) -> None:
        """Persist ``offset`` (write a temporary file, rename it over the offset file; ``durable``:
        fsync it first). Reads no state the client's lock guards, so the sender calls it outside
        that lock; the client serialises callers with its offset lock. A no-op once closed."""
        if self._closed:
            return
        temporary = self.offset_path.with_suffix(".offset.tmp")
        data = json.dumps({"offset": offset, "last_step": last_step})
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        temporary.replace(self.offset_path)
        self._saved_offset = offset

    @property
    def offset_unsaved(self) -> bool:
        """The offset file is behind :attr:`acked`."""
        return self._saved_offset != self.acked

    @property
    def compactable(self) -> bool:
        """Everything is acknowledged and the log is big enough to empty."""
        return self.acked == self.end >= self.compact_bytes

    def truncate(self, expected_end: int) -> bool:
        """Empty the log if it is still fully acknowledged at ``expected_end`` (nothing was
        appended since offset 0 was made durable); False otherwise. Caller holds the lock."""
        if self._closed or not self.acked == self.end == expected_end:
            return False
        os.ftruncate(self._fd, 0)
        # A buffered reader may still hold the old bytes of these positions: start afresh.
        self._reader.close()
        self._reader = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        self.acked = 0
        self.end = 0
        self.trusted_from = 0
        self.pending = 0
        return True

    def compact(self) -> bool:
        """When everything is acknowledged and the log is big, empty it. Offset 0 is made durable
        first: a crash in between re-sends, it never skips. For a single thread; the client
        calls :meth:`write_offset` and :meth:`truncate` itself, under different locks."""
        if not self.compactable:
            return False
        end = self.end
        self.write_offset(0, self.last_step, durable=True)
        return self.truncate(end)

    def close(self) -> None:
        """Persist the offset; remove the log once everything in it was acknowledged (the
        offset file stays, so a restart while the service is down still knows the last step)."""
        with contextlib.suppress(OSError):
            self.sync()
        drained = self.acked >= self.end
        if drained:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.acked = 0
            self.end = 0
        with contextlib.suppress(OSError):
            self.save_offset(durable=True)
        self._closed = True
        self._reader.close()
        os.close(self._fd)
