"""Glob patterns used in agent profiles, compiled once to anchored regular expressions.

Two flavours share one translator:

* ``PathGlob`` - file-system paths. ``*`` and ``?`` stay inside one path segment,
  ``**`` crosses ``/``. ``~`` stands for every home directory.
* ``TextGlob`` - free text such as a command line, where ``*`` matches anything
  (a command line is not a path, so ``/`` is not special).

Pure: no I/O. The loader passes the list of home directories in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

GLOB_METACHARACTERS = frozenset("*?[")


class GlobError(ValueError):
    """A pattern that cannot be compiled; the message is written for the profile author."""


# --- translation -------------------------------------------------------------------


def _translate_class(text: str, start: int, path_mode: bool) -> tuple[str, int]:
    """Translate the ``[...]`` class opening at ``text[start]``.

    Returns the regex and the index just after the closing ``]``. As in shells,
    a ``]`` right after ``[`` or ``[!`` is a literal member, not the end.
    """
    i = start + 1
    negate = i < len(text) and text[i] == "!"
    if negate:
        i += 1
    parts: list[str] = []
    first = True
    while True:
        if i >= len(text):
            raise GlobError(f"unclosed '[' at character {start + 1}")
        char = text[i]
        if char == "]" and not first:
            i += 1
            break
        first = False
        is_range = i + 2 < len(text) and text[i + 1] == "-" and text[i + 2] != "]"
        if is_range:
            low, high = char, text[i + 2]
            if low > high:
                raise GlobError(f"bad range '{low}-{high}' in '[...]' (start is after end)")
            parts.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 3
        else:
            parts.append(re.escape(char))
            i += 1
    regex = "[" + ("^" if negate else "") + "".join(parts) + "]"
    # Like `*` and `?`, a class in a path glob never swallows a separator.
    return ("(?!/)" + regex if path_mode else regex), i


def _translate(text: str, path_mode: bool) -> str:
    """Translate glob text (without any ``~`` prefix) into a regex body."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if path_mode and text.startswith("/**", i):
            end = i + 3
            while end < n and text[end] == "*":
                end += 1
            if end == n:
                # Trailing `/**`: the directory itself and everything below it.
                out.append("(?:/.*)?")
                i = end
                continue
            if text[end] == "/":
                # `/**/`: zero or more whole directories, so `/a/**/b` also matches `/a/b`.
                out.append("/(?:.*/)?")
                i = end + 1
                continue
        if char == "*":
            end = i + 1
            while end < n and text[end] == "*":
                end += 1
            double = end - i >= 2
            out.append(".*" if double or not path_mode else "[^/]*")
            i = end
        elif char == "?":
            out.append("[^/]" if path_mode else ".")
            i += 1
        elif char == "[":
            regex, i = _translate_class(text, i, path_mode)
            out.append(regex)
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def _check_common(text: object) -> str:
    if not isinstance(text, str):
        raise GlobError(f"a glob must be a string, got {type(text).__name__}")
    if text == "":
        raise GlobError("empty glob")
    if "\0" in text:
        raise GlobError("glob contains a NUL byte")
    return text


def _compile(body: str) -> re.Pattern[str]:
    # DOTALL: file names and argv may legitimately contain newlines.
    return re.compile(body, re.DOTALL)


# --- public types --------------------------------------------------------------------


@dataclass(frozen=True)
class PathGlob:
    """A path pattern such as ``/srv/crm/**`` or ``~/.ssh/**``.

    ``expanded`` holds the pattern after ``~`` expansion (one entry per home,
    or just ``text`` when there is no ``~``); ``text`` is kept for display.
    """

    text: str
    line: int
    expanded: tuple[str, ...]
    _regexes: tuple[re.Pattern[str], ...] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str, line: int = 0, homes: Iterable[str] = ()) -> PathGlob:
        """Compile ``text``; raise ``GlobError`` if it is not a valid path glob."""
        text = _check_common(text)
        if text == "~" or text.startswith("~/"):
            rest = text[1:]
            body = _translate(rest, path_mode=True)  # validate even if there are no homes
            bases = list(dict.fromkeys(home.rstrip("/") for home in homes))
            if not bases:
                raise GlobError("'~' needs at least one home directory, and none are known")
            expanded = tuple((base + rest) or "/" for base in bases)
            regexes = tuple(
                _compile(re.escape(base) + body if (base + rest) else "/") for base in bases
            )
            return cls(text, line, expanded, regexes)
        if not text.startswith("/"):
            raise GlobError("a path glob must be absolute (start with '/') or start with '~/'")
        return cls(text, line, (text,), (_compile(_translate(text, path_mode=True)),))

    @property
    def is_literal(self) -> bool:
        """True when the pattern is one exact path, so the kernel can compare it directly."""
        return not self.text.startswith("~") and not GLOB_METACHARACTERS.intersection(self.text)

    def matches(self, path: str) -> bool:
        for regex in self._regexes:  # not any(generator): several calls per open
            if regex.fullmatch(path):
                return True
        return False


@dataclass(frozen=True)
class TextGlob:
    """A free-text pattern (used for command lines): ``*`` matches anything, ``/`` included."""

    text: str
    line: int
    _regex: re.Pattern[str] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str, line: int = 0) -> TextGlob:
        """Compile ``text``; raise ``GlobError`` if it is not a valid glob."""
        text = _check_common(text)
        return cls(text, line, _compile(_translate(text, path_mode=False)))

    @property
    def is_literal(self) -> bool:
        return not GLOB_METACHARACTERS.intersection(self.text)

    def matches(self, text: str) -> bool:
        return self._regex.fullmatch(text) is not None
