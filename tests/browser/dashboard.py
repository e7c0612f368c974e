"""The dashboard end to end in headless Chromium, cut off from everything but the server, against
data the Rust test seeded (tests/api/browser.rs): sign in; read the seeded numbers back from the
charts and totals; create and edit a configuration and see the audit trail; look a user up and
page through the history; reverse an allocation and see the balance change; adjust the user into
debt and out of it again, each after a confirmation step; download the ledger and compare the file
with the ledger the API shows; set the company's expiry reminders on the webhooks page; start a
bonus campaign on the campaigns page and end it; open a member link.
Usage: dashboard.py BASE_URL EXPECTED_JSON SCREENSHOT_DIR
EXPECTED_JSON: {"client_id", "client_secret", "days": {"YYYY-MM-DD": {"issued", "redeemed"}},
"totals": {...}, "event", "pager_user", "pager_entries", "reverse_user", "reverse_request",
"reverse_coins", "member_url", "member_balance"}"""

import base64
import csv
import io
import json
import re
import sys
import time
import urllib.request

from common import Browser, fail

base, expected, shots = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
b = Browser(base)
page = b.page


def value_of(selector):
    el = page.locator(selector)
    if el.count() != 1:
        fail(f"{selector}: {el.count()} elements")
    return int(el.get_attribute("data-value"))


def number(text):
    return int(text.replace(",", "").strip())


# Sign in (keyboard only: Tab between fields, Enter to submit).
page.goto(f"{base}/dashboard")
if not page.url.endswith("/dashboard/login"):
    fail(f"not sent to the sign-in page: {page.url}")
page.focus("#f-client_id")
page.keyboard.type(expected["client_id"])
page.keyboard.press("Tab")
page.keyboard.type(expected["client_secret"])
page.keyboard.press("Enter")
page.wait_for_url(f"{base}/dashboard")

# The overview: every seeded day on the daily chart, the totals, the event bars.
for day, moved in expected["days"].items():
    for series, coins in moved.items():
        got = value_of(f'svg.chart-daily circle[data-series="{series}"][data-key="{day}"]')
        if got != coins:
            fail(f"{series} on {day}: the chart shows {got}, seeded {coins}")
for series, coins in expected["totals"].items():
    shown = number(page.locator(f"#total-{series} .value").inner_text())
    if shown != coins:
        fail(f"total {series}: {shown} shown, seeded {coins}")
event_issued = value_of(f'svg.chart-events rect[data-series="issued"][data-key="{expected["event"]}"]')
if event_issued != expected["totals"]["issued"]:
    fail(f"event {expected['event']} issued {event_issued}, seeded {expected['totals']['issued']}")
liability = page.locator("#liability .note").inner_text()
if not re.match(r"^[A-Z]{3} [0-9,]+\.[0-9]{2}$", liability):
    fail(f"the liability is not shown as money: {liability!r}")
page.screenshot(path=f"{shots}/dashboard-overview.png", full_page=True)
page.set_viewport_size({"width": 1000, "height": 720})
page.screenshot(path=f"{shots}/dashboard-small.png")  # docs/dashboard.png is made from this one
page.set_viewport_size({"width": 1280, "height": 900})

# Configurations: create one, edit it, read the audit trail.
page.click("nav >> text=Configurations")
page.select_option("#create-config select[name=configuration]", "CUSTOM")
page.fill("#create-config input[name=companyId]", expected["company"])
page.fill("#create-config input[name=event]", "BROWSER_EVENT")
page.fill("#create-config input[name=amount]", "5")
page.fill("#create-config input[name=maxPerUser]", "3")
page.click("#create-config button[type=submit]")
page.wait_for_selector("text=Configuration created.")
page.fill("#edit-config input[name=amount]", "7")
page.fill("#edit-config input[name=maxPerUser]", "")
page.click("#edit-config button[type=submit]")
page.wait_for_selector("text=Changes saved")
audit = page.locator("table.audit").inner_text()
if "amount: 5 → 7" not in audit or "maxPerUser: 3 → null" not in audit:
    fail(f"the audit trail does not show the edit: {audit}")
# A bad value is refused with the API's sentence, and nothing changes.
page.fill("#edit-config input[name=amount]", "0")
page.click("#edit-config button[type=submit]")
page.wait_for_selector(".notice.error")
if "amount must be a whole number" not in page.locator(".notice.error").inner_text():
    fail("a bad amount was not refused with the API's sentence")

