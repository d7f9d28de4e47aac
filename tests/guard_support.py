"""Test doubles for the action protocol: a real, file-backed, idempotent executor."""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path

from ops_platform.guard.actions import ActionRequest, ExecutionResult


class FileExecutor:
    """Applies an action by writing a marker file; the effect log proves exactly-once.

    Idempotent per action id: a retry after a crash finds the marker and does not apply the
    effect again. With `kill_after_apply`, the process SIGKILLs itself right after the
    effect and before any receipt, as a crash mid-action would.
    """

    def __init__(self, folder: Path, kill_after_apply: bool = False, fail: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.kill_after_apply = kill_after_apply
        self.fail = fail

    def apply(self, action_id: str, request: ActionRequest) -> ExecutionResult:
        if self.fail:
            raise RuntimeError("executor failure injected")
        marker = self.folder / f"{action_id}.applied"
        with open(self.folder / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not marker.exists():
                marker.write_text(f"{request.action} {request.target_id}\n")
                with open(self.folder / "effects.log", "a") as log:
                    log.write(f"{action_id}\n")
                    log.flush()
                    os.fsync(log.fileno())
        if self.kill_after_apply:
            os.kill(os.getpid(), signal.SIGKILL)
        return ExecutionResult(detail={"marker": marker.name}, files=(marker,))

    def effects(self) -> list[str]:
        log = self.folder / "effects.log"
        return log.read_text().split() if log.exists() else []
