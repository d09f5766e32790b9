"""A rotation in its own process that reports what became of its journal (the journal tests).

Run from the repository root as ``python -m tests.integration._journal_child JOURNAL IDS_FILE``.

Talks to the emulator named by ``MAGICWAN_BASE_URL``, ``MAGICWAN_ACCOUNT_ID`` and
``CLOUDFLARE_API_TOKEN`` (give each child its own token, and the emulator can tell whose
requests it saw); rotates every id in ``IDS_FILE`` (one per line) with the journal at
``JOURNAL``. Optional:

- ``MAGICWAN_TEST_GO``: a path. The child prints ``ready``, then waits until that path exists
  before it starts its rotation, so several children start theirs together;
- ``MAGICWAN_TEST_USER``: a user name. The child (started as root) drops to that user before it
  touches the journal.

Prints one JSON line at the end: ``{"result": "rotated" | "journal_error" | "failed", "stage":
"enter" | "run" | null, "error": str | null, "ok": n, "failed": n}`` and exits 0 when every
tunnel rotated, 3 on a JournalError, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import sys
from typing import Any

from magicwan import JournalError, MagicWAN


def _drop_to(user: str) -> None:
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


async def _wait_for(path: str) -> None:
    print("ready", flush=True)
    while not os.path.exists(path):
        await asyncio.sleep(0.005)


async def main(journal: str, ids_file: str) -> int:
    with open(ids_file) as fh:
        ids = [line.strip() for line in fh if line.strip()]
    user = os.environ.get("MAGICWAN_TEST_USER")
    if user:
        _drop_to(user)
    report: dict[str, Any] = {"result": "rotated", "stage": None, "error": None}
    report.update(ok=0, failed=0)
    client = MagicWAN(base_url=os.environ["MAGICWAN_BASE_URL"], rate_limit=None, max_retries=5)
    async with client:
        go = os.environ.get("MAGICWAN_TEST_GO")
        if go:
            await _wait_for(go)
        rotation = client.tunnels.ipsec.psk.rotate(
            os.environ["MAGICWAN_ACCOUNT_ID"], ids, concurrency=8, journal=journal
        )
        stage = "enter"
        try:
            async with rotation:
                stage = "run"
                async for outcome in rotation:
                    report["ok" if outcome.ok else "failed"] += 1
        except JournalError as exc:
            report.update(result="journal_error", stage=stage, error=str(exc))
    if report["result"] == "rotated" and (report["failed"] or report["ok"] != len(ids)):
        report["result"] = "failed"
    print(json.dumps(report), flush=True)
    return {"rotated": 0, "journal_error": 3}.get(report["result"], 1)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
