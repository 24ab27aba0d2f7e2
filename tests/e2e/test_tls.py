"""Nobody in: the API on TCP is served only with TLS; with --tls-client-ca and --token-file a
client needs a certificate from that CA and the token, else it is turned away
(UNAUTHENTICATED for a missing token). Certificates are made here, for this test only."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sensor.client import SensorClient

from .conftest import CLI, free_port, start_daemon, stop_daemon


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(directory, stem: str, issuer=None, server: bool = False, ca: bool = False):
    """(cert path, key path, cert, key); self-signed when issuer is None."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    signer_cert, signer_key = issuer if issuer else (None, key)
    builder = (x509.CertificateBuilder().subject_name(_name(stem))
               .issuer_name(signer_cert.subject if signer_cert else _name(stem))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path, cert, key


@pytest.fixture
def pki(tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    ca_crt, _, ca_cert, ca_key = make_cert(pki, "ca", ca=True)
    server = make_cert(pki, "server", issuer=(ca_cert, ca_key), server=True)
    client = make_cert(pki, "client", issuer=(ca_cert, ca_key))
    rogue = make_cert(pki, "rogue")  # self-signed: not from the CA
    token = pki / "token"
    token.write_text("s3cret-token\n")
    token.chmod(0o600)
    return {"ca": ca_crt, "server": server, "client": client, "rogue": rogue, "token": token}


@pytest.fixture
def tls_daemon(tmp_path, pki):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "p.yaml").write_text("name: e2e-tls\n")
    address = f"127.0.0.1:{free_port()}"
    proc, server, log = start_daemon(tmp_path, tmp_path / "profiles", "--listen", address,
                                     "--tls-cert", str(pki["server"][0]), "--tls-key", str(pki["server"][1]),
                                     "--tls-client-ca", str(pki["ca"]), "--token-file", str(pki["token"]))
    yield address
    assert stop_daemon(proc, log) == 0, log.read_text()


def status_code(address: str, **client) -> grpc.StatusCode:
    try:
        with SensorClient(address, timeout=5, **client) as c:
            c.status()
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


def test_tcp_needs_a_ca_signed_client_certificate_and_the_token(tls_daemon, pki):
    cert, key = pki["client"][0], pki["client"][1]
    assert status_code(tls_daemon, ca=pki["ca"], cert=cert, key=key, token="s3cret-token") == grpc.StatusCode.OK
    assert status_code(tls_daemon, ca=pki["ca"], cert=cert, key=key) == grpc.StatusCode.UNAUTHENTICATED
    assert status_code(tls_daemon, ca=pki["ca"], cert=cert, key=key, token="guess") == grpc.StatusCode.UNAUTHENTICATED
    # No client certificate, or one the CA did not sign: the TLS handshake fails.
    assert status_code(tls_daemon, ca=pki["ca"], token="s3cret-token") == grpc.StatusCode.UNAVAILABLE
    assert status_code(tls_daemon, ca=pki["ca"], cert=pki["rogue"][0], key=pki["rogue"][1],
                       token="s3cret-token") == grpc.StatusCode.UNAVAILABLE
    # A client that does not trust the server's CA does not talk to it.
    assert status_code(tls_daemon, ca=pki["rogue"][0], cert=cert, key=key,
                       token="s3cret-token") == grpc.StatusCode.UNAVAILABLE


def test_the_cli_uses_the_environment_for_tls_and_says_when_it_is_refused(tls_daemon, pki):
    env = {"PATH": "/usr/bin:/bin", "AGENT_SENSOR_TLS_CA": str(pki["ca"]),
           "AGENT_SENSOR_TLS_CERT": str(pki["client"][0]), "AGENT_SENSOR_TLS_KEY": str(pki["client"][1])}
    refused = subprocess.run([CLI, "status", "--server", tls_daemon], capture_output=True, text=True, env=env)
    assert refused.returncode == 1 and "refused this client" in refused.stderr
    ok = subprocess.run([CLI, "status", "--server", tls_daemon], capture_output=True, text=True,
                        env={**env, "AGENT_SENSOR_TOKEN_FILE": str(pki["token"])})
    assert ok.returncode == 0, ok.stderr
    assert "e2e-tls" in ok.stdout


@pytest.mark.parametrize("problem", ["plain TCP", "key readable by others"])
def test_the_daemon_refuses_an_unprotected_tcp_api(tmp_path, pki, problem):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "p.yaml").write_text("name: e2e-tls\n")
    args = [CLI, "run", "--profiles", str(tmp_path / "profiles"), "--spool", str(tmp_path / "a.db"),
            "--listen", f"127.0.0.1:{free_port()}"]
    if problem == "key readable by others":
        pki["server"][1].chmod(0o644)
        args += ["--tls-cert", str(pki["server"][0]), "--tls-key", str(pki["server"][1])]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    expected = "TCP is served only with TLS" if problem == "plain TCP" else "must be owned by uid 0 and closed to others"
    assert expected in done.stderr
