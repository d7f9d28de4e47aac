"""A local durable spool for requests the control store could not take.

Appends are fsynced JSON lines under an exclusive file lock, so several processes can spool
at once and nothing is lost on a crash; `drain` hands the items back and keeps only those
that still fail.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .actions import ActionRequest


class Spool:
    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, request: ActionRequest, error: str) -> None:
        line = json.dumps({"request": json.loads(request.to_json()), "error": error, "attempts": 1}) + "\n"
        with self._locked(), open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    @property
    def rejected_path(self) -> Path:
        """Where lines that are no request go (with the reason), never lost, never replayed."""
        return self.path.with_suffix(".rejected.jsonl")

    def items(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self._locked():
            return [json.loads(x) for x in self.path.read_text(encoding="utf-8").splitlines() if x.strip()]

    def waiting(self) -> int:
        """Lines a drain would handle, unparsed: a line that is no request counts too (the drain
        moves it aside)."""
        # Unlocked: a drain holds the lock while it runs every request, and swaps the file in
        # whole (os.replace), so a read sees the file before or after it, never half of it.
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 0
        return sum(1 for x in text.splitlines() if x.strip())

    def drain(self, handle: Callable[[ActionRequest], bool]) -> tuple[int, int]:
        """Call `handle` for each item; keep those for which it returns False. (done, left).
        A line that is no request (not JSON, not a request's fields) is moved to
        ``rejected_path`` with the reason and counts as done: it can never succeed."""
        with self._locked():
            if not self.path.exists():
                return 0, 0
            lines = [x for x in self.path.read_text(encoding="utf-8").splitlines() if x.strip()]
            left = []
            for line in lines:
                try:
                    item = json.loads(line)
                    req = ActionRequest.from_json(json.dumps(item["request"]))
                except (ValueError, TypeError, KeyError) as exc:
                    with open(self.rejected_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps({"line": line, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
                        f.flush()
                        os.fsync(f.fileno())
                    continue
                if not handle(req):
                    item["attempts"] = int(item.get("attempts") or 0) + 1
                    left.append(item)
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(i) + "\n" for i in left)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            return len(lines) - len(left), len(left)
