"""Shared set-up of the browser tests: Debian's Chromium driven by Playwright, cut off from every
host but the server under test (requests elsewhere are aborted and reported)."""

import os
import sys
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("COINS_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


class Browser:
    """A page on `base` whose requests to any other origin are aborted and recorded."""

    def __init__(self, base, width=1280, height=900):
        self.base = base
        self.origin = urlparse(base).netloc
        self.outside = []
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        self.context = self._browser.new_context(viewport={"width": width, "height": height})
        self.context.route("**/*", self._only_the_server)
        self.page = self.context.new_page()
        self.errors = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _only_the_server(self, route):
        url = urlparse(route.request.url)
        if url.scheme in ("http", "https") and url.netloc != self.origin:
            self.outside.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def close(self):
        self._browser.close()
        self._pw.stop()

    def check_cut_off(self):
        if self.outside:
            fail(f"the page tried to reach other hosts: {self.outside}")


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)
