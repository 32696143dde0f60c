"""The admin status page (GET /) in headless Chromium: it lists every backend with its state,
refreshes itself from /status (request rates appear, a drain shows without reloading the page).

Needs Debian's `chromium` (run as root with --no-sandbox)."""

import json
import re
import signal
import time

from conftest import wait_until
from ops_util import TOKEN, Chromium, backend_of, chromium_dump_dom, parse_rows, start_ops_limpet


def page_url(lp):
    return f"http://127.0.0.1:{lp.admin_port}/"


def page_states(browser):
    """{backend: state} as the page in `browser` shows it now."""
    return browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#backends tr[data-backend]')]"
        ".map(tr => [tr.dataset.backend, tr.querySelector('td.state').textContent]))")


def test_page_without_javascript_lists_backends(cluster):
    """The server-rendered page (what a browser shows before the first refresh, or without JS)."""
    b1, b2 = cluster.backend("p1"), cluster.backend("p2")
    lp = start_ops_limpet(cluster, [b1, b2])
    assert lp.post("p2", "drain")[0] == 200
    code, headers, html = lp.admin("GET", "/")
    assert code == 200
    assert headers["content-type"].startswith("text/html"), headers
    rows = parse_rows(html)
    assert {n: r["state"] for n, r in rows.items()} == {"p1": "up", "p2": "draining"}, rows


def test_page_in_chromium_lists_every_backend_with_its_state(cluster):
    bs = [cluster.backend(f"s{i}") for i in range(1, 4)]
    w = cluster.backend("sw", kind="ws")
    lp = start_ops_limpet(cluster, upstreams=[{"name": "app", "backends": bs},
                                              {"name": "chat", "backends": [w]}],
                          listeners=[{"upstream": "app"}, {"upstream": "chat"}])
    for i in range(9):
        backend_of(lp.port, f"/echo?{i}")
    assert lp.post("s2", "drain")[0] == 200
    assert lp.post("s3", "disable")[0] == 200
    # 5 s of virtual time: the page's refresh runs at 0, 2 and 4 s.
    dom = chromium_dump_dom(page_url(lp), budget_ms=5000)
    rows = parse_rows(dom)
    expected = {"s1": "up", "s2": "draining", "s3": "disabled", "sw": "up"}
    assert {n: r["state"] for n, r in rows.items()} == expected, rows
    for name, r in rows.items():
        assert r["class"] == f"state-{expected[name]}", (name, r)
        upstream = "chat" if name == "sw" else "app"
        assert r["cells"][0] == upstream and r["cells"][1] == name, r["cells"]
    # Request rates are computed by the script from two successive /status samples: a number
    # (not the server-rendered "-") proves the page refreshed itself.
    rates = {n: r["rate"] for n, r in rows.items()}
    assert all(re.fullmatch(r"\d+(\.\d+)?", v or "") for v in rates.values()), \
        f"rate cells not filled in by the page's refresh: {rates}"
    summary = re.search(r'<div id="summary">(.*?)</div>', dom, re.S)
    assert summary and "generation 1" in summary.group(1), summary and summary.group(1)


def test_page_in_chromium_shows_a_drain_after_a_refresh(cluster):
    b1, b2 = cluster.backend("d1"), cluster.backend("d2")
    lp = start_ops_limpet(cluster, [b1, b2])
    browser = Chromium(page_url(lp))
    try:
        def states():
            return page_states(browser)
        wait_until(lambda: states() == {"d1": "up", "d2": "up"}, 20, "the page to list d1 and d2 up",
                   interval=0.2)
        # A mark on this document: if it is still there later, the page was not reloaded.
        browser.evaluate("window.__limpetTestMark = 42")
        assert lp.post("d1", "drain")[0] == 200
        t0 = time.monotonic()
        wait_until(lambda: states() == {"d1": "draining", "d2": "up"}, 8,
                   "the page to show d1 draining", interval=0.2)
        took = time.monotonic() - t0
        assert browser.evaluate("window.__limpetTestMark") == 42, "the page was reloaded, not refreshed"
        assert browser.evaluate("document.querySelector('tr[data-backend=\"d1\"]').className") == "state-draining"
        assert lp.post("d1", "enable")[0] == 200
        wait_until(lambda: states() == {"d1": "up", "d2": "up"}, 8, "the page to show d1 up again",
                   interval=0.2)
        print(f"\nstatus page showed the drain {took:.2f}s after the POST (refresh every 2 s)")
    finally:
        browser.close()


def test_page_drains_and_enables_a_backend_with_the_token_and_says_when_it_is_stale(cluster):
    """The page's own buttons call the admin API with the token typed into it; once limpet stops,
    the page keeps its last numbers and says they are stale."""
    b1, b2 = cluster.backend("a1"), cluster.backend("a2")
    lp = start_ops_limpet(cluster, [b1, b2])
    browser = Chromium(page_url(lp))
    try:
        def states():
            return page_states(browser)

        def click(backend, action, token):
            browser.evaluate(f"document.getElementById('token').value = {json.dumps(token)};"
                             f"document.querySelector('tr[data-backend=\"{backend}\"] "
                             f"button[data-action=\"{action}\"]').click()")

        def result():
            return browser.evaluate("document.getElementById('action-result').textContent")
        # The buttons come with the first refresh from /status.
        wait_until(lambda: browser.evaluate("document.querySelectorAll('td.actions button').length") == 6, 20,
                   "the page's action buttons", interval=0.2)
        click("a1", "drain", "not-the-token")
        wait_until(lambda: result().startswith("403"), 10, "the page to show the 403", interval=0.1)
        assert lp.backend_states() == {"a1": "up", "a2": "up"}
        click("a1", "drain", TOKEN)
        wait_until(lambda: lp.backend_states()["a1"] == "draining", 10, "a1 to be drained by the page")
        wait_until(lambda: states() == {"a1": "draining", "a2": "up"}, 10, "the page to show a1 draining",
                   interval=0.1)
        assert "a1: drain" in result(), result()
        # Its drain button is now the one that would do nothing.
        assert browser.evaluate("document.querySelector('tr[data-backend=\"a1\"] "
                                "button[data-action=\"drain\"]').disabled") is True
        click("a1", "enable", TOKEN)
        wait_until(lambda: states() == {"a1": "up", "a2": "up"}, 10, "the page to show a1 up again", interval=0.1)
        assert browser.evaluate("document.getElementById('stale').hidden") is True

        lp.signal(signal.SIGTERM)
        assert lp.wait_exit(10) == 0
        wait_until(lambda: browser.evaluate("document.body.classList.contains('stale')"), 10,
                   "the page to mark its numbers stale", interval=0.2)
        banner = browser.evaluate("document.getElementById('stale').textContent")
        assert banner.startswith("stale: limpet is not answering"), banner
        assert states() == {"a1": "up", "a2": "up"}, "the last rows are kept"
    finally:
        browser.close()
