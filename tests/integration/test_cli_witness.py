"""``sbx audit witness``: a regulator witnessing a real gateway over HTTPS with their own
API token (the server's certificate issued by a test CA, given with ``--ca-file``), and
a ledger folder from the shell; wrong tokens, certificates and addresses are refused
with a reason and an exit status of their own."""

from __future__ import annotations

import ipaddress
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from audit import Ledger
from audit.verify import main as verify_main
from gateway.cli import app
from tests.integration.test_ledger_api import LedgerGateway
from tests.integration.test_serve import free_port
from tests.webconsole import served as serving

runner = CliRunner()


@dataclass
class Served:
    gateway: LedgerGateway
    url: str
    ca_file: Path


def issue(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: Any, *, ca: bool
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 it issued: (ca, cert, key)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sbx test CA")])
    ca = issue("sbx test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue("127.0.0.1", key, ca_name, ca_key, ca=False)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The gateway served over HTTPS by uvicorn in a thread of this process."""
    folder = tmp_path_factory.mktemp("witness-gateway")
    made = LedgerGateway(f"sqlite:///{folder / 'sbx.db'}", folder / "var")
    ca_file, cert, key = certificates(folder)
    try:
        with serving(made.app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
            yield Served(made, url, ca_file)
    finally:
        made.close()


def sbx(*args: str, token: str | None = None, data_dir: Path | None = None) -> tuple[int, str]:
    env = {"SBX_TOKEN": token} if token is not None else {"SBX_TOKEN": ""}
    root = ["--data-dir", str(data_dir)] if data_dir is not None else []
    result = runner.invoke(app, [*root, "audit", "witness", *args], env=env)
    return result.exit_code, result.stdout + result.stderr


def test_a_regulator_witnesses_the_gateway_over_https(served: Served, tmp_path: Path) -> None:
    made, seen = served.gateway, tmp_path / "seen.log"
    first_key = made.ledger.keychain().records[0].key_id
    over_https = (str(seen), "--url", served.url, "--ca-file", str(served.ca_file))
    token = made.tokens["chen"]

    code, out = sbx(*over_https, "--trusted-key", first_key, token=token)
    assert code == 0, out
    assert out.startswith("OK: first checkpoint witnessed")
    assert f"first key {first_key} is pinned" in out
    assert f"gateway {served.url}/api/v1" in out

    made.ledger.append(action="dataset.read", actor=f"user:{made.chen.id}", object="dataset:1")
    newer = made.ledger.checkpoint()
    code, out = sbx(*over_https, "--json", token=token)
    assert code == 0, out
    report = json.loads(out)
    assert (report["outcome"], report["appended"]) == ("ok", True)
    assert report["latest"] == newer.to_dict()
    code, out = sbx(*over_https, token=token)
    assert (code, out.startswith("OK: no new entries")) == (0, True), out
    assert verify_main([str(made.ledger.path), "--witness", str(seen)]) == 0


def test_tokens_certificates_and_addresses_are_checked(served: Served, tmp_path: Path) -> None:
    made, seen = served.gateway, str(tmp_path / "seen.log")
    url, ca = ("--url", served.url), ("--ca-file", str(served.ca_file))
    refusals = [
        # (arguments, token, exit status, what the message says)
        ((seen, *url), made.tokens["chen"], 3, "CERTIFICATE_VERIFY_FAILED"),
        ((seen, *url, *ca), made.tokens["ann"], 3, "may not read the ledger (HTTP 403"),
        ((seen, *url, *ca), "sbx_forged", 3, "refused the token (HTTP 401"),
        ((seen, *url, *ca), None, 2, "set the environment variable SBX_TOKEN"),
        ((seen, "--url", "http://sbx.example.cn"), "t", 2, "must be https://"),
        ((seen, "--url", f"https://127.0.0.1:{free_port()}", *ca), "t", 3, "UNREACHABLE"),
        ((seen, *url, "--ca-file", str(tmp_path / "none.pem")), "t", 2, "does not exist"),
        ((seen, *url, "--ledger", str(tmp_path)), "t", 2, "either --ledger DIR or --url"),
    ]
    for args, token, status, message in refusals:
        code, out = sbx(*args, token=token)
        assert (code, message in out) == (status, True), (args, out)
        assert "Traceback" not in out
    assert not (tmp_path / "seen.log.pin").exists()  # nothing pinned from a failed run

    # A path the server does not know is not a ledger that lost its checkpoints.
    assert sbx(seen, *url, *ca, token=made.tokens["chen"])[0] == 0
    code, out = sbx(seen, "--url", f"{served.url}/elsewhere", *ca, token=made.tokens["chen"])
    assert (code, "HTTP 404: Not Found" in out) == (3, True), out


def test_a_gateway_behind_what_was_witnessed_is_a_rollback(served: Served, tmp_path: Path) -> None:
    """The witness saw a copy of the gateway's ledger that went further (as if the gateway
    were later put back): the gateway is behind, then cannot prove what was seen."""
    made, seen, ahead = served.gateway, str(tmp_path / "seen.log"), tmp_path / "ahead"
    over_https = ("--url", served.url, "--ca-file", str(served.ca_file))
    made.ledger.checkpoint()
    shutil.copytree(made.ledger.path, ahead)
    with Ledger(ahead) as copy:
        copy.append_many([{"action": "dataset.read", "actor": "user:a", "object": "d:1"}] * 3)
    assert sbx(seen, "--ledger", str(ahead))[0] == 0

    code, out = sbx(seen, *over_https, token=made.tokens["chen"])
    assert code == 6, out
    assert out.startswith("ROLLBACK: the ledger's latest checkpoint has size")
    made.ledger.append_many([{"action": "dataset.read", "actor": "user:b", "object": "d:2"}] * 5)
    made.ledger.checkpoint()
    code, out = sbx(seen, *over_https, token=made.tokens["chen"])
    assert code == 6, out
    assert "cannot prove that it still holds the checkpoint of size" in out
    assert "there is no checkpoint of size" in out  # the gateway's own reason


def test_the_deployments_ledger_is_witnessed_from_the_shell(tmp_path: Path) -> None:
    data, seen = tmp_path / "var", tmp_path / "seen.log"
    with Ledger(data / "ledger") as ledger:
        ledger.append(action="dataset.read", actor="user:li.wei", object="dataset:1")
    code, out = sbx(str(seen), data_dir=data)
    assert code == 0, out
    assert "taken on trust (pin it with --trusted-key)" in out
    backup = tmp_path / "backup"
    (data / "ledger").rename(backup)
    code, out = sbx(str(seen), data_dir=data)
    assert code == 3, out
    assert "is not a ledger folder" in out
    with Ledger(backup) as ledger:
        ledger.append(action="dataset.read", actor="user:li.wei", object="dataset:2")
    code, out = sbx(str(seen), "--ledger", str(backup), "--json")
    assert (code, json.loads(out)["outcome"]) == (0, "ok"), out
    code, out = sbx(str(seen), "--ledger", str(data / "missing"))
    assert code == 3
    (backup / "checkpoints.log").write_bytes(b"")
    code, out = sbx(str(seen), "--ledger", str(backup))
    assert code == 6, out
    assert out.startswith("ROLLBACK: the ledger has no checkpoint at all")
