"""An append-only on-disk spool of step records (JSON lines) with a persisted read offset.

One spool per run (keyed by service URL, project and run name), so a trainer that restarts
finds what it could not send before and replays it first, in order. Only the client's sender
thread touches a spool.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def default_spool_dir() -> Path:
    configured = os.environ.get("SHARPWATCH_SPOOL_DIR")
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sharpwatch" / "spool"


def spool_key(base_url: str, project: str, name: str) -> str:
    return hashlib.sha256(f"{base_url}\0{project}\0{name}".encode()).hexdigest()[:24]


class Spool:
    def __init__(self, directory: Path, key: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{key}.jsonl"
        self._offset_path = directory / f"{key}.offset"
        self._offset = 0
        if self._offset_path.exists():
            try:
                self._offset = int(self._offset_path.read_text().strip() or 0)
            except ValueError:
                self._offset = 0
        size = self.path.stat().st_size if self.path.exists() else 0
        self._offset = min(self._offset, size)
        self.pending = self._count_pending()

    def _count_pending(self) -> int:
        if not self.path.exists():
            return 0
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            return sum(1 for line in handle if line.strip())

    @property
    def pending_bytes(self) -> int:
        size = self.path.stat().st_size if self.path.exists() else 0
        return size - self._offset

    def append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        payload = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        self.pending += len(records)

    def peek(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Up to ``limit`` records after the offset, and the offset just past them."""
        records: list[dict[str, Any]] = []
        if not self.path.exists():
            return records, self._offset
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            end = self._offset
            while len(records) < limit:
                line = handle.readline()
                if not line:
                    break
                end += len(line)
                if not line.endswith(b"\n"):
                    break  # a torn last line from a crash mid-write: leave it
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
        return records, end

    def consume(self, end: int, count: int) -> None:
        """Mark everything before ``end`` as sent; delete the files once all is sent."""
        self._offset = end
        self.pending = max(0, self.pending - count)
        if self._offset >= (self.path.stat().st_size if self.path.exists() else 0):
            self.path.unlink(missing_ok=True)
            self._offset_path.unlink(missing_ok=True)
            self._offset = 0
            self.pending = 0
            return
        temporary = self._offset_path.with_suffix(".offset.tmp")
        temporary.write_text(str(self._offset))
        temporary.replace(self._offset_path)
