"""Console benchmark: event-to-inbox latency, and inbox pages over 100,000 alerts.

A real event store is filled with `--alerts` ended alerts (3 cameras, 5 reasons), then the real console
app is served by uvicorn on loopback and driven over HTTP by a logged-in client:

- inbox pages: the newest page, and pages deep in the inbox (following `next`, keyset), against the
  same page fetched by OFFSET straight from SQLite in the same run (the baseline: what paging by
  offset costs at that depth); and filtered pages (camera, reason);
- event to inbox: with the live stream (/api/stream) open, new alerts are written the way the pipeline
  writes them, one at a time; the latency is from just before the write to the moment the client has
  both the stream's message and the inbox row it fetches (what the page's script does), p50 and p99,
  against a plain GET of one alert over the same connection (the baseline: one request's cost).

    python bench/bench_console.py [--alerts 100000] [--events 100] [--out bench/results/console.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from argon2 import PasswordHasher

from pipeline.config import VigilConfig
from pipeline.console.alerts import AlertReader
from pipeline.console.app import Console, create_app
from pipeline.console.cameras import CameraBoard
from pipeline.console.reviewing import Reviewing
from pipeline.console.server import ConsoleServer
from pipeline.console.users import UserStore
from pipeline.http import HealthProbe
from pipeline.metrics import Metrics
from pipeline.model_store import ModelStore
from pipeline.packets import Event, Reason
from pipeline.sinks.sqlite import SqliteEventStore

REPO = Path(__file__).resolve().parents[1]
CAMERAS = ("gate", "lobby", "yard")
REASONS = ("speed", "class_in_place", "appearance", "motion", "dwell")


def event(i: int, kind: str, at: float) -> Event:
    reasons = (Reason(REASONS[i % 5], "x", "y", 4.0, "s"), Reason(REASONS[(i + 2) % 5], "x", "y", 2.0, "s"))
    return Event(
        id=f"ev{i:07d}", kind=kind, camera=CAMERAS[i % 3], start_time=0.0, end_time=1.0, start_frame=0,
        end_frame=10, track_id=i, class_name="person", box=(1.0, 2.0, 30.0, 60.0), score=4.0,
        peak_score=4.0 + (i % 7) / 10, reasons=reasons, created_at=at,
    )  # fmt: skip


def fill(store: SqliteEventStore, n: int) -> None:
    start = time.time() - n  # one alert a second, the newest now
    for lo in range(0, n, 2000):
        batch = []
        for i in range(lo, min(n, lo + 2000)):
            batch += [event(i, "new", start + i), event(i, "end", start + i + 0.5)]
        store.write(batch)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=100, help="new alerts timed through the live stream")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "console.json")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="vigil-console-bench-"))
    db = folder / "events.db"
    store = SqliteEventStore(db)
    t0 = time.perf_counter()
    fill(store, args.alerts)
    fill_s = time.perf_counter() - t0
    reader = AlertReader(db)
    users = UserStore(folder / "console.db", hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    users.add("bench", "bench-password", "operator")
    config = VigilConfig.model_validate({"scoring": {"models_dir": str(folder / "models")}})
    metrics = Metrics()
    models = ModelStore(config)
    console = Console(
        users, reader, Reviewing(store, reader, models, folder / "media", 5), CameraBoard(
            list(CAMERAS), reader, models, metrics, None, folder / "media"), metrics,
        HealthProbe(metrics, 30.0), None, 5, "auto",
    )  # fmt: skip
    server = ConsoleServer(create_app(console), "127.0.0.1", 0, token=False)
    stop = threading.Event()
    server.start(stop)
    client = httpx.Client(base_url=server.url, timeout=30)
    form = client.get("/login")
    token = form.text.split('name="csrf" value="')[1].split('"')[0]
    client.post("/login", data={"username": "bench", "password": "bench-password", "csrf": token})

    def timed_get(path: str, repeats: int = 20) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            response = client.get(path)
            response.raise_for_status()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    # ---- pages: newest, deep by key vs by offset, filtered -------------------------------------
    pages: dict[str, float] = {
        "newest_html_ms": 1000 * timed_get("/alerts"),
        "newest_api_ms": 1000 * timed_get("/api/alerts"),
    }
    cursor, depth = None, 0
    walk = []
    while depth < 1000:  # 1000 pages of 50 = the 50,000th alert
        t = time.perf_counter()
        body = client.get("/api/alerts", params={"cursor": cursor} if cursor else {}).json()
        walk.append(time.perf_counter() - t)
        cursor, depth = body["next"], depth + 1
        if cursor is None:
            break
    pages["deep_api_by_key_median_ms"] = 1000 * statistics.median(walk[-50:])
    offset = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        offset.execute(
            "SELECT * FROM alerts ORDER BY first_seen DESC, event_id DESC LIMIT 50 OFFSET ?",
            (50 * (depth - 1),),
        ).fetchall()
        times.append(time.perf_counter() - t)
    pages["deep_sqlite_by_offset_baseline_ms"] = 1000 * statistics.median(times)
    pages["deep_page"] = depth
    pages["filtered_camera_ms"] = 1000 * timed_get("/api/alerts?camera=lobby")
    pages["filtered_reason_ms"] = 1000 * timed_get("/api/alerts?reason=dwell&state=ended")
    pages["filtered_reason_html_ms"] = 1000 * timed_get("/alerts?reason=dwell")

    # ---- event to inbox ----------------------------------------------------------------------------
    arrivals: queue.Queue[tuple[str, float]] = queue.Queue()
    ready = threading.Event()

    def listen() -> None:
        sse = httpx.Client(base_url=server.url, cookies=client.cookies, timeout=None)
        with sse, sse.stream("GET", "/api/stream") as response:
            ready.set()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    alert = json.loads(line[6:])
                    sse.get(f"/alerts/{alert['id']}/row").raise_for_status()
                    arrivals.put((alert["id"], time.perf_counter()))
                if stop.is_set():
                    return

    threading.Thread(target=listen, daemon=True).start()
    ready.wait(10)
    time.sleep(0.5)
    latencies, baseline = [], []
    for k in range(args.events):
        i = args.alerts + k
        sent = time.perf_counter()
        store.write([event(i, "new", time.time())])
        got_id, got = arrivals.get(timeout=30)
        assert got_id == f"ev{i:07d}", got_id
        latencies.append(got - sent)
        t = time.perf_counter()
        client.get(f"/api/alerts/ev{i:07d}").raise_for_status()
        baseline.append(time.perf_counter() - t)
        time.sleep(0.05 + (k % 7) * 0.03)  # not in step with the stream's polling
    stop.set()
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()},
        "alerts": args.alerts,
        "fill_s": round(fill_s, 1),
        "pages_ms": {k: round(v, 2) if isinstance(v, float) else v for k, v in pages.items()},
        "deep_page_ratio_key_over_offset": round(
            pages["deep_api_by_key_median_ms"] / pages["deep_sqlite_by_offset_baseline_ms"], 3
        ),
        "deep_page_ratio_over_newest_page": round(
            pages["deep_api_by_key_median_ms"] / pages["newest_api_ms"], 3
        ),
        "event_to_inbox_ms": {
            "p50": round(1000 * pct(latencies, 50), 1),
            "p99": round(1000 * pct(latencies, 99), 1),
            "max": round(1000 * max(latencies), 1),
            "n": len(latencies),
        },
        "one_request_baseline_ms": {
            "p50": round(1000 * pct(baseline, 50), 1),
            "p99": round(1000 * pct(baseline, 99), 1),
        },
        "event_to_inbox_p50_over_one_request": round(pct(latencies, 50) / pct(baseline, 50), 2),
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
