"""magicwan.delivery._text: what others wrote, made safe to put in an error message."""

from __future__ import annotations

from magicwan.delivery._text import EXCERPT_CHARS, scrub, scrub_tail

PSK = "O3bwKSjnaoCxDoUxjcq4Rk8ZKkezQUiy"


def test_scrub_redacts_escapes_and_cuts() -> None:
    text = f"key {PSK} is \x1b[31mwrong\x1b[0m\nsecond line\u202e"
    assert scrub(text, PSK) == "key [REDACTED] is \\x1b[31mwrong\\x1b[0m\\nsecond line\\u202e"
    long = scrub("x" * 1000, PSK)
    assert long == "x" * EXCERPT_CHARS + "..."


def test_scrub_redacts_before_it_cuts() -> None:
    # The cut falls inside the PSK: not one of its characters may show.
    text = "a" * (EXCERPT_CHARS - 5) + PSK
    assert scrub(text, PSK) == "a" * (EXCERPT_CHARS - 5) + "[REDA..."
    assert PSK[:5] not in scrub(text, PSK)


def test_scrub_tail_keeps_the_end() -> None:
    data = b"first line\n" + b"y" * 1000 + f"\nfatal: bad key {PSK}\n".encode()
    tail = scrub_tail(data, PSK, head_cut=False)
    assert tail.startswith("...")
    assert tail.endswith("\\nfatal: bad key [REDACTED]\\n")
    assert len(tail) == EXCERPT_CHARS + 3


def test_scrub_tail_drops_what_may_be_the_end_of_a_psk() -> None:
    # The kept window starts inside the PSK (its head was thrown away earlier).
    data = PSK[-7:].encode() + b" rest"
    assert scrub_tail(data, PSK, head_cut=True) == "..."
    short = (PSK[-7:] + "x" * 40).encode()
    assert PSK[-7:] not in scrub_tail(short, PSK, head_cut=True)


def test_scrub_tail_of_short_output_is_whole() -> None:
    assert scrub_tail(b"oops\n", PSK, head_cut=False) == "oops\\n"
    assert scrub_tail(b"\xff\xfe bad utf-8", PSK, head_cut=False) == "\ufffd\ufffd bad utf-8"
