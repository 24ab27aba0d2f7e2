"""Who may talk to the API. The unix socket is root-only by its permissions. A TCP address is
served only with TLS (`--tls-cert`/`--tls-key`), optionally requiring client certificates signed
by `--tls-client-ca` (mutual TLS) and/or a bearer token from `--token-file`; a call without the
token gets UNAUTHENTICATED. Key and token files must be root-owned and unreadable by others."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

import grpc


class SecurityError(Exception):
    pass


def read_secret_file(path: Path, what: str) -> bytes:
    """A key or token: refused if others may read or write it."""
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise SecurityError(f"{what} {path}: {exc.strerror}") from None
    if st.st_mode & 0o077 or st.st_uid != os.geteuid():
        raise SecurityError(f"{what} {path}: must be owned by uid {os.geteuid()} and closed to others "
                            f"(fix with chown {os.geteuid()} {path}; chmod 600 {path})")
    return data


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SecurityError(f"{what} {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class TcpSecurity:
    cert: Path
    key: Path
    client_ca: Path | None = None
    token_file: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        pair = (read_secret_file(self.key, "TLS key"), _read(self.cert, "TLS certificate"))
        ca = _read(self.client_ca, "client CA") if self.client_ca else None
        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)

    def interceptors(self) -> list[grpc.ServerInterceptor]:
        if self.token_file is None:
            return []
        token = read_secret_file(self.token_file, "token file").strip()
        if not token:
            raise SecurityError(f"token file {self.token_file} is empty")
        return [BearerToken(token.decode())]


def _refuse(request, context):
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (metadata authorization: Bearer ...)")


class BearerToken(grpc.ServerInterceptor):
    """Every call must carry `authorization: Bearer TOKEN` (compared in constant time)."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        given = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode(), self._expected):
            return continuation(handler_call_details)
        return grpc.unary_unary_rpc_method_handler(_refuse)


def client_channel(server: str, ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
                   token: str | None = None) -> grpc.Channel:
    """A channel to the daemon: unix sockets as they are; TCP with TLS (server checked against
    `ca`, or the system's roots), a client certificate if given, and the token on every call."""
    if server.startswith("unix:"):
        return grpc.insecure_channel(server)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "CA") if ca else None,
        private_key=read_secret_file(key, "client key") if key else None,
        certificate_chain=_read(cert, "client certificate") if cert else None)
    if token:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token))
    return grpc.secure_channel(server, credentials)
