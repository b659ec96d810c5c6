"""The committed summary page, opened in a real browser (headless Chromium).

The page a reader opens first, ``reports/summary.html``, must lead with the
verdict table (one row per claim of the ledger) and show every figure. A
small probe script is added to a copy of the page; Chromium loads it, runs the
probe after the load event and the DOM it dumps carries the probe's findings.

The test needs Debian's ``chromium`` package (``.ci/run`` installs it when it is
missing); it is skipped, saying so, only where no browser is installed.
"""
import html
import json
import re
import shutil
import subprocess

import pytest

from hashstudy import config

PAGE = config.repo_root() / "reports" / "summary.html"

PROBE = """
<script>
window.addEventListener("load", () => {
  const table = document.querySelector("table#verdicts");
  const out = {table: !!table, images: document.images.length, broken: [], rows: []};
  if (table) {
    const box = table.getBoundingClientRect();
    const style = getComputedStyle(table);
    out.visible = box.width > 0 && box.height > 0 && style.display !== "none"
      && style.visibility !== "hidden";
    out.first_table = document.querySelector("table") === table;
    out.rows = Array.from(table.querySelectorAll("tr[data-claim]")).map(
      (tr) => [tr.getAttribute("data-claim"), tr.getBoundingClientRect().height > 0,
               getComputedStyle(tr).backgroundColor]);
  }
  for (const img of document.images) {
    if (!(img.complete && img.naturalWidth > 0)) out.broken.push(img.src.slice(0, 60));
  }
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def probe(page, tmp_path) -> dict:
    exe = browser()
    if exe is None:
        pytest.skip("no Chromium on this machine: install Debian's 'chromium' package "
                    "(apt-get install chromium) to run the browser test of the summary page")
    text = page.read_text()
    copy = tmp_path / "page.html"
    copy.write_text(text.replace("</body>", PROBE + "</body>", 1) if "</body>" in text
                    else text + PROBE)
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
           "--dump-dom", copy.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe did not run in Chromium: {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_summary_page_leads_with_every_verdict_and_shows_every_image(tmp_path):
    assert PAGE.exists(), "reports/summary.html is missing: run `make reports`"
    out = probe(PAGE, tmp_path)
    assert out["table"], "the page has no verdict table (table#verdicts)"
    assert out["visible"] and out["first_table"], "the verdict table must be visible and lead the page"
    from hashstudy import claims

    ledger = list(claims.load()["id"])
    assert [row[0] for row in out["rows"]] == ledger, "one visible row per ledger claim, in order"
    assert all(row[1] for row in out["rows"])
    # colour-coded: more than one background colour when verdicts differ
    assert len({row[2] for row in out["rows"]}) >= 2
    assert out["images"] >= 3 and not out["broken"], f"images that did not decode: {out['broken']}"


def test_the_probe_notices_a_broken_image_and_a_missing_table(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<html><body><p>no verdicts</p><img src="data:image/png;base64,AAAA"></body></html>')
    out = probe(page, tmp_path)
    assert not out["table"] and out["images"] == 1 and len(out["broken"]) == 1
