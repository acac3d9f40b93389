"""What a decision triggers: a command (decision JSON on stdin), an HTTP POST, an MQTT message.

Every action runs on a worker thread with its own timeout, so a slow or dead door controller never blocks the
camera loop; a failure is logged and never turns into an unlock. MQTT follows the Home Assistant habit of one
topic per device: `facerec/<camera>/decision`, JSON payload, QoS 1, not retained (a stale "grant" must not be
replayed to a subscriber that connects later).
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlparse

log = logging.getLogger("facerec.kiosk")


class Action:
    name = "action"

    def __call__(self, decision: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CommandAction(Action):
    """Run a command (no shell) with the decision as one JSON document on stdin; non-zero exit is logged."""

    def __init__(self, command: str, timeout_s: float) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise ValueError("empty --on-decision command")
        self.timeout_s = timeout_s
        self.name = f"command {self.argv[0]}"

    def __call__(self, decision: dict) -> None:
        done = subprocess.run(self.argv, input=json.dumps(decision).encode(), capture_output=True,
                              timeout=self.timeout_s, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr.decode(errors='replace').strip()[:200]}")


class HttpAction(Action):
    """POST the decision as JSON; any status >= 400 is a failure."""

    def __init__(self, url: str, timeout_s: float) -> None:
        if urlparse(url).scheme not in ("http", "https"):
            raise ValueError(f"--post-url {url!r}: not an http(s) URL")
        self.url, self.timeout_s = url, timeout_s
        self.name = f"POST {urlparse(url).netloc}"

    def __call__(self, decision: dict) -> None:
        import requests

        response = requests.post(self.url, json=decision, timeout=self.timeout_s)
        response.raise_for_status()


class MqttAction(Action):
    """Publish to `<prefix>/<camera>/decision` on a broker given as mqtt://[user:pass@]host[:port]."""

    def __init__(self, url: str, camera: str, timeout_s: float, prefix: str = "facerec") -> None:
        import paho.mqtt.client as mqtt

        parsed = urlparse(url)
        if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname:
            raise ValueError(f"--mqtt {url!r}: expected mqtt://host[:port]")
        self.topic = f"{prefix}/{camera}/decision"
        self.timeout_s = timeout_s
        self.name = f"MQTT {parsed.hostname}:{parsed.port or 1883}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"facerec-kiosk-{camera}")
        if parsed.username:
            self.client.username_pw_set(parsed.username, parsed.password)
        self.client.reconnect_delay_set(1, 30)
        self.client.connect_async(parsed.hostname, parsed.port or 1883, keepalive=30)
        self.client.loop_start()  # paho's own thread keeps the connection and reconnects

    def __call__(self, decision: dict) -> None:
        info = self.client.publish(self.topic, json.dumps(decision), qos=1, retain=False)
        info.wait_for_publish(timeout=self.timeout_s)
        if not info.is_published():
            raise TimeoutError(f"not acknowledged by the broker within {self.timeout_s} s")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Dispatcher:
    """Runs every action for every decision on worker threads; never raises into the loop."""

    def __init__(self, actions: list[Action], workers: int = 4) -> None:
        self.actions = actions
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kiosk-action")
        self._pending: set[Future] = set()
        self._lock = threading.Lock()
        self.failures = 0

    def dispatch(self, decision: dict) -> None:
        for action in self.actions:
            future = self._pool.submit(self._run, action, decision)
            with self._lock:
                self._pending.add(future)
            future.add_done_callback(self._done)

    def _run(self, action: Action, decision: dict) -> None:
        try:
            action(decision)
        except Exception as exc:  # a door controller's failure is logged, never raised into the loop
            with self._lock:
                self.failures += 1
            log.error("%s failed for visit %s (%s): %s", action.name, decision.get("visit"),
                      decision.get("decision"), exc)

    def _done(self, future: Future) -> None:
        with self._lock:
            self._pending.discard(future)

    def close(self, wait_s: float = 10.0) -> None:
        """Let running actions finish (each has its own timeout), then close connections."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            try:
                future.result(timeout=wait_s)
            except Exception:  # already logged by _run, or still running past the wait
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)
        for action in self.actions:
            action.close()
