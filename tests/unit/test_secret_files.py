"""Secret files by identity, and when the identities are re-read."""

import os

from sensor.profiles import load_profile_file
from sensor.secret_files import LINK_REFRESH_GAP_S, REFRESH_S, SecretFiles, file_id, secret_file_ids


def profile(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(f'name: s\nsecrets: ["{tmp_path}/vault/**", "{tmp_path}/single", "/**/.env"]\n')
    return load_profile_file(path, homes=["/root"])


def test_ids_cover_literal_files_and_directory_trees(tmp_path):
    (tmp_path / "vault" / "deep").mkdir(parents=True)
    (tmp_path / "vault" / "deep" / "k").write_text("k")
    (tmp_path / "single").write_text("s")
    ids = secret_file_ids(profile(tmp_path))
    assert ids[file_id(str(tmp_path / "vault" / "deep" / "k"))] == f"{tmp_path}/vault/**"
    assert ids[file_id(str(tmp_path / "single"))] == f"{tmp_path}/single"
    assert "/**/.env" not in ids.values()  # a glob rooted at / is matched by name only


def test_refresh_after_the_interval_or_on_an_unknown_hard_link(tmp_path):
    (tmp_path / "vault").mkdir()
    now = [0.0]
    files = SecretFiles([profile(tmp_path)], clock=lambda: now[0])
    (tmp_path / "vault" / "new").write_text("n")
    new = file_id(str(tmp_path / "vault" / "new"))
    assert new not in files.of("s")
    now[0] += LINK_REFRESH_GAP_S + 0.1
    assert new not in files.of("s", opened=new, links=1)  # one name: no reason to re-read yet
    os.link(tmp_path / "vault" / "new", tmp_path / "hardlink")
    assert new in files.of("s", opened=new, links=2)      # several names: re-read at once
    (tmp_path / "vault" / "later").write_text("l")
    later = file_id(str(tmp_path / "vault" / "later"))
    now[0] += REFRESH_S + 1
    assert later in files.of("s")


def test_a_reused_inode_number_is_not_the_secret(tmp_path):
    """A secret deleted and its inode number given to a new file: the identity is stale, and the
    new file is judged by a fresh read, not mistaken for the secret."""
    (tmp_path / "vault").mkdir()
    (tmp_path / "vault" / "key").write_text("k")
    files = SecretFiles([profile(tmp_path)], clock=lambda: 0.0)
    old = file_id(str(tmp_path / "vault" / "key"))
    assert old in files.of("s")
    (tmp_path / "vault" / "key").unlink()
    # What a new file with the freed inode number looks like to the sensor: that identity, opened.
    assert old not in files.of("s", opened=old, links=1)


def test_a_glob_without_double_star_is_walked_no_deeper_than_it_can_match(tmp_path, monkeypatch):
    """`~/.aider*` is in the home itself, and `~/.config/*/token` two levels down: their
    identities are read without walking the rest of the home's tree, which every refresh did."""
    home = tmp_path / "home"
    (home / ".config" / "tool").mkdir(parents=True)
    (home / ".config" / "tool" / "token").write_text("t")
    (home / ".config" / "tool" / "deeper" / "more").mkdir(parents=True)
    (home / "project" / "node_modules" / "x").mkdir(parents=True)
    (home / ".aider.conf").write_text("a")
    path = tmp_path / "p.yaml"
    path.write_text('name: s\nsecrets: ["~/.aider*", "~/.config/*/token"]\n')
    walked = []
    real_walk = os.walk

    def walk(top, *args, **kwargs):
        for root, dirs, files in real_walk(top, *args, **kwargs):
            walked.append(root)
            yield root, dirs, files

    monkeypatch.setattr(os, "walk", walk)
    ids = secret_file_ids(load_profile_file(path, homes=[str(home)]))
    assert set(ids) == {file_id(str(home / ".aider.conf")), file_id(str(home / ".config" / "tool" / "token"))}
    assert sorted(walked) == sorted([str(home), str(home / ".config"), str(home / ".config" / "tool")])
