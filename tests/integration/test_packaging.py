"""Shipping (issue 16, part 7): the Dockerfile, the Debian packaging and the Grafana dashboard
agree with the build and with the real binary.

Always run (no container engine needed):
  - the Dockerfile's build packages are scripts/install-deps.sh's build packages and
    debian/control's Build-Depends, and cover every dependency() of meson.build;
  - every shared library the built limpet links is installed by the runtime stage;
  - the image's config passes `limpet -t`, listens on every interface, and its listener's
    ready_path is what the HEALTHCHECK asks; the HEALTHCHECK script itself says healthy against a
    real limpet running that config and unhealthy when nothing answers;
  - every metric the dashboard queries is in a real /metrics scrape (a limpet with two backends,
    health checks and a real redis-server as its session store).
Run only where `docker info` or `podman info` works (else skipped, saying so): the image is built,
run, becomes healthy, proxies a request, runs as non-root and stops gracefully on `docker stop`.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, free_port, http_session, limpet_bin, wait_until
from store_util import Redis

DOCKERFILE = REPO / "Dockerfile"
DASHBOARD = REPO / "doc" / "grafana" / "limpet-dashboard.json"
IMAGE_CONFIG = REPO / "conf" / "docker" / "limpet.toml"
HEALTHCHECK = REPO / "conf" / "docker" / "limpet-healthcheck"

# In scripts/install-deps.sh's "# build" section but needed only by the tests, the benchmarks or
# the fuzz targets (g++ comes with build-essential): not in the image, not in Build-Depends.
TEST_ONLY_BUILD_PACKAGES = {"g++", "clang", "libgtest-dev", "libgmock-dev", "libbenchmark-dev", "libclang-rt-14-dev"}
# meson.build's dependency() names and the Debian package that provides each. A dependency
# added to meson.build and not here fails test_meson_dependencies_are_packaged: add it here, to
# scripts/install-deps.sh, the Dockerfile's build stage and debian/control.
MESON_DEP_PACKAGES = {
    "libuv": "libuv1-dev",
    "openssl": "libssl-dev",
    "threads": None,  # the C library's
    "toml11": "libtoml11-dev",
    "libxxhash": "libxxhash-dev",
    "hiredis": "libhiredis-dev",
    "libsystemd": "libsystemd-dev",
    "libcares": "libc-ares-dev",
    "libnghttp2": "libnghttp2-dev",
    "gtest": "libgtest-dev",
    "gmock": "libgmock-dev",
    "benchmark": "libbenchmark-dev",
}
# Required packages of debian:12-slim (and of every Debian system): the runtime stage need not
# install them.
BASE_IMAGE_PACKAGES = {"libc6", "libstdc++6", "libgcc-s1"}


# ---------------------------------------------------------------------------------------------
# parsing

def dockerfile_instructions(text):
    """[(stage index, INSTRUCTION, arguments)] with continuation lines joined, comments dropped."""
    out, stage, buf = [], -1, ""
    for line in text.splitlines():
        if not buf and line.lstrip().startswith("#"):
            continue
        if buf and line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        if buf.strip():
            word, _, args = buf.strip().partition(" ")
            word = word.upper()
            if word == "FROM":
                stage += 1
            out.append((stage, word, args.strip()))
        buf = ""
    return out


def apt_packages(args):
    """The packages of every `apt-get install` in one RUN's shell command."""
    packages = []
    for command in re.split(r"&&|;|\|\|", args):
        words = shlex.split(command)
        while words and "=" in words[0]:  # VAR=value prefixes
            words.pop(0)
        if words[:2] == ["apt-get", "install"]:
            packages += [w for w in words[2:] if not w.startswith("-")]
    return packages


def stage_packages(stage):
    return {p for s, word, args in dockerfile_instructions(DOCKERFILE.read_text()) if s == stage and word == "RUN"
            for p in apt_packages(args)}


def install_deps_build_packages():
    """scripts/install-deps.sh's packages from the "# build" comment up to the next section
    comment that is not about building ("# clang's ...", "# tests: ...")."""
    text = (REPO / "scripts" / "install-deps.sh").read_text()
    body = re.search(r"^packages=\(\n(.*?)^\)", text, re.M | re.S).group(1)
    section, out = None, set()
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            section = stripped
            continue
        if section == "# build":
            out |= set(stripped.split("#")[0].split())
    assert out, "no '# build' section found in scripts/install-deps.sh"
    return out


