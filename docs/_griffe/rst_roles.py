"""A griffe extension for the API reference: the docstrings' reST roles, read as Markdown.

The docstrings are written for a reader of the source and use reST's roles
(``:class:`Rotation```, ``:func:`~magicwan.new_psk```) and literal-block markers
(``Start it in-process::``). mkdocstrings renders Markdown, where those show as noise:
this turns a role into a code span of its target (the last part only, for ``~``) and a
paragraph's closing ``::`` into ``:``. Only the rendered text changes, never the code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const)\s*:`(~?)([^`]+)`")
_LITERAL = re.compile(r"(?<=\S)::$", flags=re.MULTILINE)


def markdown(text: str) -> str:
    """``text`` with its reST roles as code spans and its ``::`` markers as ``:``."""

    def code(match: re.Match[str]) -> str:
        tilde, target = match.groups()
        return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"

    return _LITERAL.sub(":", _ROLE.sub(code, text))


class RstRoles(griffe.Extension):
    """Rewrites every docstring of the loaded package (see the module's docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = markdown(obj.docstring.value)


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias and isinstance(member, griffe.Object):
            found += _walk(member)
    return found
