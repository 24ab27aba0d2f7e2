"""The built-in secrets catalogue: `secrets: [default]` in a profile means all of these.

Credential locations of the tools agents run next to. A profile removes an entry it must allow
with `"!ENTRY"` (the entry's text exactly as listed here), e.g.
`secrets: [default, "!~/.docker/config.json"]`, and adds its own entries beside it."""

DEFAULT_SECRETS: dict[str, tuple[str, ...]] = {
    "cloud CLIs": (
        "~/.aws/**", "~/.config/gcloud/**", "~/.azure/**", "~/.oci/**", "~/.config/doctl/**",
        "~/.terraform.d/credentials.tfrc.json",
    ),
    "SSH and GnuPG keys": ("~/.ssh/**", "~/.gnupg/**", "/etc/ssh/ssh_host_*_key"),
    "Kubernetes and containers": (
        "~/.kube/**", "~/.docker/config.json", "/var/run/secrets/kubernetes.io/**",
        "/run/secrets/kubernetes.io/**",
    ),
    "git and HTTP credentials": ("~/.netrc", "~/.git-credentials", "~/.config/git/credentials"),
    "package registry tokens": (
        "~/.npmrc", "~/.yarnrc.yml", "~/.pypirc", "~/.config/pip/pip.conf", "~/.cargo/credentials",
        "~/.cargo/credentials.toml", "~/.gem/credentials", "~/.m2/settings.xml", "~/.gradle/gradle.properties",
        "~/.nuget/NuGet/NuGet.Config",
    ),
    ".env files": ("/**/.env", "/**/.env.*"),
    "shell and REPL history": (
        "~/.bash_history", "~/.zsh_history", "~/.local/share/fish/fish_history", "~/.python_history",
        "~/.psql_history", "~/.mysql_history", "~/.node_repl_history",
    ),
    "AI agent tool tokens": (
        "~/.claude/**", "~/.claude.json", "~/.codex/**", "~/.gemini/**", "~/.config/gh/**",
        "~/.config/github-copilot/**", "~/.cursor/**", "~/.aider*",
    ),
    "system accounts": ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
                        "/etc/sudoers", "/etc/sudoers.d/**", "/etc/security/opasswd"),
}

ALL_DEFAULT_SECRETS: tuple[str, ...] = tuple(e for entries in DEFAULT_SECRETS.values() for e in entries)
