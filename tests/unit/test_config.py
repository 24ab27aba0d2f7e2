"""The daemon's config file: settings by name, each problem with its file and line, and refused
if someone else could change it."""

from __future__ import annotations

import os

import pytest

from sensor.config import ConfigError, load_config


def write(tmp_path, text: str, mode: int = 0o644):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_settings_become_the_run_commands_defaults(tmp_path):
    path = write(tmp_path, "profiles: [/p]\nmetrics: 127.0.0.1:9464\noutputs: [stdout]\nspool_max_days: 0.5\n"
                           "audit_only: true\n")
    assert load_config(path) == {"profile_paths": ["/p"], "metrics_address": "127.0.0.1:9464",
                                 "outputs": ["stdout"], "spool_max_days": 0.5, "audit_only": True}
    assert load_config(write(tmp_path, "")) == {}


@pytest.mark.parametrize("text, message", [
    ("profiles: [/p]\nlisen: [x]\n", "config.yaml:2: unknown setting 'lisen'"),
    ("outputs: stdout\n", "config.yaml:1: outputs must be a list"),
    ("spool_max_mb: big\n", "config.yaml:1: spool_max_mb must be a number"),
    ("audit_only: 1\n", "config.yaml:1: audit_only must be true or false"),
    ("- a\n", "config.yaml:1: the config is a mapping"),
    ("profiles: [/p\n", "config.yaml:2: not valid YAML"),
])
def test_each_problem_names_the_file_and_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_a_config_others_could_change_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=f"must be owned by uid {os.geteuid()} and not writable by others"):
        load_config(write(tmp_path, "profiles: [/p]\n", mode=0o666))