def debian_build_depends():
    text = (REPO / "debian" / "control").read_text()
    m = re.search(r"^Build-Depends:(.*?)(?=^\S)", text, re.M | re.S)
    assert m, "debian/control has no Build-Depends"
    deps = set()
    for item in m.group(1).split(","):
        item = re.sub(r"^\s*#.*$", "", item, flags=re.M).strip()
        if item:
            deps.add(re.split(r"[\s(\[<]", item, maxsplit=1)[0])
    return deps


def meson_dependencies():
    names = set()
    for path in [REPO / "meson.build", *REPO.glob("src/**/meson.build"), *REPO.glob("tests/**/meson.build")]:
        names |= set(re.findall(r"\bdependency\(\s*'([^']+)'", path.read_text()))
    return names


def image_env():
    env = {}
    for _, word, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if word == "ENV":
            for pair in shlex.split(args):
                k, _, v = pair.partition("=")
                env[k] = v
    return env


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


def promql_metric_names(expr):
    """Metric names in a PromQL expression: strings, label matchers ({...}), ranges ([...]) and
    by/without/on/ignoring label lists removed; then every identifier not called as a function
    and not a keyword is a metric name."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def scrape_families(text):
    """{family name: type} from the `# TYPE` lines of a Prometheus text exposition."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def family_of(name, families):
    """The family a sample name belongs to: itself, or a histogram's _bucket/_sum/_count (a
    summary's _sum/_count); None if the scrape has no such family."""
    if name in families:
        return name
    for suffix, types in (("_bucket", {"histogram"}), ("_sum", {"histogram", "summary"}),
                          ("_count", {"histogram", "summary"})):
        if name.endswith(suffix) and families.get(name[: -len(suffix)]) in types:
            return name[: -len(suffix)]
    return None


def dashboard_exprs():
    dash = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    exprs.append((p["title"], t["expr"]))
            walk(p.get("panels", []))
    walk(dash["panels"])
    return dash, exprs


# ---------------------------------------------------------------------------------------------
# the parsers on known input: a parser that finds nothing would make the checks below vacuous

