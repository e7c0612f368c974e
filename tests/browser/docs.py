"""GET /docs in headless Chromium, cut off from everything but the server: the reference lists
every operation of /openapi.json, "Authorize" takes a token and "Try it out" calls the server.
Usage: docs.py BASE_URL ACCESS_TOKEN SCREENSHOT_PATH"""

import json
import sys
import urllib.request

from common import Browser, fail

base, token, shot = sys.argv[1], sys.argv[2], sys.argv[3]
document = json.load(urllib.request.urlopen(f"{base}/openapi.json"))
operations = sum(1 for item in document["paths"].values() for m in item if m in ("get", "post", "put", "patch", "delete"))

b = Browser(base)
page = b.page
page.goto(f"{base}/docs")
page.wait_for_selector(".opblock", timeout=20000)
# Every tag section open, so every operation is on the page.
shown = page.locator(".opblock").count()
if shown != operations:
    fail(f"{shown} operations shown, the document has {operations}")
text = page.inner_text("body")
for path in ("/api/v0/enkash-coins/allocate-coin", "/api/v0/coins/balance", "/oauth/token", "/api/v0/coins/redeem"):
    if path not in text:
        fail(f"{path} is not listed")

# Authorize with the bearer token, then try GET /api/v0/coins/balance for real.
page.click("button.authorize")
bearer = page.locator(".modal-ux .auth-container", has_text="Bearer").first
bearer.locator("input").first.fill(token)
bearer.locator("button.authorize").click()
page.click(".modal-ux button.btn-done")
balance = page.locator(".opblock-get", has_text="/api/v0/coins/balance").first
balance.locator(".opblock-summary").click()
balance.locator("input[placeholder='userId']").fill("DOCS_USER")
balance.locator("button.execute").click()
page.wait_for_selector(".live-responses-table .response-col_status", timeout=10000)
status = balance.locator(".live-responses-table tbody .response-col_status").first.inner_text().strip()
body = balance.locator(".live-responses-table .microlight").first.inner_text()
if status != "200" or '"payload": 0' not in body.replace('"payload":0', '"payload": 0'):
    fail(f"try it out answered {status}: {body}")
page.locator(".opblock-get", has_text="/api/v0/coins/balance").first.scroll_into_view_if_needed()
page.evaluate("window.scrollTo(0, 0)")
page.screenshot(path=shot, full_page=False)
b.check_cut_off()
if b.errors:
    fail(f"script errors on the page: {b.errors}")
b.close()
print(f"docs: {operations} operations listed, try-it-out answered {status}; screenshot {shot}")
