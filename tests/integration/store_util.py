"""A real redis-server for the session store tests: its own temp dir, a port from the OS, extra
config lines (requirepass, ACL users, TLS), killed and restarted on the same port on demand."""

import subprocess
import time

from conftest import free_port, wait_until


class Redis:
    def __init__(self, tmp_path, name="redis", lines=(), tls=False):
        self.dir = tmp_path / name
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.lines = list(lines)
        self.tls = tls
        self.auth = []  # redis-cli arguments
        self.proc = None
        if tls:
            self._make_certs()

    def _make_certs(self):
        d = str(self.dir)
        run = lambda *a: subprocess.run(a, cwd=d, check=True, capture_output=True)
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=limpet-test-ca")
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
        (self.dir / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.ext")

    @property
    def ca_file(self):
        return str(self.dir / "ca.pem")

    def start(self):
        conf = ["bind 127.0.0.1", 'save ""', "appendonly no", f"dir {self.dir}"]
        if self.tls:
            conf += ["port 0", f"tls-port {self.port}", f"tls-cert-file {self.dir}/server.pem",
                     f"tls-key-file {self.dir}/server.key", f"tls-ca-cert-file {self.dir}/ca.pem",
                     "tls-auth-clients no"]
        else:
            conf.append(f"port {self.port}")
        (self.dir / "redis.conf").write_text("\n".join(conf + self.lines) + "\n")
        self.log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(["redis-server", str(self.dir / "redis.conf")], stdout=self.log,
                                     stderr=self.log, stdin=subprocess.DEVNULL)
        wait_until(lambda: self.proc.poll() is not None or "PONG" in self.cli("PING") or
                   "NOAUTH" in self.cli("PING"), 10, "redis-server to answer PING")
        assert self.proc.poll() is None, (self.dir / "redis.log").read_text()
        return self

    def cli(self, *args):
        cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port)]
        if self.tls:
            cmd += ["--tls", "--cacert", self.ca_file]
        cmd += self.auth + [str(a) for a in args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            self.log.close()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"
