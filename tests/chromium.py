"""Open a page in headless Chromium over the DevTools protocol and say what it did.

The protocol runs over a pipe (`--remote-debugging-pipe`: commands in on fd 3, replies and events out on
fd 4, each a JSON message ending in a NUL byte), so no port and no websocket library are needed. Every
console message, uncaught exception, log entry and network request of the page is recorded.

    python tests/chromium.py PAGE.html SHOT.png [HEIGHT]   # the README's screenshot: the top HEIGHT pixels
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 60


def find_chromium() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@dataclass
class PageVisit:
    """What a page did while it loaded: problems reported by the browser, and every URL it asked for."""

    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, error log entries
    requests: list[str] = field(default_factory=list)
    title: str = ""
    headings: int = 0  # <h2> elements: the report rendered its sections

    @property
    def external_requests(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(("file:", "data:", "about:"))]


class DevTools:
    """A Chromium process and its DevTools pipe."""

    def __init__(self, chromium: str, profile: str) -> None:
        to_browser, self._commands = os.pipe()
        self._events, from_browser = os.pipe()

        def wire_pipes() -> None:  # in the child: fd 3 reads our commands, fd 4 writes its replies
            for source, target in ((to_browser, 3), (from_browser, 4)):
                if source != target:
                    os.dup2(source, target)
                os.set_inheritable(target, True)

        args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe"]
        args += [f"--user-data-dir={profile}", "--no-first-run", "--disable-extensions", "about:blank"]
        self.process = subprocess.Popen(
            args, preexec_fn=wire_pipes, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and wait for its reply; events that arrive meanwhile are kept in `events`."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(TIMEOUT_S)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._receive(deadline - time.monotonic()))

    def _receive(self, timeout: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._events], [], [], max(timeout, 0))
            chunk = os.read(self._events, 1 << 16) if ready else b""
            if not chunk:
                raise TimeoutError("Chromium sent nothing back in time (or exited)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        finally:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            os.close(self._commands)
            os.close(self._events)


def visit(
    page: Path,
    screenshot: Path | None = None,
    chromium: str | None = None,
    width: int = 1200,
    height: int | None = None,
) -> PageVisit:
    """Load `page` (a local file) in headless Chromium, record what it did, and optionally save a PNG of it:
    the whole page, or its top `height` pixels."""
    binary = chromium or find_chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium found")
    with tempfile.TemporaryDirectory() as profile:
        tools = DevTools(binary, profile)
        try:
            target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                tools.send(f"{domain}.enable", session=session)
            metrics = {"width": width, "height": height or 900, "deviceScaleFactor": 1, "mobile": False}
            tools.send("Emulation.setDeviceMetricsOverride", metrics, session=session)
            tools.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            tools.wait_for("Page.loadEventFired")
            found = tools.send(
                "Runtime.evaluate",
                {"expression": "[document.title, document.querySelectorAll('h2').length]", "returnByValue": True},
                session=session,
            )["result"]["value"]
            if screenshot is not None:
                shot = tools.send(
                    "Page.captureScreenshot",
                    {"format": "png", "captureBeyondViewport": height is None},
                    session=session,
                )
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
        finally:
            tools.close()
    return PageVisit(_errors(tools.events), _requests(tools.events), found[0], found[1])


def _errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            errors.append("exception: " + str(params.get("exceptionDetails", {}).get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append("log: " + str(params["entry"].get("text")))
    return errors


def _requests(events: list[dict[str, Any]]) -> list[str]:
    return [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]


if __name__ == "__main__":
    shot, height = (Path(sys.argv[2]) if len(sys.argv) > 2 else None), (int(sys.argv[3]) if len(sys.argv) > 3 else None)
    result = visit(Path(sys.argv[1]), shot, height=height)
    print(json.dumps(vars(result) | {"external_requests": result.external_requests}, indent=2))
    sys.exit(1 if result.errors or result.external_requests else 0)
