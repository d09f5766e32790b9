"""The journals of a directory (what ``--journal-dir`` fills): which files are journals,
and each tunnel's newest PSK across them, ordered by Cloudflare's ``last_generated_on`` or
the runs' numbers, never by the machine's clock alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import attrs

from magicwan.cli.common import UsageError, run_number
from magicwan.internal.timestamps import parse_datetime
from magicwan.journal import JournalError, JournalRecord, read_journal_contents

__all__ = ["JournalFile", "Key", "journals_in", "last_run", "left_open", "newest_psks"]

Key = tuple[str | None, str]


@attrs.frozen
class JournalFile:
    """One journal of a directory: its path, when it was created (by the clock of the
    machine: for people, and for ``--keep``), its run number (the order of the runs, see
    :func:`~magicwan.cli.common.fresh_journal`; None for a name without one), what it
    holds, and whether its last run finished (:func:`~magicwan.journal.run_finished`:
    None for a journal that cannot tell, as 0.1.0 wrote them)."""

    path: Path
    created: datetime
    records: dict[Key, JournalRecord] = attrs.field(repr=False)
    run: int | None = None
    finished: bool | None = None


def _created(path: Path) -> datetime:
    """The header's ``created`` time, else the file's modification time."""
    try:
        with path.open("rb") as file:
            header = json.loads(file.readline())
        return parse_datetime(header["created"])
    except (OSError, ValueError, TypeError, KeyError):
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def journals_in(directory: str) -> tuple[list[JournalFile], list[tuple[Path, str]]]:
    """The journals (``*.jsonl``) of ``directory``, newest first by their ``created`` time,
    and the ``*.jsonl`` files that are not journals (with why). Other files are not looked
    at."""
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"no such journal directory: {directory}")
    journals: list[JournalFile] = []
    skipped: list[tuple[Path, str]] = []
    for path in sorted(root.glob("*.jsonl")):
        if path.is_symlink() or not path.is_file():
            skipped.append((path, "not a regular file"))
            continue
        try:
            contents = read_journal_contents(path)
            created = _created(path)
        except (JournalError, OSError) as exc:
            skipped.append((path, str(exc)))
            continue
        journals.append(
            JournalFile(
                path=path,
                created=created,
                records=contents.records,
                run=run_number(path),
                finished=contents.finished,
            )
        )
    journals.sort(key=lambda j: (j.created, j.path.name), reverse=True)
    return journals, skipped


def last_run(journals: Iterable[JournalFile]) -> JournalFile | None:
    """The journal of the directory's latest run: by its run number (a clock may step
    back), by its creation time where none has one; None when there is no journal. The
    one ``--journal-dir DIR --resume`` may continue."""
    # max() keeps the first of equals, and journals_in lists the newest first.
    return max(journals, key=lambda j: (j.run is not None, j.run or 0), default=None)


@attrs.frozen
class _JournalCandidate:
    """What one journal says of one tunnel."""

    record: JournalRecord
    journal: JournalFile

    @property
    def stamp(self) -> datetime | None:
        """Cloudflare's ``last_generated_on`` of the PSK this record ends on; None when
        its last word has none (a pending set PSK, a request left open)."""
        record = self.record
        if record.pending_psk is not None or record.left_open:
            return None
        return record.last_generated_on

    @property
    def clock(self) -> tuple[datetime, datetime]:
        """The machine's clock: only to pick one of records nothing else orders."""
        return (self.record.last_time or self.journal.created, self.journal.created)


def _newer(candidate: _JournalCandidate, other: _JournalCandidate) -> bool:
    """``candidate`` is known to be newer than ``other``: by Cloudflare's ``last_generated_on`` when
    both have one, else by the run numbers of their journals. Never by the machine's
    clock, which may have stepped back between two runs."""
    if candidate.stamp is not None and other.stamp is not None:
        return candidate.stamp > other.stamp
    if candidate.journal.run is not None and other.journal.run is not None:
        return candidate.journal.run > other.journal.run
    return False


def _latest(candidates: list[_JournalCandidate]) -> list[_JournalCandidate]:
    """The candidates no other one is known to be newer than (all of them when the
    orders disagree): each may be the tunnel's latest word."""
    latest = [c for c in candidates if not any(_newer(d, c) for d in candidates)]
    return latest or candidates


def _pick(candidates: list[_JournalCandidate]) -> _JournalCandidate:
    """One of the latest candidates: when several may be, the machine's clock picks."""
    return max(_latest(candidates), key=lambda c: c.clock)


def newest_psks(
    journals: Iterable[JournalFile],
) -> tuple[dict[Key, JournalRecord], dict[Key, set[Path]]]:
    """Each tunnel's newest PSK across ``journals``: the record of its latest journal line
    that holds a PSK (``psk`` or a set's unconfirmed ``pending_psk``) and, when that record
    has only a pending PSK, the newest confirmed ``psk`` beside it. "Newest" goes by
    Cloudflare's ``last_generated_on`` when both records have one, else by the order of
    the runs (the run number in a journal's name); the machine's clock only picks one of
    records that neither orders. Also, per tunnel, the journals any of its possibly newest
    PSKs come from (which ``prune`` keeps: all of them when it cannot tell)."""
    holding: dict[Key, list[_JournalCandidate]] = {}
    confirmed: dict[Key, list[_JournalCandidate]] = {}
    for journal in journals:
        for key, record in journal.records.items():
            candidate = _JournalCandidate(record, journal)
            if record.psk is not None or record.pending_psk is not None:
                holding.setdefault(key, []).append(candidate)
            if record.psk is not None:
                # As a confirmed PSK, it is the record's rotated line that counts.
                bare = attrs.evolve(record, pending_psk=None, in_flight=False)
                confirmed.setdefault(key, []).append(_JournalCandidate(bare, journal))
    chosen: dict[Key, JournalRecord] = {}
    sources: dict[Key, set[Path]] = {}
    for key, candidates in holding.items():
        latest = _latest(candidates)
        sources[key] = {c.journal.path for c in latest}
        if any(c.record.psk is None for c in latest) and key in confirmed:
            sources[key] |= {c.journal.path for c in _latest(confirmed[key])}
        record = _pick(candidates).record
        if record.psk is None and key in confirmed:
            record = attrs.evolve(record, psk=_pick(confirmed[key]).record.psk)
        chosen[key] = record
    return chosen, sources


def left_open(journals: Iterable[JournalFile]) -> dict[Path, int]:
    """Journals whose tunnels' latest word may be a request left open (a run cut in
    flight, an unknown outcome): the tunnel may hold a PSK nobody recorded, and
    ``--resume`` with that journal reads it back. Per journal, how many such tunnels.
    "Latest" as in :func:`newest_psks`: when it cannot tell, any of them."""
    by_tunnel: dict[Key, list[_JournalCandidate]] = {}
    for journal in journals:
        for key, record in journal.records.items():
            by_tunnel.setdefault(key, []).append(_JournalCandidate(record, journal))
    counts: dict[Path, int] = {}
    for candidates in by_tunnel.values():
        for latest in _latest(candidates):
            if latest.record.left_open:
                path = latest.journal.path
                counts[path] = counts.get(path, 0) + 1
    return counts
