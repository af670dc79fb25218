"""Test helper: the real camera simulator (deploy/camsim) on loopback, which tests can kill and restart."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[1]
CAMSIM = REPO / "deploy" / "camsim" / "vigil_camsim.py"
SYSTEM_PYTHON = "/usr/bin/python3"


def gi_missing_reason() -> str | None:
    """Why the simulator cannot run here (None when it can): it needs the system python with gi."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not found (the camera simulator needs the system python with gi)"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return (
            f"{SYSTEM_PYTHON} cannot import gi/GstRtspServer "
            "(apt-get install python3-gi gir1.2-gst-rtsp-server-1.0)"
        )
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for a camera that must stay dead)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LoopbackCamera:
    """One looping RTSP camera served by vigil_camsim on 127.0.0.1.

    `start()` waits for the READY line (the port is the one asked for, or one the server picked);
    `kill()` is SIGKILL (a camera that vanishes); `restart()` comes back on the same port.
    """

    def __init__(self, clip: str | Path, port: int | None = None, mount: str = "cam") -> None:
        self.clip = Path(clip)
        self.port = port
        self.mount = mount
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: list[str] = []

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("LoopbackCamera: not started yet, the port is not known")
        return f"rtsp://127.0.0.1:{self.port}/{self.mount}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 15.0) -> LoopbackCamera:
        if self.running:
            raise RuntimeError(f"LoopbackCamera already running at {self.url}")
        cmd = [SYSTEM_PYTHON, str(CAMSIM), "--port", str(self.port or 0), f"{self.clip}:{self.mount}"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._proc = proc
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        def pump_err() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self._stderr.append(line)

        threading.Thread(target=pump, name="camsim-out", daemon=True).start()
        threading.Thread(target=pump_err, name="camsim-err", daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(0.01, remaining))
            except queue.Empty:
                self.kill()
                raise TimeoutError(
                    f"camera simulator not READY within {timeout_s} s: {self._err()}"
                ) from None
            if line is None:
                proc.wait(5)
                raise RuntimeError(f"camera simulator exited with {proc.returncode}: {self._err()}")
            if line.startswith("READY "):
                url = line.split()[1]
                self.port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
                return self

    def _err(self) -> str:
        return "".join(self._stderr).strip()[-500:] or "(no stderr)"

    def kill(self) -> None:
        """SIGKILL: the camera disappears without a goodbye."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the camera freezes with its connections open (a hung camera)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> int | None:
        """SIGTERM and wait: the simulator's clean exit; returns its exit status."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        return self._proc.returncode

    def restart(self, timeout_s: float = 15.0) -> LoopbackCamera:
        """Kill (if still running) and start again on the same port."""
        self.kill()
        return self.start(timeout_s)

    def __enter__(self) -> LoopbackCamera:
        return self if self.running else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
