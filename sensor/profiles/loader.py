"""Read profile YAML files into ``Profile`` objects, reporting every problem as FILE:LINE.

We walk the composed YAML node graph (``yaml.compose``) rather than loaded Python
objects because only nodes carry line numbers, and an operator fixing a profile
needs the line. Nothing is ever constructed from tags, so hostile YAML is inert.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Iterable

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .globs import GLOB_METACHARACTERS, GlobError, PathGlob, TextGlob
from .catalogue import ALL_DEFAULT_SECRETS
from .schema import (
    DEFAULT_ON_VIOLATION,
    NAME_PATTERN,
    ON_VIOLATION_CHOICES,
    INTERFACE_NAMES,
    RULE_NAMES,
    Broker,
    Destination,
    DestinationError,
    MatchSelectors,
    Problem,
    Profile,
    ProfileError,
)

TOP_KEYS = ("name", "description", "match", "files", "secrets", "brokers", "network", "exec", "exec_deny",
            "interfaces", "on_violation", "on_event_loss", "actions")
MATCH_KEYS = ("exe", "cmdline", "user", "cgroup")
FILES_KEYS = ("read", "write")
NETWORK_KEYS = ("connect", "listen")
PROFILE_SUFFIXES = (".yaml", ".yml")

_TAG = "tag:yaml.org,2002:"
_TAG_NAMES = {
    _TAG + "str": "a string",
    _TAG + "int": "an integer",
    _TAG + "float": "a number",
    _TAG + "bool": "a boolean",
    _TAG + "null": "nothing (null)",
    _TAG + "timestamp": "a timestamp",
    _TAG + "binary": "binary data",
}
_MAX_UID = 2**32 - 2  # (uid_t)-1 means "no uid" to the kernel


# --- homes ---------------------------------------------------------------------------


def _normalize_home(path: str) -> str:
    normalized = os.path.normpath(path)
    return "/" + normalized.lstrip("/")  # normpath keeps a leading '//'; we don't want it


def default_homes() -> list[str]:
    """Every distinct home directory in the user database (absolute, not '/'), plus /root."""
    homes = {
        _normalize_home(entry.pw_dir)
        for entry in pwd.getpwall()
        if entry.pw_dir.startswith("/")
    }
    homes.discard("/")
    homes.add("/root")
    return sorted(homes)


def _resolve_homes(homes: Iterable[str] | None) -> list[str]:
    if homes is None:
        return default_homes()
    resolved = []
    for home in homes:
        if not isinstance(home, str) or not home.startswith("/"):
            raise ValueError(f"home directories must be absolute paths, got {home!r}")
        resolved.append(_normalize_home(home))
    return list(dict.fromkeys(resolved))


# --- node checking -------------------------------------------------------------------


def _shown(text: str, limit: int = 80) -> str:
    """Echo a value in a message without flooding the terminal with a huge one."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return _TAG_NAMES.get(node.tag, f"a value tagged {node.tag}")


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "null"


