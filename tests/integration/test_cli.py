"""The command line: -v, -h, -t on good and bad files, and a start with a bad file."""

import re
import subprocess

import pytest

from conftest import REPO, limpet_bin, render_config


def run(*args, timeout=10):
    return subprocess.run([str(limpet_bin()), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


GOOD = render_config([18080], [{"name": "app", "backends": ["127.0.0.1:18081", "127.0.0.1:18082"]}])


def test_version():
    r = run("-v")
    assert r.returncode == 0, r.stderr
    assert re.search(r"limpet\D*\d+\.\d+", r.stdout + r.stderr)


def test_help_names_every_option():
    r = run("-h")
    assert r.returncode == 0, r.stderr
    for flag in ("-c", "-t", "-T", "-v", "-h"):
        assert flag in r.stdout + r.stderr


def test_unknown_option_fails():
    r = run("--no-such-option")
    assert r.returncode != 0


def test_check_good_config(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    r = run("-t", "-c", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "configuration ok" in r.stdout + r.stderr


def test_check_shipped_example():
    path = REPO / "conf" / "limpet.toml"
    assert path.is_file(), "conf/limpet.toml (the shipped example) is missing"
    r = run("-t", "-c", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "configuration ok" in r.stdout + r.stderr


def test_check_missing_file(tmp_path):
    path = tmp_path / "absent.toml"
    r = run("-t", "-c", str(path))
    assert r.returncode == 1
    assert str(path) in r.stderr


BACKENDS = """
[[upstream]]
name = "app"
[[upstream.backend]]
name = "b1"
address = "127.0.0.1:18081"
"""
LISTENER = """
[[listener]]
address = "127.0.0.1:18080"
upstream = "app"
"""

# (id, file text, lines where the error may be reported). The position must point at the culprit.
BAD = [
    ("toml-syntax", "[server]\nworkers = \n" + LISTENER + BACKENDS, {2}),
    ("unknown-key", "[server]\nworkers = 1\nno_such_key = 3\n" + LISTENER + BACKENDS, {3}),
    ("unknown-key-in-listener", LISTENER + "frobnicate = true\n" + BACKENDS, {5}),
    ("wrong-type", "[server]\nworkers = [1, 2]\n" + LISTENER + BACKENDS, {2}),
    ("bad-duration", "[server]\nshutdown_timeout = \"ten seconds\"\n" + LISTENER + BACKENDS, {2}),
    ("bad-size", LISTENER + "max_body_size = \"lots\"\n" + BACKENDS, {5}),
    ("bad-listen-address", "[[listener]]\naddress = \"127.0.0.1:99999\"\nupstream = \"app\"\n" + BACKENDS, {2}),
    ("bad-backend-address", LISTENER + BACKENDS.replace("127.0.0.1:18081", "no port here"), {10}),
    ("missing-upstream", "[[listener]]\naddress = \"127.0.0.1:18080\"\nupstream = \"nope\"\n" + BACKENDS, {3}),
    ("duplicate-backend", LISTENER + BACKENDS + "[[upstream.backend]]\nname = \"b1\"\naddress = \"127.0.0.1:18082\"\n",
     {11, 12}),
    ("bad-balance", LISTENER + BACKENDS.replace("name = \"app\"\n", "name = \"app\"\nbalance = \"random-ish\"\n", 1),
     {8}),
]


@pytest.mark.parametrize("text,lines", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_check_bad_config_names_file_line_col(tmp_path, text, lines):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    r = run("-t", "-c", str(path))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "configuration ok" not in out
    m = re.search(re.escape(str(path)) + r":(\d+):(\d+): (\S.*)", out)
    assert m, f"no FILE:LINE:COL: message in {out!r}"
    assert int(m.group(1)) in lines, f"error reported at line {m.group(1)}, expected {sorted(lines)}: {out!r}"
    assert int(m.group(2)) >= 1


def test_start_with_bad_config_exits_1(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nworkers = \"many\"\n" + LISTENER + BACKENDS)
    r = run("-c", str(path))
    assert r.returncode == 1
    assert re.search(re.escape(str(path)) + r":2:\d+: ", r.stderr), r.stderr
