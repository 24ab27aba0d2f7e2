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
from functools import partial
from typing import Callable, Iterable

from ..compiled import _paths

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
    or just ``text`` when there is no ``~``); ``text`` is kept for display. One regular
    expression matches every expansion: a host has a home per system account too (17 here),
    and a regex per home made each match that many calls.
    """

    text: str
    line: int
    expanded: tuple[str, ...]
    _regex: re.Pattern[str] = field(repr=False, compare=False)
    # Per expansion: its regex, and its leading path segments with no wildcard (GlobList).
    _alternatives: tuple[tuple[str, tuple[str, ...]], ...] = field(repr=False, compare=False)

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
            # A home is a path, not a glob: all its segments are literal, whatever they contain.
            alternatives = tuple((re.escape(base) + body if (base + rest) else "/",
                                  tuple(base[1:].split("/")) + literal_segments(rest) if base else ())
                                 for base in bases)
        elif text.startswith("/"):
            alternatives = ((_translate(text, path_mode=True), literal_segments(text)),)
            expanded = (text,)
        else:
            raise GlobError("a path glob must be absolute (start with '/') or start with '~/'")
        return cls(text, line, expanded, _compile("|".join(regex for regex, _ in alternatives)), alternatives)

    @property
    def is_literal(self) -> bool:
        """True when the pattern is one exact path, so the kernel can compare it directly."""
        return not self.text.startswith("~") and not GLOB_METACHARACTERS.intersection(self.text)

    def matches(self, path: str) -> bool:
        return self._regex.fullmatch(path) is not None


def literal_segments(text: str) -> tuple[str, ...]:
    """The leading segments of an absolute glob (or of the rest after ``~``) with no wildcard:
    the glob matches only paths that start with exactly those segments (GlobList tries it only
    there; secret_files walks only below them)."""
    literal = []
    for segment in text[1:].split("/") if text else ():
        if GLOB_METACHARACTERS.intersection(segment):
            break
        literal.append(segment)
    return tuple(literal)


class GlobList:
    """Path globs tried in order, as regular expressions joined into one: the first glob that
    matches a path is found by one call into the regex engine, not one per glob.

    Only the globs that can match are joined: each expansion of a glob (one per home for ``~``)
    matches only paths that start with its literal segments (``/etc/shadow``, ``/root/.ssh``),
    so a path is tried against the expansions whose literal segments it starts with, found by
    walking a tree of those segments. With the default secrets in every home of a host, an
    open under /usr was hundreds of alternatives before; now it is the few that start with a
    wildcard (``/**/.env``). Each expansion's expression is one capturing group (the
    translation makes no other), so the group that matched names its glob.

    Two answers need no expression at all (the match is most of what remains): a path that
    reaches a node whose first candidate is its literal segments and ``/**`` (``/usr/**``, an
    allow-list's ``/**``) is that glob's; a path whose last segment starts with none of the
    literal beginnings the candidates' last segments have (``.env`` for ``/**/.env``) matches
    none of them."""

    def __init__(self, globs: Iterable[PathGlob]):
        self.globs = tuple(globs)
        self._alternatives = [(glob, regex, literal, _below_all(text, literal), _last_beginning(text))
                              for glob in self.globs
                              for (regex, literal), text in zip(glob._alternatives, glob.expanded)]
        self._root = _SegmentNode()
        for index, (_, _, literal, _, _) in enumerate(self._alternatives):
            node = self._root
            for segment in literal:
                node = node.children.setdefault(segment, _SegmentNode())
            node.ending.append(index)
        self._root.inherit([])
        # first(path) -> the first glob that matches path, or None. In C (sensor/_paths.c): the
        # walk down the tree and the calls around the one regex match cost twice the match.
        self.first: Callable[[str], PathGlob | None] = partial(_paths.first_glob, self._root, self._join)

    def _join(self, node: _SegmentNode) -> Joined:
        """The expression of every expansion a path reaching node can match, joined at the
        node's first use (most nodes are never reached): its fullmatch, and the glob of each
        group. fullmatch tries the alternatives left to right: the first glob that matches the
        whole path wins, as a loop over the globs would have found it. With it, what answers
        without it: the glob every absolute path reaching the node matches, if the first
        candidate is one; the beginnings one of which a path's last segment must have to match,
        if every candidate's last segment has one."""
        chosen = [self._alternatives[i] for i in node.candidates]
        regex = _compile("|".join(f"({alternative})" for _, alternative, _, _, _ in chosen)) if chosen else None
        everything = chosen[0][0] if chosen and chosen[0][3] else None
        beginnings = tuple(dict.fromkeys(b for *_, b in chosen))
        node.joined = ((regex.fullmatch if regex is not None else None), tuple(glob for glob, *_ in chosen),
                       everything, None if "" in beginnings else beginnings)
        return node.joined


def _below_all(text: str, literal: tuple[str, ...]) -> bool:
    """An expansion that is its literal segments and a trailing ``/**``: it matches the
    directory and everything below, every absolute path that starts with those segments."""
    head = text.rstrip("*")
    return len(text) - len(head) >= 2 and head == "".join("/" + segment for segment in literal) + "/"


def _last_beginning(text: str) -> str:
    """What a path's last segment must begin with to match an expansion: its last segment's
    characters before the first wildcard; "" if it cannot be told (no such characters, or a
    ``**`` that lets the last segment span directories)."""
    last = text.rpartition("/")[2]
    if "**" in last:
        return ""
    end = next((i for i, char in enumerate(last) if char in GLOB_METACHARACTERS), len(last))
    return last[:end]


# A node's joined: (the fullmatch of its candidates' expression or None, the glob of each group,
# the glob every absolute path reaching it matches or None, its last-segment beginnings or None).
Joined = tuple[Callable[[str], "re.Match[str] | None"] | None, tuple[PathGlob, ...], PathGlob | None,
               tuple[str, ...] | None]


class _SegmentNode:
    """A node of GlobList's tree: the expansions whose literal segments end here, and (after
    inherit) every expansion a path reaching this node can match, in the globs' order."""

    __slots__ = ("children", "ending", "candidates", "joined")

    def __init__(self) -> None:
        self.children: dict[str, _SegmentNode] = {}
        self.ending: list[int] = []
        self.candidates: list[int] = []
        self.joined: Joined | None = None

    def inherit(self, above: list[int]) -> None:
        self.candidates = sorted(above + self.ending)
        for child in self.children.values():
            child.inherit(self.candidates)


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