def _is_string(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "str"


class _ProfileChecker:
    """Validates one composed document, collecting problems instead of stopping at the first."""

    def __init__(self, file: str, homes: list[str]):
        self.file = file
        self.homes = homes
        self.problems: list[Problem] = []

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, message))

    # -- generic shapes --

    def mapping(self, node: Node, allowed: tuple[str, ...], where: str) -> dict[str, Node] | None:
        """Key -> value node, after reporting non-string, duplicate and unknown keys."""
        if not isinstance(node, MappingNode):
            self.problem(_line(node), f"{where} must be a mapping (key: value), got {_kind(node)}")
            return None
        inside = "" if where == "the profile" else f" in {where}"
        values: dict[str, Node] = {}
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problem(_line(key_node), f"keys{inside} must be strings, got {_kind(key_node)}")
                continue
            key = key_node.value
            if key in first_lines:
                self.problem(
                    _line(key_node),
                    f"duplicate key '{_shown(key)}'{inside} (first at line {first_lines[key]})",
                )
                continue
            first_lines[key] = _line(key_node)
            if key not in allowed:
                self.problem(
                    _line(key_node),
                    f"unknown key '{_shown(key)}'{inside} (allowed: {', '.join(allowed)})",
                )
                continue
            values[key] = value_node
        return values

    def string(self, node: Node, what: str) -> str | None:
        if not _is_string(node):
            self.problem(_line(node), f"{what} must be a string, got {_kind(node)}")
            return None
        return node.value

    def string_items(self, node: Node, what: str, single_ok: bool = False) -> list[ScalarNode]:
        """The string entries of a list (a lone string too when ``single_ok``)."""
        if single_ok and _is_string(node):
            return [node]
        if not isinstance(node, SequenceNode):
            hint = "a list or a string" if single_ok else "a list"
            self.problem(_line(node), f"{what} must be {hint}, got {_kind(node)}")
            return []
        items = []
        for item in node.value:
            if _is_string(item):
                items.append(item)
            else:
                self.problem(_line(item), f"entries of {what} must be strings, got {_kind(item)}")
        return items

    def path_globs(
        self, node: Node, what: str, single_ok: bool = False, tilde_ok: bool = True
    ) -> tuple[PathGlob, ...]:
        globs = []
        for item in self.string_items(node, what, single_ok):
            if not tilde_ok and item.value.startswith("~"):
                self.problem(_line(item), f"bad glob '{_shown(item.value)}' in {what}: '~' is not allowed here")
                continue
            try:
                globs.append(PathGlob.parse(item.value, _line(item), self.homes))
            except GlobError as error:
                self.problem(_line(item), f"bad glob '{_shown(item.value)}' in {what}: {error}")
        return tuple(globs)

    def secrets(self, node: Node) -> tuple[PathGlob, ...]:
        """Path globs, where `default` stands for the built-in catalogue and `!ENTRY` removes one
        of its entries."""
        texts: list[tuple[str, int]] = []
        removed: list[tuple[str, int]] = []
        for item in self.string_items(node, "secrets"):
            if item.value == "default":
                texts.extend((entry, _line(item)) for entry in ALL_DEFAULT_SECRETS)
            elif item.value.startswith("!"):
                removed.append((item.value[1:], _line(item)))
            else:
                texts.append((item.value, _line(item)))
        for text, line in removed:
            if text not in ALL_DEFAULT_SECRETS:
                self.problem(line, f"'!{_shown(text)}' in secrets removes nothing: it is not an entry of the "
                                   "default catalogue (see README, 'Secrets catalogue')")
            else:
                texts = [(t, l) for t, l in texts if t != text]
        globs = []
        for text, line in dict.fromkeys(texts):
            try:
                globs.append(PathGlob.parse(text, line, self.homes))
            except GlobError as error:
                self.problem(line, f"bad glob '{_shown(text)}' in secrets: {error}")
        return tuple(globs)

    def brokers(self, node: Node) -> tuple[Broker, ...]:
        """PROGRAM: [SECRET GLOB, ...]: the secrets only that program may read."""
        if not isinstance(node, MappingNode):
            self.problem(_line(node), f"brokers must be a mapping (PROGRAM: [SECRET, ...]), got {_kind(node)}")
            return ()
        out = []
        for key_node, value_node in node.value:
            program = key_node.value if isinstance(key_node, ScalarNode) else ""
            if not program.startswith("/") or GLOB_METACHARACTERS.intersection(program) or "\0" in program:
                self.problem(_line(key_node), f"broker '{_shown(str(program))}': write the program's absolute path, "
                                              "without wildcards (as the agent executes it)")
                continue
            globs = self.path_globs(value_node, f"brokers.{program}")
            if not globs:
                self.problem(_line(value_node), f"broker '{_shown(program)}' names no secret")
                continue
            out.append(Broker(os.path.normpath(program), globs, _line(key_node)))
        return tuple(out)

    # -- sections --

    def name(self, node: Node) -> str | None:
        name = self.string(node, "name")
        if name is not None and not NAME_PATTERN.fullmatch(name):
            self.problem(
                _line(node),
                f"bad name '{_shown(name)}': use 1-63 characters from a-z, 0-9, '.', '_', '-', "
                "starting with a letter or digit",
            )
            return None
        return name

    def match(self, node: Node) -> MatchSelectors:
        fields = self.mapping(node, MATCH_KEYS, "match") or {}
        exe = cmdline = cgroup = ()
        users: tuple[str | int, ...] = ()
        if "exe" in fields and not _is_null(fields["exe"]):
            exe = self.path_globs(fields["exe"], "match.exe", single_ok=True)
        if "cmdline" in fields and not _is_null(fields["cmdline"]):
            cmdline = self.text_globs(fields["cmdline"], "match.cmdline")
        if "user" in fields and not _is_null(fields["user"]):
            users = self.users(fields["user"])
        if "cgroup" in fields and not _is_null(fields["cgroup"]):
            cgroup = self.path_globs(fields["cgroup"], "match.cgroup", single_ok=True, tilde_ok=False)
        return MatchSelectors(exe=exe, cmdline=cmdline, user=users, cgroup=cgroup)

    def text_globs(self, node: Node, what: str) -> tuple[TextGlob, ...]:
        globs = []
        for item in self.string_items(node, what, single_ok=True):
            try:
                globs.append(TextGlob.parse(item.value, _line(item)))
            except GlobError as error:
                self.problem(_line(item), f"bad glob '{_shown(item.value)}' in {what}: {error}")
        return tuple(globs)

    def users(self, node: Node) -> tuple[str | int, ...]:
        if isinstance(node, ScalarNode):
            items = [node]  # a single user, name or uid
        elif isinstance(node, SequenceNode):
            items = node.value
        else:
            self.problem(_line(node), f"match.user must be a list or a single user, got {_kind(node)}")
            return ()
        users: list[str | int] = []
        for item in items:
            user = self.user(item)
            if user is not None:
                users.append(user)
        return tuple(users)

    def user(self, node: Node) -> str | int | None:
        if isinstance(node, ScalarNode) and node.tag == _TAG + "int":
            try:
                uid = SafeConstructor().construct_yaml_int(node)
            except (ValueError, yaml.YAMLError):
                uid = None
            if uid is None or not 0 <= uid <= _MAX_UID:
                self.problem(_line(node), f"bad uid '{_shown(node.value)}' in match.user")
                return None
            return uid
        if not _is_string(node):
            self.problem(_line(node), f"entries of match.user must be user names or uids, got {_kind(node)}")
            return None
        text = node.value
        if text.isascii() and text.isdigit():
            if int(text) > _MAX_UID:
                self.problem(_line(node), f"bad uid '{_shown(text)}' in match.user")
                return None
            return int(text)
        if text == "" or any(c in text for c in ":/\0") or any(c.isspace() for c in text):
            self.problem(_line(node), f"bad user name '{_shown(text)}' in match.user")
            return None
        return text

    def files(self, node: Node) -> tuple[tuple[PathGlob, ...], tuple[PathGlob, ...]]:
        fields = self.mapping(node, FILES_KEYS, "files") or {}
        read = write = ()
        if "read" in fields and not _is_null(fields["read"]):
            read = self.path_globs(fields["read"], "files.read")
        if "write" in fields and not _is_null(fields["write"]):
            write = self.path_globs(fields["write"], "files.write")
        return read, write

    def network(self, node: Node) -> tuple[tuple[Destination, ...], tuple[Destination, ...]]:
        """(network.connect, network.listen)."""
        fields = self.mapping(node, NETWORK_KEYS, "network") or {}
        return self.destinations(fields, "connect"), self.destinations(fields, "listen")

    def destinations(self, fields: dict[str, Node], key: str) -> tuple[Destination, ...]:
        if key not in fields or _is_null(fields[key]):
            return ()
        destinations = []
        for item in self.string_items(fields[key], f"network.{key}"):
            try:
                destination = Destination.parse(item.value, _line(item), self.homes)
                if destination.host is not None and key == "listen":
                    raise DestinationError("network.listen takes local addresses, not host names")
                # Port 0 asks the kernel to pick a port: a bind can, a connect cannot.
                if key == "connect" and not destination.is_unix and destination.port_high == 0:
                    raise DestinationError("port 0 is out of range (1-65535; 0 only in network.listen)")
                destinations.append(destination)
            except DestinationError as error:
                self.problem(_line(item), f"bad destination '{_shown(item.value)}' in network.{key}: {error}")
        return tuple(destinations)

    def on_violation(self, node: Node, what: str = "on_violation") -> str | None:
        accepted = ", ".join(ON_VIOLATION_CHOICES)
        if not _is_string(node):
            self.problem(_line(node), f"{what} must be one of: {accepted}; got {_kind(node)}")
            return None
        if node.value not in ON_VIOLATION_CHOICES:
            self.problem(_line(node), f"bad {what} '{_shown(node.value)}' (accepted: {accepted})")
            return None
        return node.value

    def interfaces(self, node: Node) -> tuple[str, ...]:
        names = []
        for item in self.string_items(node, "interfaces"):
            if item.value in INTERFACE_NAMES:
                names.append(item.value)
            else:
                self.problem(_line(item), f"unknown interface '{_shown(item.value)}' in interfaces "
                                          f"(known: {', '.join(INTERFACE_NAMES)})")
        return tuple(dict.fromkeys(names))

    def actions(self, node: Node) -> tuple[tuple[str, str], ...]:
        fields = self.mapping(node, RULE_NAMES, "actions")
        if fields is None:
            return ()
        chosen = ((rule, self.on_violation(value, f"actions.{rule}")) for rule, value in fields.items())
        return tuple((rule, action) for rule, action in chosen if action is not None)

    # -- whole document --

    def profile(self, root: Node) -> Profile | None:
        fields = self.mapping(root, TOP_KEYS, "the profile")
        if fields is None:
            return None
        # A key with an empty (null) value means the same as leaving it out; except
        # `name`, which is required, so `name:` alone gets a type error below.
        fields = {key: node for key, node in fields.items() if key == "name" or not _is_null(node)}

        name = None
        name_line = _line(root)
        if "name" in fields:
            name_line = _line(fields["name"])
            name = self.name(fields["name"])
        else:
            self.problem(_line(root), "missing required key 'name'")

        description = self.string(fields["description"], "description") if "description" in fields else None
        match = self.match(fields["match"]) if "match" in fields else MatchSelectors()
        read, write = self.files(fields["files"]) if "files" in fields else ((), ())
        secrets = self.secrets(fields["secrets"]) if "secrets" in fields else ()
        brokers = self.brokers(fields["brokers"]) if "brokers" in fields else ()
        # A brokered file is a secret: only its broker may open it.
        secrets += tuple(g for b in brokers for g in b.secrets if g.text not in {s.text for s in secrets})
        connect, listen = self.network(fields["network"]) if "network" in fields else ((), ())
        execs = self.path_globs(fields["exec"], "exec") if "exec" in fields else ()
        exec_deny = self.path_globs(fields["exec_deny"], "exec_deny") if "exec_deny" in fields else ()
        interfaces = self.interfaces(fields["interfaces"]) if "interfaces" in fields else ()
        on_violation = (
            self.on_violation(fields["on_violation"]) if "on_violation" in fields else DEFAULT_ON_VIOLATION
        )

        actions = self.actions(fields["actions"]) if "actions" in fields else ()

        on_event_loss = (self.on_violation(fields["on_event_loss"], "on_event_loss")
                         if "on_event_loss" in fields else DEFAULT_ON_VIOLATION)
        if self.problems or name is None or on_violation is None or on_event_loss is None:
            return None
        return Profile(
            name=name,
            description=description,
            source=self.file,
            line=name_line,
            match=match,
            files_read=read,
            files_write=write,
            secrets=secrets,
            network_connect=connect,
            network_listen=listen,
            exec=execs,
            exec_deny=exec_deny,
            interfaces=interfaces,
            on_violation=on_violation,
            on_event_loss=on_event_loss,
            actions=actions,
            brokers=brokers,
        )


