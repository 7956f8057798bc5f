#!/usr/bin/env python3
"""Drives ipguard's status page (GET /ui) in a real headless Chromium through Playwright.

Run by tests/tests/ui_browser.rs inside the daemon's network namespace, while that test
sends traffic through the filter. Checks, failing on the first that does not hold:

- no console error and no uncaught page error during the whole run (the page's strict
  CSP turns any inline script or style into a console error too);
- the token prompt appears, no /v1 call is made before the token is typed, and the token
  never appears in a URL;
- the rates chart gains samples every second and shows a pass and a drop rate;
- the offenders table and the blacklist render, with paging and search;
- hostile reasons (HTML, script) are shown as literal text: nothing is injected;
- the explain box says `drop` with the literal reason for the hostile entry;
- an address added through the page's form is accepted (the caller then checks that the
  kernel drops it), an entry removed with its button is gone;
- after a reload the token is still known (sessionStorage) and is not in the URL;
- full-page screenshots in the light and the dark theme.

Prints one JSON line of results and exits 0, or prints `FAIL: ...` and exits 1.
Only the system Chromium is used (no browser download).
"""

import argparse
import json
import os
import sys
import threading
import time

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
PAGE = 20  # entries per page of the lists table (PAGE_SIZE in app.js)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:9180")
    ap.add_argument("--token", required=True)
    ap.add_argument("--xss-ip", required=True, help="a blacklisted host whose reason is hostile")
    ap.add_argument("--xss-reason", required=True)
    ap.add_argument("--offender-ip", required=True, help="a host reported until banned, with a hostile reason")
    ap.add_argument("--offender-reason", required=True)
    ap.add_argument("--add-ip", required=True, help="the address to blacklist through the page")
    ap.add_argument("--remove-net", required=True, help="a blacklist entry to remove through the page")
    ap.add_argument("--feed-name", required=True, help="a [[feed]] the page shows")
    ap.add_argument("--feed-path", required=True, help="its file: emptied to hold an update, accepted on the page")
    ap.add_argument("--screenshots", required=True, help="directory for ui-light.png and ui-dark.png")
    ap.add_argument("--timeout", type=float, default=50.0, help="seconds for the whole run")
    args = ap.parse_args()

    # A hard bound, whatever hangs: the caller kills the process group too.
    def watchdog():
        time.sleep(args.timeout)
        print(f"FAIL: the browser run took more than {args.timeout} s", flush=True)
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    check(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing (apt-get install chromium)")

    results = {}
    problems = []  # console errors, page errors, token leaks
    started = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            ctx = browser.new_context(viewport={"width": 1360, "height": 900}, color_scheme="light")
            page = ctx.new_page()
            page.set_default_timeout(10_000)
            v1_before_token = []
            token_typed = [False]

            def on_console(msg):
                if msg.type == "error":
                    problems.append(f"console error: {msg.text} ({msg.location})")

            def on_request(req):
                if args.token in req.url:
                    problems.append(f"token in a URL: {req.url}")
                if "/v1/" in req.url and not token_typed[0]:
                    v1_before_token.append(req.url)

            page.on("console", on_console)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", on_request)
            try:
                run_checks(page, args, results, token_typed)
            except (Failure, PlaywrightError) as e:
                # What the console said is often the reason.
                raise Failure(f"{e}" + (f"; and: {'; '.join(problems)}" if problems else ""))
            check(not v1_before_token, f"/v1 calls before the token was typed: {v1_before_token}")
            check(not problems, "; ".join(problems))
        finally:
            browser.close()
    results["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(results, sort_keys=True), flush=True)


def text(page, selector):
    return page.locator(selector).first.text_content() or ""


def samples(page):
    return int(page.get_attribute("#charts", "data-samples") or "0")


def rate(page, name):
    return float(page.get_attribute(f"#rate-{name}", "data-rate") or "0")


# Predicates are functions, never expression strings: Playwright evaluates a string with
# eval(), which the page's CSP (no 'unsafe-eval') rightly refuses.


def wait_rows(page, table, n, what):
    try:
        page.wait_for_function(
            "([t, n]) => document.querySelectorAll(`#${t} tbody tr`).length === n",
            arg=[table, n],
            timeout=8_000,
        )
    except PlaywrightError:
        rows = page.locator(f"#{table} tbody tr").count()
        raise Failure(f"{what}: {rows} rows in #{table}, expected {n}; message: {text(page, '#list-msg')!r}")


def search(page, q, n, page_no=1):
    """Types `q` into the lists search and waits for its results: `n` rows."""
    page.fill("#list-search", q)
    shown = f"blacklist|{page_no}|{q.strip()}"
    try:
        page.wait_for_function(
            "([s]) => document.getElementById('list-table').dataset.shown === s", arg=[shown], timeout=8_000
        )
    except PlaywrightError:
        raise Failure(f"search for {q!r} not shown: {page.get_attribute('#list-table', 'data-shown')!r}, "
                      f"message {text(page, '#list-msg')!r}")
    if n is not None:
        wait_rows(page, "list-table", n, f"search for {q!r}")


def no_injection(page, where):
    injected = page.evaluate(
        """() => ({
            // The page has no images, scripts or frames of its own, and its data cells hold text only.
            elements: document.querySelectorAll('#app img, #app script, #app iframe, #app object, '
                + '#app td.reason *, #explain-reason *, #explain-prefix *').length,
            xss: typeof window.__xss,
            title: document.title,
        })"""
    )
    check(injected["elements"] == 0, f"{where}: markup from the data was rendered: {injected}")
    check(injected["xss"] == "undefined", f"{where}: an injected script ran: {injected}")
    check(injected["title"] == "ipguard", f"{where}: the title was changed: {injected}")


def run_checks(page, args, results, token_typed):
    # 1. The token prompt, before anything else.
    page.goto(f"{args.url}/ui")
    page.wait_for_selector("#token-dialog", state="visible", timeout=5_000)
    check(text(page, "#h-interface") == "–", "data shown before the token was typed")
    token_typed[0] = True
    page.fill("#token-input", args.token)
    page.press("#token-input", "Enter")
    page.wait_for_selector("#token-dialog", state="hidden", timeout=5_000)
    page.wait_for_function("() => document.getElementById('h-interface').textContent !== '–'", timeout=5_000)
    results["interface"] = text(page, "#h-interface")
    results["mode"] = text(page, "#h-policy")
    check(results["mode"] == "enforce", f"the mode shows as {results['mode']!r}")
    check(page.locator("#legend-pass #rate-would_drop").count() == 1, "no would-drop series in the passed chart")
    check("?" not in page.url and args.token not in page.url, f"token in the URL: {page.url}")

    # 2. The chart: samples every second, a pass and a drop rate while traffic flows.
    t0 = time.monotonic()
    try:
        page.wait_for_function(
            """() => Number(document.getElementById('charts').dataset.samples) >= 3
                && Number(document.getElementById('rate-pass').dataset.rate) > 0
                && Number(document.getElementById('rate-drop').dataset.rate) > 0""",
            timeout=12_000,
        )
    except PlaywrightError:
        raise Failure(
            f"no pass and drop rate within 12 s: samples {samples(page)}, "
            f"pass {rate(page, 'pass')}, drop {rate(page, 'drop')}"
        )
    results["first_rates_s"] = round(time.monotonic() - t0, 1)
    s0 = samples(page)
    page.wait_for_timeout(3_000)
    s1 = samples(page)
    check(s1 >= s0 + 2, f"the chart did not update: {s0} samples, then {s1} three seconds later")
    results["rates"] = {n: round(rate(page, n), 1) for n in ("unlisted", "blacklist", "graylist")}
    check(
        (page.get_attribute("#chart-pass polyline.c-unlisted", "points") or "").count(",") >= 2,
        "no line drawn for the unlisted traffic",
    )

    # 3. Offenders: the reported host, its hostile reason as text.
    row = page.locator("#offenders tbody tr", has_text=args.offender_ip)
    try:
        row.first.wait_for(timeout=8_000)
    except PlaywrightError:
        raise Failure(f"{args.offender_ip} not among the offenders: {text(page, '#offenders')!r} {text(page, '#offenders-note')!r}")
    got = row.first.locator("td.reason").text_content()
    # A ban by reports: "3 reports within ...: <the reports' reason>".
    check(got.endswith(args.offender_reason), f"offender reason shown as {got!r}, expected it to end with {args.offender_reason!r}")
    results["offenders"] = page.locator("#offenders tbody tr").count()
    no_injection(page, "offenders")

    # 4. The blacklist: paging, then search, the hostile reason as text.
    page.click("#tab-blacklist")
    page.wait_for_function("() => document.getElementById('list-table').dataset.shown === 'blacklist|1|'")
    wait_rows(page, "list-table", PAGE, "blacklist page 1")
    check(page.is_enabled("#list-next"), f"no next page for a blacklist of more than {PAGE} entries")
    page.click("#list-next")
    page.wait_for_function("() => document.getElementById('list-table').dataset.shown === 'blacklist|2|'")
    check(page.locator("#list-table tbody tr").count() >= 1, "page 2 of the blacklist is empty")
    results["blacklist_page2_rows"] = page.locator("#list-table tbody tr").count()
    page.click("#list-prev")
    page.wait_for_function("() => document.getElementById('list-table').dataset.shown === 'blacklist|1|'")
    wait_rows(page, "list-table", PAGE, "blacklist back on page 1")
    check(page.is_disabled("#list-prev"), "previous enabled on page 1")
    search(page, "onerror", 1)
    net = text(page, "#list-table tbody tr td.mono")
    check(net.startswith(args.xss_ip), f"search found {net!r}, expected {args.xss_ip}")
    got = text(page, "#list-table tbody tr td.reason")
    check(got == args.xss_reason, f"blacklist reason shown as {got!r}, expected {args.xss_reason!r}")
    no_injection(page, "blacklist")

    # 5. Explain the hostile entry.
    page.fill("#explain-ip", args.xss_ip)
    page.press("#explain-ip", "Enter")
    page.wait_for_function(
        "([ip]) => document.getElementById('explain-addr').textContent === ip", arg=[args.xss_ip]
    )
    check(text(page, "#explain-verdict") == "drop", f"explain says {text(page, '#explain-verdict')!r}")
    got = text(page, "#explain-reason")
    check(got == args.xss_reason, f"explain shows the reason as {got!r}")
    no_injection(page, "explain")

    # 6. Add an address to the blacklist through the form.
    page.select_option("#add-list", "blacklist")
    page.fill("#add-net", args.add_ip)
    page.fill("#add-duration", "1h")
    page.fill("#add-reason", "added from the status page")
    page.click("#add-submit")
    try:
        page.wait_for_selector("#add-msg.ok", timeout=5_000)
    except PlaywrightError:
        raise Failure(f"adding {args.add_ip} failed: {text(page, '#add-msg')!r}")
    results["add_message"] = text(page, "#add-msg")
    search(page, args.add_ip, 1)

    # 7. Remove an entry through its button (two clicks: Remove, Confirm).
    search(page, args.remove_net, 1)
    net = text(page, "#list-table tbody tr td.mono")
    check(net.startswith(args.remove_net), f"search for {args.remove_net} found {net!r}")
    button = page.locator("#list-table tbody tr button.danger").first
    button.click()
    check(button.text_content() == "Confirm", "the remove button asks for no confirmation")
    button.click()
    try:
        page.wait_for_selector("#list-msg.ok", timeout=5_000)
    except PlaywrightError:
        raise Failure(f"removing {args.remove_net} failed: {text(page, '#list-msg')!r}")
    wait_rows(page, "list-table", 0, f"{args.remove_net} still listed after its removal")
    results["remove_message"] = text(page, "#list-msg")
    search(page, "", PAGE)

    # 7b. The feeds card: the feed with its entries; emptied, its update is held, and the
    # Accept button applies it.
    row = f"#feeds-table tr[data-feed='{args.feed_name}']"
    try:
        page.wait_for_selector(row, timeout=10_000)
    except PlaywrightError:
        raise Failure("the feeds card does not show the feed")
    cells = page.locator(f"{row} td").all_text_contents()
    check(cells[2].strip() == "2", f"the feed row shows {cells}, expected 2 entries")
    with open(args.feed_path, "w") as f:
        f.write("# emptied\n")
    try:
        page.wait_for_selector(f"{row} button", timeout=15_000)
    except PlaywrightError:
        raise Failure(f"no held update shown: {page.locator(row).text_content()!r}")
    page.click(f"{row} button")
    try:
        page.wait_for_selector("#feeds-msg.ok", timeout=10_000)
    except PlaywrightError:
        raise Failure(f"accepting failed: {text(page, '#feeds-msg')!r}")
    results["feed_message"] = text(page, "#feeds-msg")
    check("0 entries" in results["feed_message"], f"accept said {results['feed_message']!r}")

    # 8. Screenshots, with a couple of dozen seconds of chart.
    page.fill("#explain-ip", args.xss_ip)
    page.press("#explain-ip", "Enter")
    try:
        page.wait_for_function(
            "() => Number(document.getElementById('charts').dataset.samples) >= 15", timeout=15_000
        )
    except PlaywrightError:
        pass  # a shorter chart is fine for the picture
    # A short table in the picture, with the hostile reason in it, and no focus rings.
    search(page, args.xss_ip.rsplit(".", 1)[0] + ".", None)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.mouse.move(1, 1)
    os.makedirs(args.screenshots, exist_ok=True)
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.wait_for_timeout(300)
        path = os.path.join(args.screenshots, f"ui-{scheme}.png")
        page.screenshot(path=path, full_page=True)
        results[f"screenshot_{scheme}"] = path
    page.emulate_media(color_scheme="light")

    # 9. Reload: the token is remembered for the tab, and only there.
    page.reload()
    page.wait_for_function("() => document.getElementById('h-interface').textContent !== '–'", timeout=5_000)
    check(page.is_hidden("#token-dialog"), "the token prompt came back after a reload")
    stored = page.evaluate(
        "() => ({s: sessionStorage.getItem('ipguard.token'), l: Object.keys(localStorage).length,"
        " c: document.cookie})"
    )
    check(stored["s"] == args.token, f"the token is not in sessionStorage after a reload: {stored}")
    check(stored["l"] == 0 and stored["c"] == "", f"something kept outside sessionStorage: {stored}")
    check(args.token not in page.url, f"token in the URL: {page.url}")
    page.wait_for_function("() => Number(document.getElementById('charts').dataset.samples) >= 2", timeout=5_000)
    no_injection(page, "after the reload")
    results["samples_after_reload"] = samples(page)


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"FAIL: {e}", flush=True)
        sys.exit(1)
    except PlaywrightError as e:
        print(f"FAIL: browser: {e}", flush=True)
        sys.exit(1)
