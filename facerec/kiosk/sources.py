"""Where frames come from: a camera index, a video file, an RTSP/HTTP stream, or a folder of frames.

Live sources (camera, stream) are read by a grabber thread that keeps only the newest frame: a slow frame
never lets a queue of stale frames build up, so every decision is about who stands at the door *now*. When a
live source drops, the grabber reopens it with growing back-off and logs each attempt. Replays (video file,
folder) hand out every frame in order, at a given fps or as fast as the loop takes them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facerec.errors import InputPathError

log = logging.getLogger("facerec.kiosk")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".mjpeg", ".mjpg"}


@dataclass(frozen=True)
class Frame:
    id: int  # running number from the source (dropped live frames leave gaps)
    rgb: np.ndarray
    t: float  # time.monotonic() when the frame was read, or its replay time
    label: str  # file name for replays, "<source>#id" for live sources


class FrameSource:
    """Iterate `frames()`; `close()` stops a grabber thread. Live sources drop frames, replays never do."""

    name = "source"
    _stop: threading.Event
    _slot: "_Newest | None" = None
    _thread: threading.Thread | None = None  # the grabber / player feeding `_slot`, when there is one
    reconnects = 0

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Make `frames()` end soon; safe from a signal handler (no joins, no locks)."""
        self._stop.set()

    def close(self) -> None:
        self.interrupt()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _newest_from(self, target: Callable[[], None], role: str) -> Iterator[Frame]:
        """Run `target` in a thread that fills the newest-frame slot, and hand out what the slot keeps."""
        self._thread = threading.Thread(target=target, name=f"{role}-{self.name}", daemon=True)
        self._thread.start()
        yield from self._slot.take(self._stop, self._thread.is_alive)

    def health(self) -> dict:
        """For the diagnostics: frames dropped to stay on the newest one, and reconnections."""
        return {"frames_dropped": self._slot.dropped if self._slot is not None else 0, "reconnects": self.reconnects}


def open_source(spec: str, fps: float | None = None, as_camera: bool = False,
                reconnect_max_s: float = 30.0) -> FrameSource:
    """`0`, `1` ... a camera; `rtsp://`, `http(s)://` a stream; a folder of images or a video file a replay
    (at `fps`, or as fast as possible when `fps` is None; a folder `as_camera` plays like a live camera).

    Frame times `Frame.t` are the replay's own clock for replays (deterministic: timeouts and cooldowns do not
    depend on how fast this machine is) and `time.monotonic()` for live sources."""
    if spec.isdigit():
        return LiveSource(int(spec), f"camera{spec}", reconnect_max_s)
    if "://" in spec:
        return LiveSource(spec, _redact_url(spec), reconnect_max_s)
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path, fps, as_camera)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoFileSource(path, fps)
    if not path.exists():
        raise InputPathError(f"{spec}: no such camera, stream, folder or video file")
    raise InputPathError(f"{spec}: not a folder of frames or a video file ({', '.join(sorted(VIDEO_SUFFIXES))})")


def _redact_url(url: str) -> str:
    """rtsp://user:secret@host/ -> rtsp://user:***@host/ for logs."""
    scheme, _, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