# --- files ---------------------------------------------------------------------------


def _read_text(path: Path, file: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ProfileError([Problem(file, 1, f"cannot read file: {error.strerror or error}")]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        bad_line = data[: error.start].count(b"\n") + 1
        message = f"not valid UTF-8 (byte 0x{data[error.start]:02x} on line {bad_line})"
        raise ProfileError([Problem(file, 1, message)]) from None


def _yaml_problem(file: str, text: str, error: yaml.YAMLError) -> Problem:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        message = error.problem or error.context or "invalid YAML"
        if error.context and error.problem and error.context_mark is not None:
            message = f"{message} ({error.context} at line {error.context_mark.line + 1})"
        return Problem(file, line, f"YAML syntax error: {message}")
    if isinstance(error, yaml.reader.ReaderError):
        line = text[: error.position].count("\n") + 1
        code = error.character if isinstance(error.character, int) else ord(error.character)
        return Problem(file, line, f"YAML syntax error: unacceptable character #x{code:04x}: {error.reason}")
    return Problem(file, 1, f"YAML syntax error: {error}")


def _compose(text: str, file: str) -> Node:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise ProfileError([_yaml_problem(file, text, error)]) from None
    except RecursionError:
        raise ProfileError([Problem(file, 1, "YAML is nested too deeply")]) from None
    if root is None:
        raise ProfileError([Problem(file, 1, "empty file: a profile needs at least 'name'")])
    return root


def _load(path: Path, file: str, homes: list[str]) -> Profile:
    root = _compose(_read_text(path, file), file)
    checker = _ProfileChecker(file, homes)
    profile = checker.profile(root)
    if checker.problems or profile is None:
        # Report in file order, the order an operator reads the file in.
        raise ProfileError(sorted(checker.problems, key=lambda problem: problem.line))
    return profile


def load_profile_file(path: str | os.PathLike[str], homes: Iterable[str] | None = None) -> Profile:
    """Load one profile; raise ``ProfileError`` listing every problem in the file."""
    return _load(Path(path), os.fspath(path), _resolve_homes(homes))


def _expand_paths(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Problem]]:
    """Files to load (directories give their *.yaml/*.yml, sorted), each at most once."""
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            try:
                entries = sorted(
                    entry for entry in path.iterdir()
                    if entry.suffix in PROFILE_SUFFIXES and entry.is_file()
                )
            except OSError as error:
                problems.append(Problem(os.fspath(raw), 1, f"cannot list directory: {error.strerror or error}"))
                continue
            files.extend(entries)
        elif path.exists():
            files.append(path)
        else:
            problems.append(Problem(os.fspath(raw), 1, "no such file or directory"))
    unique: dict[str, Path] = {}
    for file in files:
        unique.setdefault(os.path.realpath(file), file)  # a file named twice is loaded once
    return list(unique.values()), problems


def ownership_problems(paths: Iterable[str | os.PathLike[str]], owner: int = 0) -> list[Problem]:
    """Profiles decide what agents may do: the daemon loads only files, and directories, that are
    owned by `owner` (root) and that nobody else may write (group or others)."""
    files, _ = _expand_paths(paths)
    problems = []
    for path in [Path(p) for p in paths if Path(p).is_dir()] + files:
        try:
            st = path.stat()
        except OSError:
            continue  # reported by the loader
        if st.st_uid != owner:
            problems.append(Problem(os.fspath(path), 1, f"owned by uid {st.st_uid}, not {owner}: "
                                                        f"fix with chown {owner} {path}"))
        if st.st_mode & 0o022:
            problems.append(Problem(os.fspath(path), 1, f"writable by {'group and others' if st.st_mode & 0o022 == 0o022 else 'group' if st.st_mode & 0o020 else 'others'}: "
                                                        f"fix with chmod go-w {path}"))
    return problems


def load_profiles(
    paths: Iterable[str | os.PathLike[str]], homes: Iterable[str] | None = None
) -> list[Profile]:
    """Load every profile under ``paths`` (files or directories, not recursive).

    Raises one ``ProfileError`` with the problems of all files, including profile
    names used twice. Returns the profiles sorted by name.
    """
    resolved_homes = _resolve_homes(homes)
    files, problems = _expand_paths(paths)
    by_name: dict[str, Profile] = {}
    for path in files:
        try:
            profile = _load(path, os.fspath(path), resolved_homes)
        except ProfileError as error:
            problems.extend(error.problems)
            continue
        first = by_name.get(profile.name)
        if first is not None:
            problems.append(
                Problem(
                    profile.source,
                    profile.line,
                    f"duplicate profile name '{profile.name}' (first defined in {first.source}:{first.line})",
                )
            )
            continue
        by_name[profile.name] = profile
    if problems:
        raise ProfileError(problems)
    return sorted(by_name.values(), key=lambda profile: profile.name)
