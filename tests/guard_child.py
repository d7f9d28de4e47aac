"""Child process for multi-process protocol tests: submit one request or run a retry."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ops_platform.control.store import ControlStore
from ops_platform.guard.actions import ActionRequest
from ops_platform.guard.policy import RegoPolicy
from ops_platform.guard.protocol import ActionProtocol
from ops_platform.receipts.keys import KeyRing
from tests.guard_support import FileExecutor


def main() -> None:
    url, keys, effects, mode, payload, start_at = sys.argv[1:7]
    kill = "--kill" in sys.argv
    store = ControlStore(url)
    ring = KeyRing.load_or_create(Path(keys))
    ex = FileExecutor(Path(effects), kill_after_apply=kill)
    proto = ActionProtocol(store, ring.signer, RegoPolicy(), {a: ex for a in ("pause", "rollback", "freeze",
                                                                             "resume", "export_release")},
                           lease_seconds=1.0)
    while time.time() < float(start_at):  # line the racers up
        time.sleep(0.001)
    if mode == "submit":
        out = proto.submit(ActionRequest.from_json(payload))
        print(json.dumps({"status": out.status, "receipt_id": out.receipt_id}))
    else:
        print(json.dumps(proto.retry().__dict__))


if __name__ == "__main__":
    main()