# Users: look up, page through the history.
page.click("nav >> text=Users")
page.fill("input[name=userId]", expected["pager_user"])
page.press("input[name=userId]", "Enter")
page.wait_for_selector("table.history")
first = page.locator("table.history tbody tr").count()
page.click("text=Older entries")
page.wait_for_selector("table.history")
second = page.locator("table.history tbody tr").count()
if first + second != expected["pager_entries"]:
    fail(f"history pages hold {first} + {second} entries, seeded {expected['pager_entries']}")

# Reverse an allocation in two parts, with the confirmation step, and see the balance change:
# 4 coins first, then all that remains.
page.fill("input[name=userId]", expected["reverse_user"])
page.press("input[name=userId]", "Enter")
before = value_of("#user-balance .value")
row = page.locator("table.history tbody tr", has_text=expected["reverse_request"])
row.locator("text=Reverse…").click()
page.wait_for_selector("#confirm-reverse")
page.fill("#confirm-reverse input[name=coins]", "4")
page.screenshot(path=f"{shots}/dashboard-confirm.png")
page.click("#confirm-reverse button[type=submit]")
page.wait_for_selector(".notice.ok")
notice = page.locator(".notice.ok").inner_text()
remaining = expected["reverse_coins"] - 4
if f"{remaining} of its coins remain" not in notice:
    fail(f"a partial return says: {notice}")
after = value_of("#user-balance .value")
if after != before - 4:
    fail(f"balance {before} → {after} after returning 4 coins")
row = page.locator("table.history tbody tr", has_text=expected["reverse_request"]).last
row.locator("text=Reverse…").click()
page.wait_for_selector("#confirm-reverse")
page.click("#confirm-reverse button[type=submit]")
page.wait_for_selector(".notice.ok")
after = value_of("#user-balance .value")
if after != before - expected["reverse_coins"]:
    fail(f"balance {before} → {after} after reversing {expected['reverse_coins']} coins")

# Adjust: take 25 more coins than the user has (into debt), then give 40 (paying it first).
balance = value_of("#user-balance .value")
page.click("details.adjust summary")
page.fill("#adjust input[name=coins]", str(-(balance + 25)))
page.fill("#adjust input[name=reason]", "Fraudulent order <2231> & co")
page.select_option("#adjust select[name=onShortfall]", "NEGATIVE")
page.click("#adjust button[type=submit]")
page.wait_for_selector("#confirm-adjust")
confirm = page.locator("main").inner_text()
if "Fraudulent order <2231> & co" not in confirm or f"Take {balance + 25:,} coins" not in confirm:
    fail(f"the confirmation does not say what will be written: {confirm}")
page.screenshot(path=f"{shots}/dashboard-confirm-adjust.png")
page.click("#confirm-adjust button[type=submit]")
page.wait_for_selector(".notice.ok")
if value_of("#user-balance .value") != -25 or value_of("#user-debt .value") != 25:
    fail(f"after the claw-back: balance {value_of('#user-balance .value')}, debt {value_of('#user-debt .value')}")
row = page.locator("table.history tbody tr").first
if "ADJUST" not in row.inner_text() or "Fraudulent order <2231> & co" not in row.inner_text():
    fail(f"the history's newest row is not the adjustment with its reason: {row.inner_text()}")
page.click("details.adjust summary")
page.fill("#adjust input[name=coins]", "40")
page.fill("#adjust input[name=reason]", "Goodwill")
page.click("#adjust button[type=submit]")
page.wait_for_selector("#confirm-adjust")
page.click("#confirm-adjust button[type=submit]")
page.wait_for_selector(".notice.ok")
if value_of("#user-balance .value") != 15 or value_of("#user-debt .value") != 0:
    fail(f"after the credit: balance {value_of('#user-balance .value')}, debt {value_of('#user-debt .value')}")
page.screenshot(path=f"{shots}/dashboard-user.png", full_page=True)

# Download the ledger from the overview and compare the file, read by Python's csv module, with
# the ledger the API shows. An export ends five seconds before now: let the last entries settle.
time.sleep(6)
page.click("nav >> text=Overview")
page.wait_for_selector("#export-ledger")
page.fill("#xl-fromDay", expected["export_from_day"])
with page.expect_download() as download:
    page.click("#export-ledger button[type=submit]")
path = download.value.path()
if not download.value.suggested_filename.startswith("coins-ledger-SHOP-"):
    fail(f"the file is named {download.value.suggested_filename}")
with open(path, newline="") as f:
    rows = list(csv.DictReader(f, strict=True))
