"""Username/password and TLS with client certificates, against a real Mosquitto configured for them."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from heatctl.config import parse_config
from heatctl.service import Service
from tests.services import Mosquitto, wait_until

pytestmark = pytest.mark.integration


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    """Mosquitto on TLS with a test CA, client certificates required, and a password file."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificates")
    pki = tmp_path / "pki"
    pki.mkdir()
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=heatctl test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=pki,
    )
    for name, cn in (("server", "127.0.0.1"), ("client", "heatctl")):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=pki,
        )
        ext = pki / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext.name,
            "-out",
            f"{name}.crt",
            cwd=pki,
        )
    passwords = tmp_path / "passwd"
    passwords.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "heatctl", "s3cret-pw"], check=True)
    broker = Mosquitto(tmp_path)
    broker.conf.write_text(
        f"listener {broker.port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
        f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n"
        "require_certificate true\npersistence false\nlog_dest stderr\n" + ("user root\n" if os.geteuid() == 0 else "")
        # As root, mosquitto drops to its own user before reading these files: stay root to read them.
    )
    broker.start()
    yield broker, pki
    broker.stop()


def secure_config(port: int, pki: Path, state: Path, password: str, client_cert: bool = True) -> str:
    cert = f", certfile: {pki / 'client.crt'}, keyfile: {pki / 'client.key'}" if client_cert else ""
    return f"""
node_id: secure
state_dir: {state}
mqtt:
  host: 127.0.0.1
  port: {port}
  username: heatctl
  password: {password}
  tls: {{ca_certs: {pki / "ca.crt"}{cert}}}
zones:
  - name: office
    temperature: {{topic: t/temp}}
    setpoint: {{topic: t/sp}}
    gpus: [gpu0]
gpus: [{{id: gpu0, backend: sim}}]
"""


def test_tls_with_client_certificate_and_password(tls_broker: tuple[Mosquitto, Path], tmp_path: Path) -> None:
    broker, pki = tls_broker
    svc = Service(parse_config(secure_config(broker.port, pki, tmp_path / "s", "s3cret-pw")))
    svc.start()
    try:
        wait_until(svc.link.connected.is_set, 10, "TLS connection with a client certificate")  # type: ignore[union-attr]
    finally:
        svc.shutdown()


def test_wrong_password_is_refused_and_never_logged(
    tls_broker: tuple[Mosquitto, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker, pki = tls_broker
    svc = Service(parse_config(secure_config(broker.port, pki, tmp_path / "s", "wrong-pw-123")))
    svc.start()
    try:
        wait_until(lambda: any("refused the connection" in r.getMessage() for r in caplog.records), 10, "refusal")
        assert not svc.link.connected.is_set()  # type: ignore[union-attr]
        snap = svc.tick()  # control goes on, failing safe
        assert snap.failsafe == "office: temperature stale"
    finally:
        svc.shutdown()
    assert all("wrong-pw-123" not in r.getMessage() for r in caplog.records)


def test_check_honours_insecure_as_run_does(tls_broker: tuple[Mosquitto, Path], tmp_path: Path) -> None:
    """``insecure: true`` (a self-signed broker the system does not trust): ``run`` connects, so must ``check``."""
    from heatctl.check import check_mqtt

    broker, pki = tls_broker
    text = secure_config(broker.port, pki, tmp_path / "s", "s3cret-pw").replace(
        f"tls: {{ca_certs: {pki / 'ca.crt'}, ", "tls: {insecure: true, "
    )
    cfg = parse_config(text)
    svc = Service(cfg)
    svc.start()
    try:
        wait_until(svc.link.connected.is_set, 10, "run connects without the CA, insecure")  # type: ignore[union-attr]
    finally:
        svc.shutdown()
    rows = check_mqtt(cfg)
    assert rows[0].part == "mqtt" and rows[0].ok, rows[0]
