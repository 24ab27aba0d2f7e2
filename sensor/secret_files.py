"""Which files the secrets of a profile are, by identity (device, inode): so a hard link, a bind
mount or any other name of the same file is still that secret. Read from the filesystem when
profiles load and refreshed (SecretFiles): a secret created later is caught by its name at once
and by its identity from the next refresh."""

from __future__ import annotations

import os
import time

from .profiles import Profile
from .profiles.globs import literal_segments

FileId = tuple[int, int]
MAX_FILES_PER_GLOB = 10000  # a secret directory this large is walked no further


def file_id(path: str, follow: bool = True) -> FileId | None:
    """(device, inode) of the file; follow=False: of the name itself (a symlink, not its target)."""
    try:
        st = os.stat(path, follow_symlinks=follow)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def secret_file_ids(profile: Profile, found_at: dict[FileId, str] | None = None) -> dict[FileId, str]:
    """(device, inode) of every existing file a secret glob covers -> the glob's text (and, in
    found_at, the path it was found at). Globs whose literal base is `/` (such as `/**/.env`)
    would mean walking the whole filesystem: they are matched by name only."""
    ids: dict[FileId, str] = {}
    found_at = {} if found_at is None else found_at
    for glob in profile.secrets:
        for pattern in glob.expanded:
            base = "/" + "/".join(literal_segments(pattern))  # the pattern itself if it has no wildcard
            if base == "/":
                continue
            if base == pattern:
                found = file_id(pattern)
                if found:
                    ids.setdefault(found, glob.text)
                    found_at.setdefault(found, pattern)
                continue
            # Without `**` a match is a fixed number of levels below the base: `~/.aider*` is
            # in the home itself, so the home's tree is not walked (every 30 s, for every home).
            below = pattern[len(base):]
            levels = None if "**" in below else below.count("/")
            seen = 0
            for root, dirs, files in os.walk(base):
                for name in files + dirs:
                    path = os.path.join(root, name)
                    if glob.matches(path) and (found := file_id(path)):
                        ids.setdefault(found, glob.text)
                        found_at.setdefault(found, path)
                    seen += 1
                if seen > MAX_FILES_PER_GLOB:
                    break
                if levels is not None and root[len(base):].count("/") + 1 >= levels:
                    dirs.clear()  # the names in root were the deepest a match can be
    return ids


REFRESH_S = 30.0
NO_IDS: dict[FileId, str] = {}  # a profile unknown here: read, never changed
LINK_REFRESH_GAP_S = 1.0  # hardlink-heavy trees (pnpm stores) must not cause a walk per open


class SecretFiles:
    """Per profile, the identities of its secret files, kept fresh: re-read every REFRESH_S, at
    once when a file with several names (st_nlink > 1) is not known (it may be a new hard link),
    and at once when an opened file has a known identity that its secret no longer has (the
    secret was deleted and the inode number reused: not the secret at all)."""

    def __init__(self, profiles: list[Profile], clock=time.monotonic):
        self._profiles = {p.name: p for p in profiles}
        self._clock = clock
        self._ids: dict[str, dict[FileId, str]] = {}
        self._found_at: dict[str, dict[FileId, str]] = {}
        self._read_at = 0.0
        self.refresh()

    def refresh(self) -> None:
        self._found_at = {name: {} for name in self._profiles}
        self._ids = {name: secret_file_ids(p, self._found_at[name]) for name, p in self._profiles.items()}
        self._read_at = self._clock()

    def of(self, profile: str, opened: FileId | None = None, links: int = 1) -> dict[FileId, str]:
        # Asked for every open: the common case (a file of one name that is no secret, read
        # recently) costs one lookup of the file and one of the clock.
        known = self._ids.get(profile, NO_IDS)
        age = self._clock() - self._read_at
        if opened in known:  # unless the secret is gone and its inode number reused
            due = file_id(self._found_at[profile][opened]) != opened
        else:  # an unknown file with several names may be a new hard link to a secret
            due = links > 1 and opened is not None and age > LINK_REFRESH_GAP_S
        if due or age > REFRESH_S:
            self.refresh()
            known = self._ids.get(profile, NO_IDS)
        return known
