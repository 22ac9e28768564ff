"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: fds 3 and 4,
JSON messages ended by NUL), for tests that open a page as a person would: no port, no network, no
package beyond the standard library (Pillow reads the screenshot).

    with Chromium() as browser:
        shot = browser.open("/tmp/report.html")
        shot.errors, shot.boxes, shot.png
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Chromium", "Shot", "find_chromium", "INSTALL_HINT"]

INSTALL_HINT = "chromium is not installed: apt-get install chromium (Debian's package; .ci/run installs it)"

#: JavaScript run in the page: each element with a data-chart attribute, its box in page pixels.
_BOXES = """JSON.stringify([...document.querySelectorAll('[data-chart]')].map(e => {
  const r = e.getBoundingClientRect();
  return {name: e.getAttribute('data-chart'), x: r.left + window.scrollX, y: r.top + window.scrollY,
          width: r.width, height: r.height};
}))"""


def find_chromium() -> str | None:
    """The Chromium executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Shot:
    """A page as Chromium drew it: console errors and uncaught exceptions, each ``[data-chart]`` element's
    box (page pixels), the page's size, and a PNG of the whole page."""

    errors: list[str] = field(default_factory=list)
    boxes: list[dict[str, Any]] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)
    png: bytes = b""


class Chromium:
    """One headless Chromium process (a context manager); :meth:`open` loads a page in a fresh tab."""

    def __init__(self, width: int = 1280, timeout: float = 20.0) -> None:
        exe = find_chromium()
        if exe is None:
            raise RuntimeError(INSTALL_HINT)
        self.width, self.timeout = width, timeout
        self._profile = tempfile.mkdtemp(prefix="tensorfile-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def fds() -> None:  # in the child: the protocol's pipe on fds 3 (commands) and 4 (replies), inheritable
            high_r, high_w = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        # close_fds=False: subprocess would close fds 3 and 4 after fds() runs; every other fd Python opened
        # is close-on-exec (PEP 446), so nothing else reaches the browser.

        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
                "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
                f"--user-data-dir={self._profile}", "about:blank"]  # fmt: skip
        self._process = subprocess.Popen(args, preexec_fn=fds, close_fds=False, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._id = 0
        self._events: list[dict[str, Any]] = []

    # ------------------------------------------------------------ the protocol
    def _send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._next()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def _next(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def _wait_for(self, method: str, session: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self._events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} from chromium")
            self._events.append(self._next())

    # ------------------------------------------------------------ a page
    def open(self, path: str) -> Shot:
        """Load the file ``path``, wait for it to load, and return what it showed."""
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self._send(f"{domain}.enable", session=session)
        self._send("Emulation.setDeviceMetricsOverride",
                   {"width": self.width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)  # fmt: skip
        self._events.clear()
        self._send("Page.navigate", {"url": "file://" + os.path.abspath(path)}, session)
        self._wait_for("Page.loadEventFired", session)
        shot = Shot()
        result = self._send("Runtime.evaluate", {"expression": _BOXES, "returnByValue": True}, session)
        shot.boxes = json.loads(result["result"]["value"])
        metrics = self._send("Page.getLayoutMetrics", session=session)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot.size = (int(size["width"]), int(size["height"]))
        clip = {"x": 0, "y": 0, "width": shot.size[0], "height": shot.size[1], "scale": 1}
        data = self._send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip},
                          session)["data"]  # fmt: skip
        shot.png = base64.b64decode(data)
        shot.errors = _errors(self._events, session)
        self._send("Target.closeTarget", {"targetId": target})
        return shot

    def close(self) -> None:
        try:
            self._send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _errors(events: list[dict[str, Any]], session: str) -> list[str]:
    """Console errors, uncaught exceptions and failed loads the page's session reported."""
    out = []
    for event in events:
        if event.get("sessionId") != session:
            continue
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})  # the message first: the page's path can be long
            message = details.get("exception", {}).get("description") or details.get("text", "")
            out.append(f"{message[:500]} ({json.dumps(details)[:500]})")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(json.dumps(params.get("args", []))[:500])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            out.append(params["entry"].get("text", "")[:500])
    return out
