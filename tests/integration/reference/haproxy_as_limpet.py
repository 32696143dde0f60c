#!/usr/bin/python3
"""Run HAProxy (mode http) in place of limpet, from a limpet config: the second reference of
test_smuggling.py, beside nginx_as_limpet.py.

  LIMPET_BIN=tests/integration/reference/haproxy_as_limpet.py /usr/bin/python3 -m pytest tests/integration

Only what the tests use is translated: listeners (address, header_timeout, keepalive_timeout),
upstreams (backends, round robin, connect_timeout, read_timeout), workers. X-Forwarded-For is added
as limpet adds it. The script execs HAProxy in the foreground (-db), so the pid is HAProxy's.
"""
import os
import re
import sys
import tempfile
import tomllib


def ms(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", text)
    return int(int(m.group(1)) * {"ms": 1, "s": 1000, "m": 60000}[m.group(2)])


def main():
    args = sys.argv[1:]
    if "-c" not in args:
        print("usage: haproxy_as_limpet.py -c FILE", file=sys.stderr)
        return 1
    with open(args[args.index("-c") + 1], "rb") as f:
        cfg = tomllib.load(f)
    server = cfg.get("server", {})
    out = [
        "global",
        f"  nbthread {server.get('workers', 1)}",
        "  maxconn 1024",
        "defaults",
        "  mode http",
        "  option forwardfor",
        "  timeout client 30s",
        "  timeout tunnel 30s",
    ]
    for i, lst in enumerate(cfg["listener"]):
        out += [
            f"frontend listener{i}",
            f"  bind {lst['address']}",
            f"  timeout http-request {ms(lst.get('header_timeout', '10s'))}ms",
            f"  timeout http-keep-alive {ms(lst.get('keepalive_timeout', '75s'))}ms",
            f"  default_backend {lst['upstream']}",
        ]
    for up in cfg["upstream"]:
        out += [
            f"backend {up['name']}",
            "  balance roundrobin",
            f"  timeout connect {ms(up.get('connect_timeout', '5s'))}ms",
            f"  timeout server {ms(up.get('read_timeout', '60s'))}ms",
        ]
        out += [f"  server {b['name']} {b['address']}" for b in up["backend"]]
    conf = os.path.join(tempfile.mkdtemp(prefix="haproxy-ref-"), "haproxy.cfg")
    with open(conf, "w") as f:
        f.write("\n".join(out) + "\n")
    os.execv("/usr/sbin/haproxy", ["haproxy", "-db", "-f", conf])


if __name__ == "__main__":
    sys.exit(main())
