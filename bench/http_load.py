"""HTTP serving load test: ``clearbg serve`` against ``rembg s`` on the same u2netp weights.

Each server runs in its own process on a free loopback port. After a warm-up, ``--clients``
threads each send ``--requests`` photos (full-size fashion photos, cycled) and wait for the PNG
cutout; the table gives throughput, latency percentiles and the server's RSS before and after
the load (growth over 10 % would hint at a leak). After the load each distinct photo is sent
once more and its cutout's alpha scored against the human mask (IoU at 128), so every speed
figure has the mask quality of the same server beside it.

``rembg s`` is rembg 2.0.86's own server, started with its own command line from a private
virtual environment (``bench/rembg_cli.py``; its pins clash with clearbg's), with the official
u2netp.onnx copied into a temporary model home (it only loads custom models from there) and
``--no-ui``.

    python bench/http_load.py                          # 8 clients x 500 requests
    python bench/http_load.py --requests 40 --servers clearbg,rembg
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rembg_cli import rembg_executable

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion"
RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def photos(n: int) -> list[tuple[bytes, Path]]:
    """The first ``n`` test-split photos of the fashion set (then val, then train): JPEG bytes
    and the human mask's path."""
    with open(DATA / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    order = {"test": 0, "val": 1, "train": 2}
    rows.sort(key=lambda r: (order[r["split"]], r["id"]))
    return [((DATA / r["image"]).read_bytes(), DATA / r["mask"]) for r in rows[:n]]


def mean_iou(server: "Server", pairs: list[tuple[bytes, Path]]) -> float:
    """Mean IoU of the server's cutouts (alpha >= 128) against the human masks (>= 128)."""
    scores = []
    with httpx.Client() as client:
        for data, mask in pairs:
            response = server.post(client, data)
            response.raise_for_status()
            alpha = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGBA").getchannel("A")) >= 128
            truth = np.asarray(Image.open(mask).convert("L")) >= 128
            union = (alpha | truth).sum()
            scores.append((alpha & truth).sum() / union if union else 1.0)
    return float(np.mean(scores))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """One server process: how to start it, where to post, and its request fields."""

    def __init__(self, name: str, model: str, workdir: Path):
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, BROWSER="true")  # rembg's startup hook opens a browser otherwise
        if name == "clearbg":
            cmd = [sys.executable, "-m", "clearbg", "serve", "--port", str(self.port), "--model", model,
                   "--log-level", "warning"]
            self.path, self.field, self.form, self.params = "/v1/remove", "file", {}, {}
            self.ready = "/readyz"
        else:
            from clearbg.models.download import cached_onnx
            from clearbg.models.specs import get_spec

            home = workdir / "rembg-home"
            home.mkdir(exist_ok=True)
            onnx = home / f"{model}.onnx"
            shutil.copy(cached_onnx(get_spec(model)), onnx)
            env["U2NET_HOME"] = str(home)  # rembg only loads custom models from its home
            cmd = [str(rembg_executable()), "s", "--host", "127.0.0.1", "--port", str(self.port),
                   "--log_level", "warning", "--no-ui"]
            self.path, self.field = "/api/remove", "file"
            self.form, self.params = {"model": "u2net_custom"}, {"extras": json.dumps({"model_path": str(onnx)})}
            self.ready = "/api"
        self.log = open(workdir / f"{name}.log", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {(workdir / f'{name}.log').read_text()[-2000:]}")
            try:
                if httpx.get(self.url + self.ready, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{name} did not start in 120 s")

    def post(self, client: httpx.Client, data: bytes) -> httpx.Response:
        return client.post(self.url + self.path, files={self.field: ("photo.jpg", data, "image/jpeg")},
                           data=self.form, params=self.params, timeout=300)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def hammer(server: Server, images: list[bytes], clients: int, requests: int) -> tuple[list[float], int, float]:
    """``clients`` threads each posting ``requests`` photos.

    Returns:
        (latencies in s, non-200 count, server RSS in MB when half the requests were done).
    """
    latencies: list[float] = []
    errors = 0
    half = clients * requests // 2
    rss_half = float("nan")
    lock = threading.Lock()

    def worker(index: int) -> None:
        nonlocal errors, rss_half
        with httpx.Client() as client:
            for i in range(requests):
                data = images[(index * requests + i) % len(images)]
                start = time.perf_counter()
                response = server.post(client, data)
                took = time.perf_counter() - start
                with lock:
                    latencies.append(took)
                    errors += response.status_code != 200
                    if len(latencies) == half:
                        rss_half = rss_mb(server.proc.pid)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, rss_half


def load(server: Server, pairs: list[tuple[bytes, Path]], clients: int, requests: int) -> dict:
    """Warm up at full concurrency, then ``clients`` threads x ``requests`` posts.

    The warm-up (a tenth of the load, at least 2 requests per client) runs at the same
    concurrency so thread pools and allocator arenas exist before "RSS before" is read: growth
    after that is what a long-running server would keep accumulating.
    """
    images = [data for data, _ in pairs]
    hammer(server, images, clients, max(2, requests // 10))
    rss_before = rss_mb(server.proc.pid)
    started = time.perf_counter()
    latencies, errors, rss_half = hammer(server, images, clients, requests)
    seconds = time.perf_counter() - started
    rss_after = rss_mb(server.proc.pid)
    cuts = statistics.quantiles(latencies, n=100)
    row = {
        "server": server.name, "clients": clients, "requests": len(latencies), "errors": errors,
        "seconds": round(seconds, 2), "req_per_s": round(len(latencies) / seconds, 2),
        "p50_ms": round(cuts[49] * 1000), "p95_ms": round(cuts[94] * 1000), "p99_ms": round(cuts[98] * 1000),
        "rss_before_mb": round(rss_before), "rss_half_mb": round(rss_half), "rss_after_mb": round(rss_after),
        "rss_growth_pct": round(100 * (rss_after - rss_before) / rss_before, 1), "mean_batch": "",
        "mean_iou": round(mean_iou(server, pairs), 4),
    }
    if server.name == "clearbg":
        metrics = httpx.get(server.url + "/metrics").json()
        row["mean_batch"] = round(metrics["images"] / max(1, metrics["batches"]), 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="u2netp")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500, help="per client")
    parser.add_argument("--photos", type=int, default=50)
    parser.add_argument("--servers", default="clearbg,rembg")
    args = parser.parse_args()
    pairs = photos(args.photos)
    rows = []
    with tempfile.TemporaryDirectory(prefix="http-load-") as tmp:
        for name in args.servers.split(","):
            server = Server(name, args.model, Path(tmp))
            try:
                rows.append(load(server, pairs, args.clients, args.requests))
            finally:
                server.stop()
            print(json.dumps(rows[-1]), flush=True)
    cores = os.cpu_count()
    out = RESULTS / f"http-{args.model}-cpu{cores}.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{platform.processor() or platform.machine()}, {cores} cores; {args.clients} clients x "
          f"{args.requests} requests of {args.photos} full-size fashion photos -> PNG cutout")
    print("| server  | req/s | p50 ms | p95 ms | p99 ms | mean IoU | RSS before / half-way / after MB | growth % | mean batch |")
    print("|---------|-------|--------|--------|--------|----------|----------------------------------|----------|------------|")
    for r in rows:
        print(f"| {r['server']:7s} | {r['req_per_s']:5.2f} | {r['p50_ms']:6d} | {r['p95_ms']:6d} | {r['p99_ms']:6d} | {r['mean_iou']:.4f} | "
              f"{r['rss_before_mb']:>10d} / {r['rss_half_mb']:>5d} / {r['rss_after_mb']:>5d}         | {r['rss_growth_pct']:8.1f} | {str(r['mean_batch']):10s} |")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