basic = base64.b64encode(f"{expected['client_id']}:{expected['client_secret']}".encode()).decode()
req = urllib.request.Request(f"{base}/oauth/token", data=b"grant_type=client_credentials", headers={"Authorization": f"Basic {basic}"})
token = json.load(urllib.request.urlopen(req))["access_token"]
ledger = []
for user in ("ASHA", "PAGER"):
    req = urllib.request.Request(f"{base}/api/v0/coins/transactions?userId={user}&limit=500", headers={"Authorization": f"Bearer {token}"})
    for e in json.load(urllib.request.urlopen(req))["payload"]["entries"]:
        ledger.append((str(e["entryId"]), user, e["type"], str(e["coins"]), str(e["balanceAfter"]), e["reason"] or ""))
in_file = [(r["entryId"], r["userId"], r["type"], r["coins"], r["balanceAfter"], r["reason"].lstrip("'") if r["reason"].startswith("'=") else r["reason"]) for r in rows]
if sorted(in_file) != sorted(ledger):
    fail(f"the downloaded ledger differs from the API's: {len(in_file)} rows, {len(ledger)} entries")

# Expiry reminders, set on the webhooks page, read back in its table.
page.goto(f"{base}/dashboard/webhooks")
page.fill("#reminders-companyId", expected["company"])
page.fill("#reminders-days", "1, 30, 7")
page.click("#reminders-form button")
page.wait_for_selector(".notice.ok")
said = page.locator(".notice.ok").inner_text()
if said != f"{expected['company']} reminds 30, 7, 1 days before coins expire.":
    fail(f"setting reminders said {said!r}")
row = page.locator("table.reminders tr", has_text=expected["company"]).inner_text()
if "30, 7, 1" not in row:
    fail(f"the reminders table shows {row!r}")
page.screenshot(path=f"{shots}/dashboard-webhooks.png", full_page=True)

# A bonus campaign, started on the campaigns page (running since a minute ago), then ended.
page.goto(f"{base}/dashboard/campaigns?companyId={expected['company']}")
stamp = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
page.fill("#f-name", "Launch week: double coins")
page.fill("#f-events", expected["event"])
page.fill("#f-startsAt", stamp(time.time() - 60))
page.fill("#f-endsAt", stamp(time.time() + 7 * 86400))
page.select_option("#f-reward", "multiplier")
page.fill("#f-value", "20000")
page.click("#campaign-form button")
page.wait_for_selector(".notice")
said = page.locator(".notice").inner_text()
if not re.fullmatch(r"Campaign CMP\d{6} is created\.", said):
    fail(f"creating a campaign said {said!r}")
row = page.locator("table.campaigns tbody tr", has_text="Launch week").inner_text()
if "×2 (20000 bps)" not in row or "active" not in row:
    fail(f"the campaigns table shows {row!r}")
page.screenshot(path=f"{shots}/dashboard-campaigns.png", full_page=True)
page.locator("table.campaigns tbody tr", has_text="Launch week").locator("button", has_text="End now").click()
page.wait_for_selector(".notice.ok")
said = page.locator(".notice.ok").inner_text()
if not re.fullmatch(r"Campaign CMP\d{6} ends at \S+\.", said):
    fail(f"ending the campaign said {said!r}")

# Phone width: the overview still fits.
page.set_viewport_size({"width": 390, "height": 844})
page.goto(f"{base}/dashboard")
width = page.evaluate("document.documentElement.scrollWidth")
if width > 400:
    fail(f"the overview is {width}px wide at phone width")
page.screenshot(path=f"{shots}/dashboard-phone.png", full_page=False)

# Sign out: back to the sign-in page, and the overview asks for it again.
page.set_viewport_size({"width": 1280, "height": 900})
page.click("text=Sign out")
page.wait_for_url(f"{base}/dashboard/login")
page.goto(f"{base}/dashboard")
if not page.url.endswith("/dashboard/login"):
    fail("still signed in after signing out")

# The member page, from a link, with no session.
member = b.context.browser.new_context()
mp = member.new_page()
mp.goto(expected["member_url"])
shown = int(mp.locator("#member-balance").get_attribute("data-value"))
if shown != expected["member_balance"]:
    fail(f"member page shows {shown}, expected {expected['member_balance']}")
mp.screenshot(path=f"{shots}/member.png", full_page=True)
member.close()

b.check_cut_off()
if b.errors:
    fail(f"script errors on the page: {b.errors}")
b.close()
print(f"dashboard: charts and totals match the seeded data, configuration created and edited, "
      f"history paged ({first} + {second}), reversal applied ({before} → {after}), adjusted into debt and out, "
      f"ledger downloaded ({len(rows)} rows, as the API shows them), reminders set, campaign started and ending, "
      f"member page shows {shown}")