def test_parsers_on_known_input():
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(limpet_x_seconds_bucket{instance=~"$instance", a="b{c}"}[5m])))'
    ) == {"limpet_x_seconds_bucket"}
    assert promql_metric_names('sum by (code) (rate(a_total[$__rate_interval])) / ignoring(code) b + c offset 5m') \
        == {"a_total", "b", "c"}
    fams = {"h": "histogram", "c_count": "counter", "s": "summary"}
    assert family_of("h_bucket", fams) == "h" and family_of("c_count", fams) == "c_count"
    assert family_of("s_bucket", fams) is None and family_of("c_total", fams) is None
    assert apt_packages("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                        "a b && rm -rf x") == ["a", "b"]


# ---------------------------------------------------------------------------------------------
# Dockerfile and debian/control against the build

def test_dockerfile_build_packages_match_install_deps_and_debian_control():
    want = install_deps_build_packages() - TEST_ONLY_BUILD_PACKAGES
    assert stage_packages(0) == want, (
        f"Dockerfile build stage vs scripts/install-deps.sh build section: only in the Dockerfile "
        f"{sorted(stage_packages(0) - want)}, only in install-deps.sh {sorted(want - stage_packages(0))}")
    control = debian_build_depends() - {"debhelper-compat"}
    # build-essential is implied for every Debian source package and must not be listed.
    assert control == want - {"build-essential"}, (
        f"debian/control Build-Depends vs install-deps.sh: only in control {sorted(control - want)}, "
        f"only in install-deps.sh {sorted(want - {'build-essential'} - control)}")


def test_meson_dependencies_are_packaged():
    deps = meson_dependencies()
    assert {"libuv", "openssl", "toml11"} <= deps, deps  # the regex found meson.build's dependency() calls
    unknown = deps - MESON_DEP_PACKAGES.keys()
    assert not unknown, f"meson dependencies with no Debian package in MESON_DEP_PACKAGES: {sorted(unknown)}"
    build = stage_packages(0)
    install_deps = install_deps_build_packages()
    for dep in sorted(deps):
        pkg = MESON_DEP_PACKAGES[dep]
        if pkg is None:
            continue
        assert pkg in install_deps, f"meson dependency {dep}: {pkg} is not in scripts/install-deps.sh"
        if pkg not in TEST_ONLY_BUILD_PACKAGES:
            assert pkg in build, f"meson dependency {dep}: {pkg} is not in the Dockerfile's build stage"


def test_runtime_stage_installs_every_linked_library():
    """The libraries the built binary links directly (its NEEDED entries; apt brings what they
    need in turn), each one's Debian package by dpkg -S: every one must be in the slim base image
    or installed by the runtime stage, else the image's limpet cannot start."""
    binary = str(limpet_bin())
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True).stdout)
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    resolved = dict(re.findall(r"^\s*(\S+) => (/\S+)", ldd, re.M))
    # The dynamic loader is listed by its path alone ("/lib64/ld-linux-x86-64.so.2 (0x...)").
    resolved.update({os.path.basename(p): p for p in re.findall(r"^\s*(/\S+) \(", ldd, re.M)})
    assert "libuv.so.1" in needed, needed
    runtime = stage_packages(1)
    assert runtime, "no apt-get install in the Dockerfile's runtime stage"
    missing = {}
    for soname in needed:
        path = resolved[soname]
        real = os.path.realpath(path)
        owner = None
        for candidate in (path, real, re.sub(r"^/usr/lib/", "/lib/", real), re.sub(r"^/lib/", "/usr/lib/", real)):
            r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if r.returncode == 0:
                owner = r.stdout.split(":")[0]
                break
        assert owner, f"no Debian package owns {path}: a library from outside Debian"
        if owner not in runtime and owner not in BASE_IMAGE_PACKAGES:
            missing[path] = owner
    assert not missing, f"libraries the binary links that the runtime stage does not install: {missing}"


def test_dockerfile_runs_limpet_as_a_non_root_user_with_a_graceful_stop():
    instr = [(w, a) for s, w, a in dockerfile_instructions(DOCKERFILE.read_text()) if s == 1]
    words = dict(instr)
    assert words.get("USER") and words["USER"] not in ("root", "0"), words.get("USER")
    # limpet(8): SIGQUIT is the graceful stop; Docker's default SIGTERM is limpet's fast one.
    assert words.get("STOPSIGNAL") == "SIGQUIT"
    assert json.loads(words["ENTRYPOINT"]) == ["limpet"]
    assert json.loads(words["CMD"]) == ["-c", "/etc/limpet/limpet.toml"]
    assert ("COPY", "conf/docker/limpet.toml /etc/limpet/limpet.toml") in instr
    assert set(words["EXPOSE"].split()) == {"8080", "9090"}
    assert "limpet-healthcheck" in words["HEALTHCHECK"]
    first = [a for s, w, a in dockerfile_instructions(DOCKERFILE.read_text()) if w == "FROM"]
    assert first[0].startswith("debian:12 ") and first[1] == "debian:12-slim", first


# ---------------------------------------------------------------------------------------------
# the image's configuration and health check, with the real binary

def image_config_for_test(tmp_path):
    """The image's config with its two ports replaced by free ones on loopback (a test binds no
    wildcard address); everything else as shipped."""
    text = IMAGE_CONFIG.read_text()
    listen, admin = free_port(), free_port()
    assert text.count('"0.0.0.0:8080"') == 1 and text.count('"0.0.0.0:9090"') == 1, "ports moved: update the test"
    text = text.replace('"0.0.0.0:8080"', f'"127.0.0.1:{listen}"').replace('"0.0.0.0:9090"', f'"127.0.0.1:{admin}"')
    path = tmp_path / "image.toml"
    path.write_text(text)
    return path, listen, admin


