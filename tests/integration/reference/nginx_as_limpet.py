#!/usr/bin/python3
"""Run nginx in place of limpet, from a limpet config: a reference to check the tests themselves.

  LIMPET_BIN=tests/integration/reference/nginx_as_limpet.py /usr/bin/python3 -m pytest tests/integration

A test that fails here as well as with limpet may be wrong (or nginx differs on purpose: its
SIGTERM is a fast stop, it answers 400 where limpet answers 431, it has no `-t` of limpet's form).
Only the settings the tests use are translated. The script execs nginx, so the pid is nginx's.
"""
import os
import re
import sys
import tempfile
import tomllib


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", text)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def main():
    args = sys.argv[1:]
    if "-c" not in args:
        print("usage: nginx_as_limpet.py -c FILE", file=sys.stderr)
        return 1
    path = args[args.index("-c") + 1]
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    server = cfg.get("server", {})
    prefix = tempfile.mkdtemp(prefix="nginx-ref-")
    out = [
        f"worker_processes {server.get('workers', 1)};",
        f"worker_shutdown_timeout {int(seconds(server.get('shutdown_timeout', '10s')) * 1000)}ms;",
        f"pid {prefix}/nginx.pid;",
        "error_log stderr info;",
        "events { worker_connections %d; }" % max(64, cfg["listener"][0].get("max_connections", 1024) + 16),
        "http {",
        "  access_log off;",
        f"  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;",
        f"  fastcgi_temp_path {prefix}/f; uwsgi_temp_path {prefix}/u; scgi_temp_path {prefix}/s;",
        "  map $http_upgrade $conn_upgrade { default upgrade; '' ''; }",
    ]
    for up in cfg["upstream"]:
        out.append(f"  upstream {up['name']} {{")
        for b in up["backend"]:
            out.append(f"    server {b['address']} max_fails=0;")
        out.append("    keepalive 32;")
        out.append("  }")
    for lst in cfg["listener"]:
        up = next(u for u in cfg["upstream"] if u["name"] == lst["upstream"])
        out += [
            "  server {",
            f"    listen {lst['address']} reuseport;",
            f"    client_header_timeout {int(seconds(lst.get('header_timeout', '10s')) * 1000)}ms;",
            f"    client_max_body_size {lst.get('max_body_size', '16m')};",
            f"    keepalive_timeout {int(seconds(lst.get('keepalive_timeout', '75s')) * 1000)}ms;",
            "    large_client_header_buffers 4 16k;",
            "    location / {",
            f"      proxy_pass http://{up['name']};",
            "      proxy_http_version 1.1;",
            "      proxy_set_header Host $http_host;",
            "      proxy_set_header Upgrade $http_upgrade;",
            "      proxy_set_header Connection $conn_upgrade;",
            "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "      proxy_set_header X-Forwarded-Proto $scheme;",
            "      proxy_set_header X-Forwarded-Host $http_host;",
            "      proxy_set_header TE '';",
            "      proxy_set_header Trailer '';",
            "      proxy_set_header Proxy-Authorization '';",
            "      proxy_set_header Proxy-Connection '';",
            "      proxy_request_buffering off;",
            "      proxy_buffering off;",
            f"      proxy_read_timeout {int(seconds(up.get('read_timeout', '60s')) * 1000)}ms;",
            f"      proxy_connect_timeout {int(seconds(up.get('connect_timeout', '5s')) * 1000)}ms;",
            "      proxy_next_upstream error timeout;",
            "    }",
            "  }",
        ]
    out.append("}")
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write("\n".join(out) + "\n")
    os.execv("/usr/sbin/nginx", ["nginx", "-p", prefix, "-e", "stderr", "-c", conf, "-g", "daemon off;"])


if __name__ == "__main__":
    sys.exit(main())
