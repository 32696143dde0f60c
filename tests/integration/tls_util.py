"""TLS helpers for limpet's integration tests; nothing here shares code with limpet.

  Pki(dir)                      a test CA (python3-cryptography) and leaves it signs: names, IP
                                addresses, a validity window; PEM files written under `dir`
  client_context(pki)           a Python ssl client context trusting the test CA
  HttpsBackend(cert, key)       an HTTPS backend (http.server + ssl) in a thread: /echo answers the
                                request line, headers and the SNI name it was reached with
  WssBackend(cert, key)         a WebSocket echo server over TLS (websockets) in a thread
  run_cmd(args)                 a subprocess (curl, openssl) with a deadline: (returncode, stdout, stderr)
"""

import datetime
import http.server
import ipaddress
import json
import socket
import ssl
import subprocess
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


# ---------------------------------------------------------------------------------------------
# certificates


class Pki:
    """A CA and the certificates it issues, as files under `directory`."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "limpet integration test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256()))
        self.ca_file = self.dir / "ca.pem"
        self.ca_file.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name, dns=(), ips=(), not_before_days=-1, not_after_days=30, cert_path=None, key_path=None):
        """Writes NAME.pem and NAME.key (or the given paths, replaced atomically); returns
        (cert_path, key_path, sha256 fingerprint of the certificate)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (list(dns) or [name])[0])]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=not_before_days))
            .not_valid_after(now + datetime.timedelta(days=not_after_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        cert_path = Path(cert_path or self.dir / f"{name}.pem")
        key_path = Path(key_path or self.dir / f"{name}.key")
        write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        write_atomically(key_path, key.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
        return str(cert_path), str(key_path), cert.fingerprint(hashes.SHA256()).hex()


def write_atomically(path, data):
    tmp = Path(str(path) + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def fingerprint(der):
    cert = x509.load_der_x509_certificate(der)
    return cert.fingerprint(hashes.SHA256()).hex()


def client_context(pki, alpn=("http/1.1",)):
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_connect(port, ctx, server_name="localhost", timeout=10):
    """A connected, handshaken ssl socket to 127.0.0.1:port."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_name)
    except BaseException:
        raw.close()
        raise


def https_get(port, ctx, path="/echo", server_name="localhost", session=None, timeout=10):
    """One GET on a new TLS connection: (status, body bytes, ssl socket facts)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with ctx.wrap_socket(raw, server_hostname=server_name, session=session) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            piece = s.recv(65536)
            if not piece:
                break
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        facts = {"version": s.version(), "alpn": s.selected_alpn_protocol(), "reused": s.session_reused,
                 "session": s.session, "fingerprint": fingerprint(s.getpeercert(binary_form=True))}
    return int(head.split(b" ", 2)[1]), body, facts


# ---------------------------------------------------------------------------------------------
# an HTTPS backend


class HttpsBackend:
    """http.server over TLS in a thread of the test process. /echo answers JSON with the method,
    path, headers and the SNI name the client sent (null without SNI); /conn answers the id of the
    TCP connection; anything else 200 "ok"."""

    def __init__(self, cert, key, name="tlsb"):
        self.name = name
        self.sni_seen = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.sni_callback = lambda sock, server_name, _ctx: self.sni_seen.append(server_name)
        backend = self
        connections = iter(range(1, 1 << 30))

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # Head and body go out in separate writes: without this, Nagle and the peer's
                # delayed ACK add 40 ms to every response.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.conn_id = next(connections)

            def do_GET(self):
                if self.path.startswith("/echo"):
                    body = json.dumps({"backend": backend.name, "method": self.command, "path": self.path,
                                       "headers": [[k, v] for k, v in self.headers.items()],
                                       "sni": backend.sni_seen[-1] if backend.sni_seen else None}).encode()
                elif self.path.startswith("/conn"):
                    body = str(self.conn_id).encode()
                else:
                    body = b"ok"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class WssBackend:
    """A WebSocket echo server over TLS (python3-websockets) on an asyncio loop in a thread."""

    def __init__(self, cert, key):
        import asyncio

        import websockets

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def echo(ws):
            async for message in ws:
                await ws.send(message)

        async def serve():
            self.server = await websockets.serve(echo, "127.0.0.1", 0, ssl=ctx, max_size=16 << 20,
                                                 compression=None, ping_interval=None)
            self.port = self.server.sockets[0].getsockname()[1]
            started.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self.loop)
        if not started.wait(10):
            raise AssertionError("the WSS backend did not start")
        self.address = f"127.0.0.1:{self.port}"

    def close(self):
        import asyncio

        async def stop():
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# ---------------------------------------------------------------------------------------------
# outside tools


def run_cmd(args, timeout=20, stdin=b""):
    p = subprocess.run(args, input=stdin, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
