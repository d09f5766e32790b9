"""``--deliver-exec PROG`` is refused before any PSK is made when PROG cannot be run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import cli_emulator, magicwan

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(
    "body",
    [
        "#!/nonexistent/interpreter\nprint('never')\n",  # exec: ENOENT
        "echo no shebang\n",  # exec: ENOEXEC (no shell fallback for exec)
    ],
    ids=["bad-shebang", "no-shebang"],
)
async def test_deliver_exec_that_cannot_be_executed_is_refused_before_any_psk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, body: str
) -> None:
    # A script that exists and has an x bit, but whose interpreter is missing (a venv
    # moved, python3.11 removed) or that has no #! line: the kernel refuses to exec it.
    # The run is refused before it generates a PSK, rather than breaking halt_after
    # tunnels whose PSKs it then cannot deliver.
    prog = tmp_path / "push"
    prog.write_text(body)
    prog.chmod(0o700)
    journal = tmp_path / "j.jsonl"
    async with cli_emulator(monkeypatch, tunnels=3) as (emu, _):
        result = await magicwan(
            "psk",
            "rotate",
            "--all",
            "--journal",
            str(journal),
            "-q",
            "--deliver-exec",
            str(prog),
        )
        made = {t: emu.state.history(emu.account_id, t) for t in emu.tunnel_ids}
    assert result.code != 0
    assert not any(made.values()), (
        f"a PSK was generated before the unrunnable --deliver-exec was found out "
        f"(exit {result.code}): {sum(len(v) for v in made.values())} PSK(s) made"
    )
