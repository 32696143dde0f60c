#!/usr/bin/env python3
"""Renders a proxy config template of bench/peers/: @NAME@ placeholders from NAME=VALUE arguments,
and @SERVERS@ as the backend list in the proxy's own syntax (--servers PORT,PORT,...).

usage: render.py TEMPLATE OUTPUT --kind limpet|nginx|haproxy --servers 18601,18602 NAME=VALUE...
"""
import argparse
import re
import sys


def servers_block(kind, ports):
    if kind == "nginx":
        # max_fails=0: a benchmark hiccup must not take a backend out of the hash.
        return "\n    ".join(f"server 127.0.0.1:{p} max_fails=0;" for p in ports)
    if kind == "haproxy":
        return "\n  ".join(f"server b{i} 127.0.0.1:{p}" for i, p in enumerate(ports, 1))
    if kind == "limpet":
        return "\n".join(f'[[upstream.backend]]\nname = "b{i}"\naddress = "127.0.0.1:{p}"\n'
                         for i, p in enumerate(ports, 1))
    raise SystemExit(f"render.py: unknown kind {kind}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("template")
    ap.add_argument("output")
    ap.add_argument("--kind", required=True)
    ap.add_argument("--servers", required=True)
    ap.add_argument("values", nargs="*")
    args = ap.parse_intermixed_args()
    values = dict(v.split("=", 1) for v in args.values)
    values["SERVERS"] = servers_block(args.kind, args.servers.split(","))
    text = open(args.template).read()

    def sub(m):
        if m.group(1) not in values:
            raise SystemExit(f"render.py: {args.template}: no value for @{m.group(1)}@")
        return values[m.group(1)]

    text = re.sub(r"@([A-Z0-9_]+)@", sub, text)
    with open(args.output, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
