"""A throwaway certificate authority (openssl) and TLS-only Redis and PostgreSQL test servers.

The CA signs one server certificate for `localhost` and `127.0.0.1` (subjectAltName), which is
what `sslmode=verify-full` and redis-py's hostname check compare the address against.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from tests.support.servers import PostgresServer, RedisServer, wait_port


class Authority:
    """`ca.crt`/`ca.key`, and `server.crt`/`server.key` signed by it, in a temporary directory."""

    def __init__(self, name: str = "streamscale test CA") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="streamscale-ca-"))
        self.ca_cert = self.dir / "ca.crt"
        self.ca_key = self.dir / "ca.key"
        self.cert = self.dir / "server.crt"
        self.key = self.dir / "server.key"
        self._make(name)

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=self.dir)

    def _make(self, name: str) -> None:
        self._openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", str(self.ca_key), "-out", str(self.ca_cert),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        csr = self.dir / "server.csr"
        self._openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", str(self.key), "-out", str(csr),
        )  # fmt: skip
        ext = self.dir / "server.ext"
        ext.write_text(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
        )
        self._openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert), "-CAkey", str(self.ca_key),
            "-CAcreateserial", "-days", "2", "-out", str(self.cert), "-extfile", str(ext),
        )  # fmt: skip
        for path in (self.dir, self.ca_cert, self.cert, self.key):
            path.chmod(0o755 if path.is_dir() else 0o644)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class TlsRedisServer(RedisServer):
    """redis-server with TLS only: `--port 0` closes the plain port."""

    def __init__(self, ca: Authority, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.ca = ca

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.ca.ca_cert))}"

    def start(self) -> None:
        args = [
            self.binary,
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(self.ca.cert),
            "--tls-key-file", str(self.ca.key),
            "--tls-ca-cert-file", str(self.ca.ca_cert),
            "--tls-auth-clients", "no",
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(self.dir / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)


class TlsPostgresServer(PostgresServer):
    """A cluster that accepts TCP connections over TLS only (`hostssl`, `hostnossl ... reject`)."""

    def __init__(self, ca: Authority) -> None:
        super().__init__()
        self.ca = ca

    def init(self) -> None:
        super().init()
        # PostgreSQL refuses a key readable by others or owned by someone else.
        for src, name in ((self.ca.cert, "server.crt"), (self.ca.key, "server.key")):
            dest = self.data / name
            shutil.copy(src, dest)
            dest.chmod(0o600)
            if os.geteuid() == 0:
                pw = pwd.getpwnam("postgres")
                os.chown(dest, pw.pw_uid, pw.pw_gid)
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            "hostnossl all all 0.0.0.0/0 reject\n"
            "hostssl all all 127.0.0.1/32 trust\n"
        )

    def start(self) -> None:
        opts = (
            f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off -c synchronous_commit=off"
            " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts,
            "-l", str(self.root / "postgres.log"), "-w", "-t", "60", "start",
        )  # fmt: skip
        self.started = True

    def url(self, database: str = "postgres") -> str:
        root = quote(str(self.ca.ca_cert))
        return (
            f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"
            f"?sslmode=verify-full&sslrootcert={root}"
        )


@contextlib.contextmanager
def authority(name: str = "streamscale test CA") -> Iterator[Authority]:
    ca = Authority(name)
    try:
        yield ca
    finally:
        ca.close()