class _Newest:
    """A one-frame slot: the producer overwrites, the consumer takes the newest (older unread frames are dropped)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            self.dropped += self._frame is not None
            self._frame = frame
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def take(self, stop: threading.Event, producer_alive) -> Iterator[Frame]:
        while not stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._frame is not None or stop.is_set() or not producer_alive(),
                                    timeout=1.0)
                frame, self._frame = self._frame, None
            if frame is not None:
                yield frame
            elif not producer_alive():
                return


class FolderSource(FrameSource):
    """Every image of a folder in name order, sub-folders in order (one replayed visit per sub-folder).

    Replay (default): every frame is handed out, on a replay clock of `clock_fps` frames per second with
    `visit_gap_s` between sub-folders (so consecutive visits are separate tracks); with `fps` the replay is
    also paced in wall time. `as_camera`: the frames are played at `fps` in real time like a camera and the
    loop gets only the newest one (frames it is too slow for are dropped), for latency measurements.
    """

    def __init__(self, folder: Path, fps: float | None = None, as_camera: bool = False, clock_fps: float = 15.0,
                 visit_gap_s: float = 5.0) -> None:
        self.paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise InputPathError(f"{folder}: no frames ({', '.join(sorted(IMAGE_SUFFIXES))})")
        if as_camera and not fps:
            raise InputPathError("playing a folder as a camera needs --fps")
        self.fps, self.as_camera, self.name = fps, as_camera, folder.name
        self.clock_fps, self.visit_gap_s = fps or clock_fps, visit_gap_s
        self._stop = threading.Event()
        self._slot = _Newest() if as_camera else None

    def _read(self, path: Path) -> np.ndarray | None:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            log.warning("%s: unreadable frame, skipped", path)
            return None
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _replay_times(self) -> list[float]:
        times, gaps = [], 0.0
        for i, path in enumerate(self.paths):
            if i and path.parent != self.paths[i - 1].parent:
                gaps += self.visit_gap_s
            times.append(i / self.clock_fps + gaps)
        return times

    def frames(self) -> Iterator[Frame]:
        if self.as_camera:
            yield from self._as_camera()
            return
        wall0 = time.monotonic()
        for i, (path, t) in enumerate(zip(self.paths, self._replay_times())):
            if self._stop.is_set():
                return
            if self.fps:
                delay = wall0 + i / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            rgb = self._read(path)
            if rgb is not None:
                yield Frame(i, rgb, t, str(path))

    def _as_camera(self) -> Iterator[Frame]:
        decoded = [(i, p, self._read(p)) for i, p in enumerate(self.paths)]  # decoding is not the camera's cost

        def play() -> None:
            wall0 = time.monotonic()
            for i, path, rgb in decoded:
                delay = wall0 + i / self.fps - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                if rgb is not None:
                    self._slot.put(Frame(i, rgb, time.monotonic(), str(path)))
            self._slot.wake()

        yield from self._newest_from(play, "play")


class VideoFileSource(FrameSource):
    """Every frame of a video file, in order, on the video's own clock (paced in wall time with `fps`)."""

    def __init__(self, path: Path, fps: float | None = None) -> None:
        self.path, self.fps, self.name = path, fps, path.stem
        self._stop = threading.Event()

    def frames(self) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise InputPathError(f"{self.path}: OpenCV cannot open this video")
        clock = self.fps or cap.get(cv2.CAP_PROP_FPS) or 15.0
        wall0, i = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                if self.fps:
                    delay = wall0 + i / self.fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                ok, bgr = cap.read()
                if not ok:
                    return
                yield Frame(i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), i / clock, f"{self.path.name}#{i}")
                i += 1
        finally:
            cap.release()


class LiveSource(FrameSource):
    """A camera or stream read by a grabber thread that keeps only the newest frame; reconnects with back-off."""

    def __init__(self, target: int | str, name: str, reconnect_max_s: float = 30.0) -> None:
        self.target, self.name = target, name
        self.reconnect_max_s = reconnect_max_s
        self.reconnects = 0
        self._slot = _Newest()
        self._stop = threading.Event()

    def _open(self) -> cv2.VideoCapture | None:
        cap = cv2.VideoCapture(self.target)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # where the backend honours it: less latency in the driver
            return cap
        cap.release()
        return None

    def _grab(self) -> None:
        delay, next_id = 0.5, 0
        while not self._stop.is_set():
            cap = self._open()
            if cap is None:
                log.warning("%s: cannot open; retrying in %.1f s", self.name, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            if self.reconnects or next_id:
                log.warning("%s: reconnected", self.name)
            first = next_id
            while not self._stop.is_set():
                ok, bgr = cap.read()
                if not ok:
                    break
                if next_id == first:
                    delay = 0.5  # back-off restarts only once frames flow (not on an open that yields none)
                frame = Frame(next_id, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.monotonic(),
                              f"{self.name}#{next_id}")
                next_id += 1
                self._slot.put(frame)  # an older unread frame is dropped: always the newest
            cap.release()
            if not self._stop.is_set():
                self.reconnects += 1
                log.warning("%s: stream dropped; reconnecting in %.1f s", self.name, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max_s)
        self._slot.wake()

    def frames(self) -> Iterator[Frame]:
        yield from self._newest_from(self._grab, "grab")