def test_image_config_passes_check_and_listens_everywhere():
    r = subprocess.run([str(limpet_bin()), "-t", "-c", str(IMAGE_CONFIG)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "configuration ok" in r.stdout + r.stderr
    text = IMAGE_CONFIG.read_text()
    # In a container the loopback is the container's own: listener and admin on every interface.
    assert re.search(r'^address = "0\.0\.0\.0:8080"', text, re.M)
    assert re.search(r'^address = "0\.0\.0\.0:9090"', text, re.M)
    # Under `docker stop`'s 10 s before SIGKILL.
    m = re.search(r'^shutdown_timeout = "(\d+)s"', text, re.M)
    assert m and int(m.group(1)) < 10


def test_image_config_without_allow_public_is_refused(tmp_path):
    """The control for the check above: the guardrail that allow_public lifts is really there."""
    path = tmp_path / "no-public.toml"
    path.write_text(IMAGE_CONFIG.read_text().replace("allow_public = true", ""))
    r = subprocess.run([str(limpet_bin()), "-t", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "allow_public" in r.stderr, r.stderr


def test_healthcheck_asks_the_configured_ready_path():
    env = image_env()
    text = IMAGE_CONFIG.read_text()
    ready = re.findall(r'^ready_path = "([^"]+)"', text, re.M)
    assert ready == [env["LIMPET_HEALTH_PATH"]], (ready, env)
    assert f'"0.0.0.0:{env["LIMPET_HEALTH_PORT"]}"' in text


def run_healthcheck(port, path):
    env = {**os.environ, "LIMPET_HEALTH_PORT": str(port), "LIMPET_HEALTH_PATH": path}
    return subprocess.run(["bash", str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=15).returncode


def test_healthcheck_script_against_the_image_config(tmp_path):
    """The HEALTHCHECK script, run as Docker would, against limpet running the image's config:
    healthy while it serves; unhealthy on a path limpet proxies (to backends that are not
    there: 502) and once limpet is gone."""
    path, listen, admin = image_config_for_test(tmp_path)
    log = open(tmp_path / "limpet.stderr", "wb")
    proc = subprocess.Popen([str(limpet_bin()), "-c", str(path)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        env = image_env()
        wait_until(lambda: proc.poll() is not None or run_healthcheck(listen, env["LIMPET_HEALTH_PATH"]) == 0, 15,
                   "the HEALTHCHECK to pass")
        assert proc.poll() is None, (tmp_path / "limpet.stderr").read_text()
        assert run_healthcheck(listen, "/not-the-ready-path") != 0
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
            assert "limpet_build_info" in r.read().decode()
    finally:
        proc.send_signal(3)  # SIGQUIT: what `docker stop` sends (STOPSIGNAL)
        rc = proc.wait(15)
        log.close()
    assert rc == 0, (tmp_path / "limpet.stderr").read_text()
    assert run_healthcheck(listen, image_env()["LIMPET_HEALTH_PATH"]) != 0


# ---------------------------------------------------------------------------------------------
# the Grafana dashboard against a real /metrics

def test_dashboard_is_a_grafana_dashboard():
    dash, exprs = dashboard_exprs()
    assert 36 <= dash["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    assert len(exprs) >= 20
    titles = [p["title"] for p in dash["panels"]]
    assert len(titles) == len(set(titles)), titles
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])
    # The list: sessions per backend, tunnels, handshakes, reloads, store state, fds, p99.
    used = set().union(*(promql_metric_names(e) for _, e in exprs))
    for name in ("limpet_backend_sessions", "limpet_backend_up", "limpet_backend_tunnels", "limpet_affinity_learned_total",
                 "limpet_responses_total", "limpet_reloads_total", "limpet_session_store_up", "limpet_fds",
                 "limpet_request_duration_seconds_bucket"):
        assert name in used, name
    assert any(e.startswith("histogram_quantile(0.99") and "limpet_request_duration_seconds_bucket" in e for _, e in exprs)


def scrape_with_store(cluster, tmp_path):
    redis = Redis(tmp_path).start()
    try:
        a, b = cluster.backend("a"), cluster.backend("b")
        admin = f"127.0.0.1:{free_port()}"
        lp = cluster.limpet([a, b], upstream={"health": {"type": "http", "path": "/healthz", "interval": "200ms"}},
                            tables={"[admin]": {"address": admin},
                                    "[session_store]": {"address": redis.address, "key_prefix": "pkg:"}})
        with http_session() as s:
            assert s.get(lp.url("/echo"), timeout=5).status_code == 200  # a request in the histograms

        def scrape():
            with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
                text = r.read().decode()
            return text if "limpet_session_store_up 1" in text else None
        return wait_until(scrape, 10, "the session store to be up in /metrics")
    finally:
        redis.kill()


def test_dashboard_metrics_are_in_a_real_scrape(cluster, tmp_path):
    """Every metric name the dashboard queries is a family of the real /metrics (limpet with two
    backends, health checks and a real Redis session store, so the store's families are there)."""
    families = scrape_families(scrape_with_store(cluster, tmp_path))
    assert "limpet_session_store_up" in families and "limpet_request_duration_seconds" in families
    _, exprs = dashboard_exprs()
    missing = {}
    for title, expr in exprs:
        names = promql_metric_names(expr)
        assert names, f"no metric name found in {title!r}: {expr}"
        for name in names:
            if family_of(name, families) is None:
                missing.setdefault(name, title)
    assert not missing, f"dashboard metrics not in limpet's /metrics (name: panel): {missing}"


# ---------------------------------------------------------------------------------------------
# the image itself, where a container engine runs

def container_engine():
    for tool in ("docker", "podman"):
        if shutil.which(tool):
            r = subprocess.run([tool, "info"], capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                return tool
    return None


def test_image_builds_runs_and_proxies(cluster, tmp_path):
    engine = container_engine()
    if engine is None:
        pytest.skip("no container engine: `docker info` and `podman info` both fail (or neither is installed); "
                    "the Dockerfile was checked statically and its config and HEALTHCHECK against the binary above")
    tag = f"limpet-test:{os.getpid()}"
    # podman builds OCI images by default, and the OCI format has no HEALTHCHECK: ask for Docker's.
    fmt = ["--format", "docker"] if engine == "podman" else []
    build = subprocess.run([engine, "build", *fmt, "-t", tag, str(REPO)], capture_output=True, text=True,
                           timeout=1500)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    backend = cluster.backend("a")
    listen, admin = free_port(), free_port()
    config = tmp_path / "limpet.toml"
    config.write_text(
        '[server]\nworkers = 1\nshutdown_timeout = "5s"\n'
        f'[admin]\naddress = "127.0.0.1:{admin}"\n'
        f'[[listener]]\naddress = "127.0.0.1:{listen}"\nupstream = "app"\nready_path = "/limpet-ready"\n'
        f'[[upstream]]\nname = "app"\n[[upstream.backend]]\nname = "a"\naddress = "{backend.address}"\n')
    config.chmod(0o644)
    name = f"limpet-test-{os.getpid()}"
    # Host networking: the backend runs on this host's loopback, and the ports come from the OS.
    run = subprocess.run([engine, "run", "-d", "--name", name, "--network", "host",
                          "-e", f"LIMPET_HEALTH_PORT={listen}", "--health-interval", "1s",
                          "-v", f"{config}:/etc/limpet/limpet.toml:ro", tag],
                         capture_output=True, text=True, timeout=120)
    try:
        assert run.returncode == 0, run.stderr

        def health():
            r = subprocess.run([engine, "inspect", "--format", "{{.State.Health.Status}}", name],
                               capture_output=True, text=True, timeout=30)
            return r.stdout.strip() == "healthy"
        wait_until(health, 60, "the container's HEALTHCHECK to report healthy", interval=1)
        with http_session() as s:
            r = s.get(f"http://127.0.0.1:{listen}/echo", timeout=5)
            assert r.status_code == 200 and r.json()["backend"] == "a", r.text
        uid = subprocess.run([engine, "exec", name, "id", "-u"], capture_output=True, text=True, timeout=30)
        assert uid.stdout.strip() not in ("", "0"), uid
        stop = subprocess.run([engine, "stop", "-t", "15", name], capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0, stop.stderr
        code = subprocess.run([engine, "inspect", "--format", "{{.State.ExitCode}}", name],
                              capture_output=True, text=True, timeout=30).stdout.strip()
        logs = subprocess.run([engine, "logs", name], capture_output=True, text=True, timeout=30)
        assert code == "0", f"exit {code} on docker stop (SIGQUIT):\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, timeout=60)
        subprocess.run([engine, "rmi", "-f", tag], capture_output=True, timeout=120)
