"""Secrets a leak check can recognise, and the checks: is any of them in any text a user could see?

The values are distinctive on purpose, so a hit can never be a coincidence. ``exception_texts`` and
``log_texts`` gather everything an exception or a log record can show; ``assert_no_secret`` fails
without printing the whole text.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable

__all__ = [
    "HOSTILE_PSK",
    "SECRET_EMAIL",
    "SECRET_KEY",
    "SECRET_TOKEN",
    "assert_no_secret",
    "exception_texts",
    "log_texts",
]

# Distinctive values, so a leak can never be a coincidence.
SECRET_TOKEN = "tokNEVERSHOW7f3a9c2e1b5d4a6f8e0c"
SECRET_KEY = "keyNEVERSHOW0b1c2d3e4f5a6b7c8d9e"
SECRET_EMAIL = "never-shown@example.com"
HOSTILE_PSK = "pskHOSTILEq9w8e7r6t5y4u3i2o1p0zz"


def exception_texts(exc: BaseException) -> list[str]:
    """Everything an exception can show: str, repr, args, notes, its whole chain, its traceback."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        texts += [str(note) for note in getattr(current, "__notes__", ())]
        texts += (
            [repr(value) for value in vars(current).values()]
            if hasattr(current, "__dict__")
            else []
        )
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
    return texts


_FORMATTER = logging.Formatter("%(name)s %(levelname)s %(message)s")


def log_texts(records: Iterable[logging.LogRecord]) -> list[str]:
    """Every log record fully formatted: message, args, exc_info and stack."""
    texts = []
    for record in records:
        texts.append(_FORMATTER.format(record))
        texts.append(repr(record.msg))
        texts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            texts += exception_texts(record.exc_info[1])
        if record.stack_info:
            texts.append(record.stack_info)
    return texts


def assert_no_secret(texts: Iterable[str], secrets: Iterable[str], where: str = "") -> None:
    """Fail (without printing the text in full) if any secret occurs in any text."""
    wanted = [s for s in set(secrets) if s]
    for text in texts:
        for secret in wanted:
            if secret in text:
                at = text.index(secret)
                context = text[max(0, at - 80) : at + len(secret) + 20]
                raise AssertionError(f"secret leaked{' in ' + where if where else ''}: {context!r}")
