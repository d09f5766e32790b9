"""The command line's parser (``magicwan.cli.parser`` and the command tree of
``magicwan.cli.app``): no abbreviations, suggestions, the subcommand's own usage, options
anywhere, value types, help that tells the truth. Nothing here sends a request."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

from magicwan import cli
from magicwan.cli.parser import halt_after, rate_limit
from magicwan.cli.status import ExitStatus
from magicwan.ratelimit import CLOUDFLARE_BUDGET
from tests.support.cli import magicwan

ACCOUNT = "a" * 32
TUNNEL = "b" * 32


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command path of ``parser`` and its parser.

    argparse offers no public way to list subcommands: this walks its ``_actions``.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(cli.build_parser()))
LEAVES = [path for path, parser in COMMANDS.items() if parser.get_default("handler") is not None]


def test_the_command_tree() -> None:
    assert set(COMMANDS) == {
        ("psk",),
        ("psk", "generate"),
        ("psk", "set"),
        ("psk", "rotate"),
        ("psk", "audit"),
        ("tunnels",),
        ("tunnels", "list"),
        ("journal",),
        ("journal", "show"),
        ("journal", "export"),
        ("journal", "prune"),
        ("demo",),
    }


@pytest.mark.asyncio
@pytest.mark.parametrize("command", list(COMMANDS), ids=" ".join)
async def test_every_command_has_help_and_is_listed_by_its_parent(command: tuple[str, ...]) -> None:
    own = await magicwan(*command, "--help")
    assert own.code == 0, own.err
    assert own.out.startswith(f"usage: magicwan {' '.join(command)}")
    parent = await magicwan(*command[:-1], "--help")
    assert parent.code == 0, parent.err
    assert f"    {command[-1]} " in parent.out or f"    {command[-1]}\n" in parent.out


@pytest.mark.asyncio
async def test_the_top_level_help_documents_every_exit_status_and_the_environment() -> None:
    result = await magicwan("--help")
    for status in ExitStatus:
        assert f"  {int(status):>3}  " in result.out, status
    assert "4 > 130 > 5 > 3 > 1" in result.out
    for name in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_BASE_URL"):
        assert name in result.out


@pytest.mark.asyncio
async def test_demo_help_lists_only_what_demo_uses() -> None:
    result = await magicwan("demo", "--help")
    for ignored in ("--base-url", "--max-retry-after", "--json", "--journal-dir"):
        assert ignored not in result.out
    assert "default: off, so the demo runs at full speed" in result.out


@pytest.mark.asyncio
async def test_rotate_help_says_what_validate_only_costs_and_the_defaults() -> None:
    result = await magicwan("psk", "rotate", "--help")
    text = " ".join(result.out.split())
    assert "costs one request per tunnel (or batch) of the 1,200-per-300-seconds budget" in text
    assert f"default: Cloudflare's {CLOUDFLARE_BUDGET[0]}/{CLOUDFLARE_BUDGET[1]:g}" in text
    assert "start no new tunnel after N failed ones (default: 5)" in text
    assert result.out.startswith(
        "usage: magicwan psk rotate [ACCOUNT] [TUNNEL ...] [--all | --name GLOB]"
    )


@pytest.mark.asyncio
async def test_rotate_help_says_what_the_deliver_exec_program_reads() -> None:
    """The PSK, then a newline, then end of file (magicwan.delivery.Command writes that)."""
    result = await magicwan("psk", "rotate", "--help")
    text = " ".join(result.out.split())
    assert "the PSK and a newline on its stdin, then end of file" in text


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["psk", "rotate", "--all", "--conc", "4"], "--conc (did you mean --concurrency?)"),
        (["psk", "rotate", "--all", "--jornal", "j"], "--jornal (did you mean --journal?)"),
        (
            ["psk", "rotate", "--all", "--journal-d=x"],
            "--journal-d=... (did you mean --journal-dir?)",
        ),
        (["tunnels", "list", "--jsn"], "--jsn (did you mean --json?)"),
        (["journal", "export", "f", "--froce"], "--froce (did you mean --force?)"),
    ],
)
async def test_no_abbreviations_and_a_suggestion_in_the_commands_usage(
    argv: list[str], suggestion: str
) -> None:
    result = await magicwan(*argv)
    assert result.code == 2
    assert f"unrecognized arguments: {suggestion}" in result.err
    command = " ".join(argv[:2]) if argv[0] != "demo" else "demo"
    assert result.err.startswith(f"usage: magicwan {command}")  # the command's own usage


@pytest.mark.asyncio
async def test_a_value_after_an_unknown_option_is_not_echoed() -> None:
    secret = "pskLIKEvalue0123456789abcdefghij"
    result = await magicwan("psk", "set", TUNNEL, "--psk", secret, "--journal", "j")
    assert result.code == 2
    assert secret not in result.err
    assert "<its value, not shown>" in result.err


@pytest.mark.asyncio
async def test_options_before_the_command_are_pointed_after_it() -> None:
    result = await magicwan("--json", "tunnels", "list")
    assert result.code == 2
    assert "options go after the command: magicwan tunnels list ... --json" in result.err


def test_options_anywhere_among_the_positionals() -> None:
    parser = cli.build_parser()
    first = parser.parse_args(["psk", "rotate", ACCOUNT, "--all", TUNNEL, "--json"])
    second = parser.parse_args(["psk", "rotate", "--json", ACCOUNT, TUNNEL, "--all"])
    for args in (first, second):
        assert (args.account, args.tunnels, args.all, args.json) == (ACCOUNT, [TUNNEL], True, True)


@pytest.mark.parametrize("text", ["0", "none", "None", "-5/1", "5/0", "5/-1", "fast", "0/10", ""])
def test_rate_limit_refuses_everything_but_n_per_seconds_and_off(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected REQUESTS/SECONDS"):
        rate_limit(text)


def test_rate_limit_forms() -> None:
    assert rate_limit("off") is None
    assert rate_limit("OFF") is None
    assert rate_limit("100/1") == (100, 1.0)


def test_halt_after_forms() -> None:
    assert halt_after("off") is None
    assert halt_after("3") == 3
    for bad in ("0", "-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            halt_after(bad)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate-limit", "-5/1"], "argument --rate-limit: invalid rate limit '-5/1'"),
        (["--rate-limit", "0"], "argument --rate-limit: invalid rate limit '0'"),
        (["--rate-limit", "none"], "argument --rate-limit: invalid rate limit 'none'"),
        (["--concurrency", "-3"], "argument --concurrency: expected a whole number >= 1, got -3"),
        (["--concurrency", "0"], "expected a whole number >= 1, got 0"),
        (["--halt-after", "0"], "expected a whole number >= 1 or off"),
        (["--timeout", "-1"], "argument --timeout: expected a number of seconds > 0"),
        (["--timeout", "nan"], "expected a finite number of seconds"),
        (["--settle-window", "-.5"], "expected a number of seconds >= 0"),
        (["--max-retry-after", "301"], "at most 300 seconds"),
        (["--method", "push"], "invalid choice: 'push'"),
        (["--batch-size", "0"], "expected a whole number >= 1"),
        (["--journal", "a", "--journal-dir", "b"], "not allowed with argument"),
        (["-v", "-q"], "not allowed with argument"),
    ],
)
async def test_bad_values_are_refused_with_a_clear_message_before_anything_is_sent(
    argv: list[str], message: str
) -> None:
    result = await magicwan(
        "psk", "rotate", ACCOUNT, "--all", "--journal-dir", "/nonexistent", *argv
    )
    assert result.code == 2
    assert message in result.err
    assert result.err.startswith("usage: magicwan psk rotate")
    assert "Traceback" not in result.err


def test_main_returns_the_status_without_a_running_loop() -> None:
    assert cli.main(["psk", "generate", ACCOUNT, TUNNEL]) == 2  # refused, nothing sent
    assert cli.main(["--version"]) == 0


def test_python_m_magicwan_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "magicwan", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for command in ("psk", "tunnels", "journal", "demo"):
        assert f"    {command} " in done.stdout
    assert "CLOUDFLARE_API_TOKEN" in done.stdout


def test_every_leaf_names_its_handler_and_parser() -> None:
    for path in LEAVES:
        parser = COMMANDS[path]
        assert parser.get_default("parser") is parser, path
