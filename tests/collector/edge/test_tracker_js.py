"""collector/edge/tracker.js under Node with a stand-in fetch: which answers count as success and which are retried."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

TRACKER = Path(__file__).resolve().parents[3] / "collector" / "edge" / "tracker.js"
NODE = shutil.which("node")

# Runs the tracker in a bare context (the page's globals stubbed), flushes the pageview it queues on load with
# fetch answering the given status (Retry-After: 0, so that retries come at once), and prints the sends.
HARNESS = r"""
const fs = require("fs"), vm = require("vm");
const src = fs.readFileSync(process.argv[1], "utf8").replace("__COLLECT_PATH__", "/collect");
async function sends(status) {
  let calls = 0;
  const storage = () => {
    const m = new Map();
    return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, v) };
  };
  const on = () => {};
  const document = { currentScript: { src: "http://collector.test/s.js", getAttribute: () => "shop.test" },
                     referrer: "", title: "t", visibilityState: "visible", addEventListener: on };
  const window = { localStorage: storage(), sessionStorage: storage(), crypto: globalThis.crypto,
                   addEventListener: on };
  const ctx = vm.createContext({
    window, document, location: { hostname: "shop.test", href: "http://shop.test/", pathname: "/" },
    history: { pushState() {} }, navigator: {}, crypto: globalThis.crypto, Blob, URL, setTimeout, clearTimeout,
    Uint8Array,
    fetch: () => {
      calls++;
      return Promise.resolve({ ok: status >= 200 && status < 300, status, headers: { get: () => "0" } });
    },
  });
  vm.runInContext(src, ctx);
  window.collector.flush();
  await new Promise((resolve) => setTimeout(resolve, 300));
  return calls;
}
(async () => {
  const out = {};
  for (const status of JSON.parse(process.argv[2])) out[status] = await sends(status);
  console.log(JSON.stringify(out));
})();
"""


@pytest.mark.skipif(NODE is None, reason="needs node")
def test_tracker_counts_any_2xx_as_success_and_retries_only_429_and_5xx() -> None:
    """200 (the default) and 202 (BUFFERED_SUCCESS_STATUS=202) are sent once; a 4xx is not resent; 429 and 503 are
    retried up to the tracker's 6 tries."""
    statuses = [200, 202, 204, 400, 403, 429, 503]
    assert NODE is not None
    command = [NODE, "-e", HARNESS, str(TRACKER), json.dumps(statuses)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
    sends = {int(k): v for k, v in json.loads(done.stdout).items()}
    assert sends == {200: 1, 202: 1, 204: 1, 400: 1, 403: 1, 429: 6, 503: 6}, done.stdout
