"""The examples run, against their embedded emulator, and never print a PSK."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from magicwan.journal import read_journal

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# A PSK is 32 letters and digits; ids are 32 lowercase hex digits.
TOKEN = re.compile(r"\b[A-Za-z0-9]{32}\b")
HEX_ID = re.compile(r"[0-9a-f]{32}")


def run_example(name: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CLOUDFLARE_", "MAGICWAN_"))  # never reach real Cloudflare
    }
    return subprocess.run(  # noqa: S603 - our interpreter, our example files
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        check=False,
    )


def assert_only_ids(text: str) -> None:
    """Every 32-character token printed is an id, none is a PSK."""
    for token in TOKEN.findall(text):
        assert HEX_ID.fullmatch(token), "a PSK-like token was printed"


def test_generate_psk_example() -> None:
    done = run_example("generate_psk.py")

    assert done.returncode == 0, done.stderr
    assert "using the embedded emulator" in done.stdout
    assert "validate_only: a PSK can be generated" in done.stdout
    assert "a 32-character PSK" in done.stdout
    assert_only_ids(done.stdout + done.stderr)


def test_rotate_all_example(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    done = run_example("rotate_all.py", MAGICWAN_JOURNAL=str(journal))

    assert done.returncode == 0, done.stderr
    assert "rotated 20/20 tunnels" in done.stdout
    assert "20/20 delivered PSKs match the emulator's" in done.stdout
    assert done.stdout.count("delivered ") == 21  # 20 deliveries and the check
    psks = [record.psk for record in read_journal(journal).values() if record.psk]
    assert len(psks) == 20
    for psk in psks:
        assert psk not in done.stdout + done.stderr
    assert_only_ids(done.stdout + done.stderr)


@pytest.mark.parametrize("name", ["generate_psk.py", "rotate_all.py"])
def test_examples_are_documented(name: str) -> None:
    text = (EXAMPLES / name).read_text()
    assert text.startswith('"""')
    assert "emulator" in text.split('"""')[1]
