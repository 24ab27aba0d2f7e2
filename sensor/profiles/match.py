"""Decide which profile, if any, applies to a process.

Pure: the caller gathers the facts (from /proc, the exec event, ...) and we only compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .schema import Profile


@dataclass(frozen=True)
class ProcessFacts:
    """What we know about a process when choosing its profile.

    ``exe_paths`` holds every spelling of the executable we know (the path exec was
    called with and the resolved one), because a rule may name either.
    ``cmdline`` is argv joined by single spaces.
    """

    exe_paths: tuple[str, ...]
    cmdline: str
    uid: int
    username: str | None = None
    cgroup: str | None = None


def _user_matches(wanted: str | int, facts: ProcessFacts) -> bool:
    # Numbers are uids, text is a name; a name never matches when we could not resolve one.
    if isinstance(wanted, int):
        return wanted == facts.uid
    return facts.username is not None and wanted == facts.username


def profile_matches(profile: Profile, facts: ProcessFacts) -> bool:
    """True if every selector key given in the profile matches the process.

    An empty ``match`` never matches: such profiles are only applied on request
    (``agent-sensor exec --profile NAME``).
    """
    selectors = profile.match
    if selectors.is_empty:
        return False
    # The command line first: it comes with the exec event, the rest may need /proc.
    if selectors.cmdline and not any(glob.matches(facts.cmdline) for glob in selectors.cmdline):
        return False
    if selectors.exe and not any(
        glob.matches(path) for glob in selectors.exe for path in facts.exe_paths
    ):
        return False
    if selectors.user and not any(_user_matches(user, facts) for user in selectors.user):
        return False
    if selectors.cgroup and (
        facts.cgroup is None or not any(glob.matches(facts.cgroup) for glob in selectors.cgroup)
    ):
        return False
    return True


def find_profile(profiles: Iterable[Profile], facts: ProcessFacts) -> Profile | None:
    """The first profile (in the given order) whose selectors match the process."""
    return next((profile for profile in profiles if profile_matches(profile, facts)), None)
