#!/usr/bin/env python3
"""The ring is a pure function of the config (design §5), checked from outside the process.

Runs ring_dump twice in two differently set up processes (one with a near-empty environment in
/, one with extra variables, another working directory and, where setarch allows it, address
space randomisation turned off, so pointer values differ between the two), checks that the two
outputs are byte-identical, and compares their sha256 with the golden digest in ring_golden.txt.

  ring_golden_test.py RING_DUMP GOLDEN_FILE            the test (meson: ring-golden)
  ring_golden_test.py RING_DUMP GOLDEN_FILE --print    print the digest of this build's output

Exit 0 when both hold, 1 otherwise, with what differed.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile


def run(cmd, env, cwd):
    p = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    if p.returncode != 0:
        sys.stderr.write(f"ring_golden: {' '.join(cmd)} exited {p.returncode}: {p.stderr.decode(errors='replace')}\n")
        sys.exit(1)
    return p.stdout


def golden_digest(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                algo, _, digest = line.partition(" ")
                if algo != "sha256" or len(digest.strip()) != 64:
                    sys.exit(f"ring_golden: {path}: expected a line 'sha256 <64 hex digits>', got {line!r}")
                return digest.strip()
    sys.exit(f"ring_golden: {path}: no digest line")


def first_difference(a, b):
    la, lb = a.split(b"\n"), b.split(b"\n")
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return f"line {i + 1}:\n  first:  {x.decode(errors='replace')}\n  second: {y.decode(errors='replace')}"
    return f"lengths differ: {len(la)} vs {len(lb)} lines"


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    dump = os.path.abspath(sys.argv[1])
    golden = sys.argv[2]

    # Process 1: almost nothing in the environment, cwd /.
    env1 = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    out1 = run([dump], env1, "/")
    if "--print" in sys.argv[3:]:
        print(f"sha256 {hashlib.sha256(out1).hexdigest()}")
        return 0

    # Process 2: another locale, extra variables (which shift the stack), another working
    # directory and, if setarch can do it here, no ASLR.
    env2 = dict(os.environ)
    env2.update({"LC_ALL": "C.UTF-8", "LIMPET_RING_DUMP_NOISE": "x" * 4097, "MALLOC_PERTURB_": "165"})
    cmd2 = [dump]
    setarch = shutil.which("setarch")
    if setarch and subprocess.run([setarch, "-R", "true"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL).returncode == 0:
        cmd2 = [setarch, "-R", dump]
    with tempfile.TemporaryDirectory(prefix="ring-golden-") as cwd:
        out2 = run(cmd2, env2, cwd)

    ok = True
    lines = out1.count(b"\n")
    if out1 != out2:
        print(f"FAIL: two processes disagree ({' '.join(cmd2)}): {first_difference(out1, out2)}")
        ok = False
    else:
        print(f"ok: two processes agree ({lines} lines; second run: {' '.join(cmd2)})")

    # Two properties the dump shows on its face (ring_test.cpp covers them in depth): the same
    # backends in another order on other ports route the same, and a rendezvous ring rebuilt
    # without a backend routes like the full ring skipping it.
    rows = [line.split("\t") for line in out1.decode().splitlines() if not line.startswith("# ") or line.startswith("# key")]
    cols = rows[0][1:]
    col = {name: i + 1 for i, name in enumerate(cols)}
    for a, b in (("maglev-5w", "maglev-5w-reordered"), ("rendezvous-5w-minus-c", "rendezvous-5w-c-down")):
        differ = sum(1 for r in rows[1:] if r[col[a]] != r[col[b]])
        if differ:
            print(f"FAIL: columns {a} and {b} differ for {differ} keys")
            ok = False

    want = golden_digest(golden)
    got = hashlib.sha256(out1).hexdigest()
    if got != want:
        head = b"\n".join(out1.split(b"\n")[:4]).decode(errors="replace")
        print(f"FAIL: sha256 of the ring dump is {got}, {golden} says {want}.\n"
              f"Keys now land on other backends than in the released versions: every deployed instance\n"
              f"would re-home hashed sessions on upgrade, and a mixed fleet would disagree. If that is\n"
              f"deliberate, update the golden file and say so in the release notes.\nFirst lines:\n{head}")
        ok = False
    else:
        print(f"ok: sha256 {got} matches {golden}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
