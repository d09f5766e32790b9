"""A rotation in its own process, for the crash and disk tests.

Run from the repository root as ``python -m tests.integration._rotate_child JOURNAL IDS_FILE``.

Talks to the emulator named by ``MAGICWAN_BASE_URL``, ``MAGICWAN_ACCOUNT_ID`` and
``CLOUDFLARE_API_TOKEN``; rotates every id in ``IDS_FILE`` (one per line) with the journal at
``JOURNAL``; prints one JSON summary line at the end and exits 0 only if every tunnel rotated.
The client's clock and sleep run ``MAGICWAN_TEST_FAST`` times faster (a ``ScaledClock``: backoff,
cooldowns, settle windows). Optional:

- ``MAGICWAN_TEST_METHOD`` (``generate`` or ``set``) and ``MAGICWAN_TEST_BATCH``;
- ``MAGICWAN_TEST_OUTCOMES``: a file the child appends every outcome to as it comes (tunnel id,
  state, PSK): what the caller holds, for tests that check no PSK is lost to the caller; ``-``
  writes them to standard output instead (a pipe: no file size limit applies to it);
- ``MAGICWAN_TEST_FSIZE``: a file size limit (``RLIMIT_FSIZE``) in bytes, with ``SIGXFSZ``
  ignored, so a write past it fails with a real ``EFBIG`` from the kernel (a disk that fills).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sys
from typing import Any

from magicwan import JournalError, MagicWAN
from tests.support.clock import ScaledClock


async def main(journal: str, ids_file: str) -> int:
    fast = ScaledClock(float(os.environ.get("MAGICWAN_TEST_FAST", "1")))
    method: Any = os.environ.get("MAGICWAN_TEST_METHOD", "generate")
    batch = int(os.environ.get("MAGICWAN_TEST_BATCH", "100"))
    outcomes_file = os.environ.get("MAGICWAN_TEST_OUTCOMES")

    with open(ids_file) as fh:
        ids = [line.strip() for line in fh if line.strip()]
    counts = {"ok": 0, "failed": 0, "skipped": 0, "verified": 0, "unrecorded": 0}
    if outcomes_file == "-":
        out: Any = sys.stdout
    else:
        out = open(outcomes_file, "a") if outcomes_file else None  # noqa: SIM115 - closed below
    limit = os.environ.get("MAGICWAN_TEST_FSIZE")
    if limit is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
    client = MagicWAN(
        base_url=os.environ["MAGICWAN_BASE_URL"],
        rate_limit=None,
        max_retries=12,
        clock=fast,
        sleep=fast.sleep,
    )
    journal_error = None
    try:
        async with client:
            rotation = client.tunnels.ipsec.psk.rotate(
                os.environ["MAGICWAN_ACCOUNT_ID"],
                ids,
                concurrency=8,
                journal=journal,
                resume=True,
                method=method,
                batch_size=batch,
            )
            async with rotation:
                async for outcome in rotation:
                    counts["ok" if outcome.ok else "failed"] += 1
                    counts["skipped"] += outcome.skipped
                    counts["verified"] += outcome.verified
                    counts["unrecorded"] += outcome.state.value == "unrecorded"
                    if out is not None:
                        line = {
                            "tunnel_id": outcome.tunnel_id,
                            "state": outcome.state.value,
                            "psk": outcome.result.psk if outcome.result else None,
                        }
                        out.write(json.dumps(line) + "\n")
                        out.flush()
    except JournalError as exc:
        journal_error = str(exc)
    finally:
        if out is not None and out is not sys.stdout:
            out.close()
    print(json.dumps({**counts, "journal_error": journal_error}), flush=True)
    return 0 if counts["failed"] == 0 and journal_error is None else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
