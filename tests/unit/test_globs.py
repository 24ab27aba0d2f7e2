"""Glob semantics: path globs (segment-aware, ~ expansion) and text globs."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.profiles import PathGlob, TextGlob
from sensor.profiles.globs import GlobError, GlobList


def path(text, homes=()):
    return PathGlob.parse(text, 1, homes)


@pytest.mark.parametrize(
    "pattern, subject, expected",
    [
        # `**` crosses separators; a trailing `/**` also covers the directory itself.
        ("/srv/crm/**", "/srv/crm/a", True),
        ("/srv/crm/**", "/srv/crm/a/b/c", True),
        ("/srv/crm/**", "/srv/crm", True),
        ("/srv/crm/**", "/srv/crm/", True),
        ("/srv/crm/**", "/srv/crmx", False),
        ("/srv/crm/**", "/srv/crmx/a", False),
        ("/srv/crm/**", "/srv", False),
        ("/**", "/anything/at/all", True),
        # `**` in the middle: zero or more whole directories.
        ("/a/**/b", "/a/b", True),
        ("/a/**/b", "/a/x/b", True),
        ("/a/**/b", "/a/x/y/b", True),
        ("/a/**/b", "/a/xb", False),
        ("/a/**.py", "/a/x/y.py", True),
        # `*` stays inside one segment.
        ("/tmp/*", "/tmp/x", True),
        ("/tmp/*", "/tmp/x/y", False),
        ("/tmp/*", "/tmp/", True),
        ("/usr/bin/python3*", "/usr/bin/python3", True),
        ("/usr/bin/python3*", "/usr/bin/python3.11", True),
        ("/usr/bin/python3*", "/usr/bin/python3/x", False),
        ("/a/*/c", "/a/b/c", True),
        ("/a/*/c", "/a/b/b/c", False),
        # `?` is one non-separator character.
        ("/dev/tty?", "/dev/tty1", True),
        ("/dev/tty?", "/dev/tty12", False),
        ("/a?b", "/a/b", False),
        # Classes, ranges, negation; never a separator.
        ("/dev/sd[ab]", "/dev/sda", True),
        ("/dev/sd[ab]", "/dev/sdc", False),
        ("/dev/sd[a-c]1", "/dev/sdc1", True),
        ("/dev/sd[a-c]1", "/dev/sdd1", False),
        ("/x[!a]", "/xb", True),
        ("/x[!a]", "/xa", False),
        ("/x[!a]", "/x/", False),
        ("/x[]]", "/x]", True),
        ("/x[!]]", "/x]", False),
        ("/x[.-0]", "/x/", False),
        ("/x[*]", "/x*", True),
        ("/x[*]", "/xy", False),
        # Regex metacharacters are literal.
        ("/a.b", "/axb", False),
        ("/a+b(c)", "/a+b(c)", True),
        ("/a^$|\\b", "/a^$|\\b", True),
        # Anchored on both ends.
        ("/etc/shadow", "/etc/shadow", True),
        ("/etc/shadow", "/etc/shadow-", False),
        ("/etc/shadow", "/x/etc/shadow", False),
        # File names may contain newlines.
        ("/tmp/*", "/tmp/a\nb", True),
    ],
)
def test_path_glob_semantics(pattern, subject, expected):
    assert path(pattern).matches(subject) is expected


def test_tilde_expands_to_every_home():
    glob = path("~/.aws/**", homes=["/root", "/home/alice", "/home/bob/"])
    assert glob.text == "~/.aws/**"
    assert glob.expanded == ("/root/.aws/**", "/home/alice/.aws/**", "/home/bob/.aws/**")
    assert glob.matches("/root/.aws/credentials")
    assert glob.matches("/home/alice/.aws/config")
    assert glob.matches("/home/bob/.aws")
    assert not glob.matches("/home/carol/.aws/credentials")
    assert not glob.matches("/home/alice/.awsx")
    assert not glob.is_literal


def test_bare_tilde_is_each_home_itself():
    glob = path("~", homes=["/root", "/home/alice"])
    assert glob.matches("/home/alice")
    assert not glob.matches("/home/alice/x")


def test_tilde_home_is_literal_not_a_pattern():
    # A home directory is a path, not a glob: its characters must not act as wildcards.
    glob = path("~/x", homes=["/home/a.b*"])
    assert glob.matches("/home/a.b*/x")
    assert not glob.matches("/home/aXbY/x")


def test_tilde_needs_homes():
    with pytest.raises(GlobError, match="home"):
        path("~/.ssh/**", homes=[])


@pytest.mark.parametrize(
    "pattern, message",
    [
        ("", "empty"),
        ("etc/passwd", "absolute"),
        ("*.key", "absolute"),
        ("~alice/.ssh", "absolute"),
        ("/srv/[crm", "unclosed '\\['"),
        ("/x[!", "unclosed"),
        ("/x[]", "unclosed"),
        ("/x\0y", "NUL"),
        ("/x[z-a]", "bad range"),
    ],
)
def test_bad_path_globs(pattern, message):
    with pytest.raises(GlobError, match=message):
        path(pattern, homes=["/root"])


def test_is_literal():
    assert path("/etc/shadow").is_literal
    assert path("/a]b").is_literal
    assert not path("/etc/*").is_literal
    assert not path("/etc/sh?dow").is_literal
    assert not path("/dev/sd[ab]").is_literal
    assert not path("~/x", homes=["/root"]).is_literal


def test_glob_keeps_text_and_line():
    glob = PathGlob.parse("/srv/**", 42)
    assert (glob.text, glob.line) == ("/srv/**", 42)
    assert PathGlob.parse("/srv/**", 1) == PathGlob.parse("/srv/**", 1)


@pytest.mark.parametrize(
    "pattern, subject, expected",
    [
        ("*crm_agent.py*", "/usr/bin/python3 /opt/crm/crm_agent.py --live", True),
        ("*crm_agent.py*", "python3 crm_agent.py", True),
        ("*crm_agent.py*", "python3 crm_agent_py", False),
        ("python3 -m ?oding_agent", "python3 -m coding_agent", True),
        ("python3 -m ?oding_agent", "python3 -m /oding_agent", True),
        ("*--mode=[ab]", "agent --mode=a", True),
        ("*--mode=[!ab]", "agent --mode=a", False),
        ("exact", "exact ", False),
    ],
)
def test_text_glob_semantics(pattern, subject, expected):
    assert TextGlob.parse(pattern).matches(subject) is expected


@pytest.mark.parametrize("pattern", ["", "[abc", "a\0b"])
def test_bad_text_globs(pattern):
    with pytest.raises(GlobError):
        TextGlob.parse(pattern)


# --- GlobList: a profile's list of globs as one regular expression ------------------------------

HOMES = ["/root", "/home/a"]
GLOB_SEGMENTS = st.sampled_from(["a", "b", "ab", "*", "?", "**", "a*", "[ab]", "[!a]", ".x", ".x*", "***", "a**"])
PATH_SEGMENTS = st.sampled_from(["a", "b", "ab", "ba", ".x", "x", ".xa", "root", "home", "..", "", "a\nb"])


def glob_text(tilde: bool, segments: list[str]) -> str:
    return ("~/" if tilde else "/") + "/".join(segments)


def path_text(base: str, segments: list[str]) -> str:
    return base + "/" + "/".join(segments)


globs = st.builds(glob_text, st.booleans(), st.lists(GLOB_SEGMENTS, min_size=0, max_size=4))
# Absolute paths, and the relative ones a name is judged as when its directory is unknown.
paths = (st.builds(path_text, st.sampled_from(["", "/root", "/home/a"]), st.lists(PATH_SEGMENTS, min_size=0, max_size=5))
         | st.builds("/".join, st.lists(PATH_SEGMENTS, min_size=0, max_size=3)))


@settings(max_examples=300, deadline=None)
@given(st.lists(globs, max_size=8), st.lists(paths, min_size=1, max_size=8))
def test_glob_list_finds_the_first_glob_that_matches_as_a_loop_would(texts, subjects):
    parsed = [path(t, homes=HOMES) for t in texts]
    ordered = GlobList(parsed)
    for subject in subjects:
        assert ordered.first(subject) is next((g for g in parsed if g.matches(subject)), None), subject


def test_glob_list_of_no_globs_matches_nothing():
    assert GlobList([]).first("/") is None


@pytest.mark.parametrize("texts, subject, expected", [
    (["/a/**"], "/a", 0), (["/a/**"], "/a/b/c", 0), (["/a/**"], "xa/b", None),  # relative: not below /a
    (["/**"], "/x/y", 0), (["/**"], "x", None), (["/**"], "", 0),  # `(?:/.*)?` matches ""
    (["~/.aws/**"], "/home/a/.aws/credentials", 0), (["~/.aws/**"], "/home/a/.awsx", None),
    (["/a/*"], "/a/b", 0), (["/a/*"], "/a/b/c", None),  # one `*` stays in its segment
    (["/a/b*", "/a/**"], "/a/bc", 0), (["/a/b*", "/a/**"], "/a/c", 1),  # the first glob that matches wins
    (["/**/.env"], "/x/.env", 0), (["/**/.env"], "/.env", 0), (["/**/.env"], "/x/.envy", None),
    (["/**/.env"], "/x/.env/y", None), (["/**/.env"], "/.env/x", None),
    (["/**/.env", "/**/.env.*"], "/x/.env.local", 1), (["/**/.env", "/**/.env.*"], "/.env.x/y", None),
    (["/a/x**"], "/a/xy/z", 0),  # a `**` in the last segment spans directories: no beginning to ask for
    (["/**/.x", "/b/*"], "/b/c", 1),  # a candidate without a beginning: every path is tried
])
def test_glob_list_answers_without_an_expression_only_where_the_expression_agrees(texts, subject, expected):
    """A path below a literal `/**` glob, and a last segment that begins as no candidate's
    does, are answered without the regex (GlobList): each case as the loop over globs finds it."""
    parsed = [path(t, homes=HOMES) for t in texts]
    looped = next((g for g in parsed if g.matches(subject)), None)
    assert looped is (parsed[expected] if expected is not None else None)
    assert GlobList(parsed).first(subject) is looped
