"""A rotation in its own process, for the crash tests.

Run from the repository root as ``python -m tests.integration._rotate_child JOURNAL IDS_FILE``.

Talks to the emulator named by ``MAGICWAN_BASE_URL``, ``MAGICWAN_ACCOUNT_ID`` and
``CLOUDFLARE_API_TOKEN``; rotates every id in ``IDS_FILE`` (one per line) with the journal at
``JOURNAL``; prints one JSON summary line at the end and exits 0 only if every tunnel rotated.
The client's clock and sleep run ``MAGICWAN_TEST_FAST`` times faster (a ``ScaledClock``: backoff,
cooldowns).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from magicwan import MagicWAN
from tests.support.clock import ScaledClock


async def main(journal: str, ids_file: str) -> int:
    fast = ScaledClock(float(os.environ.get("MAGICWAN_TEST_FAST", "1")))

    with open(ids_file) as fh:
        ids = [line.strip() for line in fh if line.strip()]
    counts = {"ok": 0, "failed": 0, "skipped": 0, "verified": 0}
    client = MagicWAN(
        base_url=os.environ["MAGICWAN_BASE_URL"],
        rate_limit=None,
        max_retries=12,
        clock=fast,
        sleep=fast.sleep,
    )
    async with client:
        async for outcome in client.tunnels.ipsec.psk.rotate(
            os.environ["MAGICWAN_ACCOUNT_ID"], ids, concurrency=8, journal=journal
        ):
            counts["ok" if outcome.ok else "failed"] += 1
            counts["skipped"] += outcome.skipped
            counts["verified"] += outcome.verified
    print(json.dumps(counts), flush=True)
    return 0 if counts["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
