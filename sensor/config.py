"""The daemon's config file (`agent-sensor run --config FILE`): the same settings as the flags,
which override it. Read before anything starts; every problem names the file and the line."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

# Config key -> (the `run` option it sets, the type it must have).
KEYS = {
    "profiles": ("profile_paths", list), "listen": ("listen", list), "audit_only": ("audit_only", bool),
    "spool": ("spool", str), "spool_max_mb": ("spool_max_mb", int), "spool_max_days": ("spool_max_days", (int, float)),
    "tls_cert": ("tls_cert", str), "tls_key": ("tls_key", str), "tls_client_ca": ("tls_client_ca", str),
    "token_file": ("token_file", str), "metrics": ("metrics_address", str), "outputs": ("outputs", list),
    "bpf_cache": ("bpf_cache", str),
}


class ConfigError(Exception):
    pass


def load_config(path: Path) -> dict:
    """The `run` command's defaults from the file (a click default_map)."""
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ConfigError(f"{path}: must be owned by uid {os.geteuid()} and not writable by others "
                          f"(fix with chown {os.geteuid()} {path}; chmod go-w {path})")
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"{path}:{mark.line + 1 if mark else 1}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{path}:1: the config is a mapping of settings ({', '.join(KEYS)})")
    values = yaml.safe_load(text)
    out = {}
    for key_node, value_node in root.value:
        key, line = key_node.value, key_node.start_mark.line + 1
        if key not in KEYS:
            raise ConfigError(f"{path}:{line}: unknown setting {key!r}; known: {', '.join(KEYS)}")
        option, kind = KEYS[key]
        value = values[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{path}:{line}: {key} must be "
                              f"{'a list' if kind is list else 'true or false' if kind is bool else 'a number' if kind != str else 'text'}")
        if kind is list and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}:{line}: {key}: a list of strings")
        out[option] = value
    return out
