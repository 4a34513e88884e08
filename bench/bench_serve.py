"""Load on `headstart serve`: requests/s, p50/p99 latency, errors and server memory at
1, 8 and 32 concurrent clients, with micro-batching and one image at a time.

The server is the real command in its own process (`headstart serve MODEL --port P`),
started once per mode: micro-batched (`--max-batch-size 32 --max-wait-ms 5`) and one
image per forward pass (`--max-batch-size 1 --max-wait-ms 0`). Each client is an
asyncio task on one httpx.AsyncClient posting one 256x256 JPEG per request (the raw
body) in a loop, for --duration seconds per concurrency level. Memory is the server's
resident set size (VmRSS, /proc), sampled every 0.5 s. The CPU the server, the client
and everything else used during each level is recorded too (in cores, from /proc), so
a run that shared the machine with other work says so. The model is feature extraction
on the bundled EfficientNet-Lite0 at its own 224 px, fitted on 10 images per class of
the bundled sample (unless --model is given).

Run: PYTHONPATH=src .venv/bin/python bench/bench_serve.py [--duration 60]
     [--clients 1,8,32] [--model DIR] [--out docs/benchmarks/serve.json]
The client shares the machine's cores with the server, as a local load test does.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

MODES = {
    "micro-batched": ["--max-batch-size", "32", "--max-wait-ms", "5"],
    "one image at a time": ["--max-batch-size", "1", "--max-wait-ms", "0"],
}


def fit_model(folder: Path) -> Path:
    from headstart import ImageClassifier
    from headstart.data.idx import load_sample
    from headstart.data.split import sample_per_class

    train, _ = load_sample()
    clf = ImageClassifier(strategy="feature-extraction").fit(sample_per_class(train, 10, seed=0))
    return clf.save(folder / "model")


def request_image() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def busy_seconds() -> float:
    """CPU seconds spent by everything on this machine (all cores) since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float:
    """CPU seconds of one process (user + system, its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class MemorySampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(rss_mb(self.pid))
            self.stop.wait(0.5)


async def load(base: str, clients: int, duration: float, body: bytes) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        end = time.perf_counter() + duration

        async def one_client() -> None:
            while time.perf_counter() < end:
                started = time.perf_counter()
                try:
                    answer = await client.post(
                        "/v1/predict", content=body, headers={"content-type": "image/jpeg"}
                    )
                    ok = answer.status_code == 200 and "class" in answer.json()["predictions"][0]
                    key = None if ok else str(answer.status_code)
                except httpx.HTTPError as error:
                    key = type(error).__name__
                if key is None:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[key] = errors.get(key, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "errors": errors,
    }


def serve(model: Path, flags: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "headstart", "serve", str(model), "--port", str(port)]
    process = subprocess.Popen(
        [*command, *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/serve.json"))
    args = parser.parse_args()
    body = request_image()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or fit_model(Path(tmp))
        results = []
        for mode, flags in MODES.items():
            process, base = serve(model, flags)
            try:
                asyncio.run(load(base, 4, 3.0, body))  # warm-up: oneDNN, the folded model
                for clients in (int(c) for c in args.clients.split(",")):
                    sampler = MemorySampler(process.pid)
                    sampler.start()
                    before = busy_seconds(), process_seconds(process.pid), time.process_time()
                    row = asyncio.run(load(base, clients, args.duration, body))
                    machine, server, client = (
                        busy_seconds() - before[0],
                        process_seconds(process.pid) - before[1],
                        time.process_time() - before[2],
                    )
                    sampler.stop.set()
                    sampler.join()
                    row.update(
                        # CPU used in this level, in cores: by the server, by this client,
                        # and by anything else on the machine (other work skews the rest)
                        server_cores=round(server / row["seconds"], 2),
                        client_cores=round(client / row["seconds"], 2),
                        other_cores=round(max(machine - server - client, 0) / row["seconds"], 2),
                        mode=mode,
                        rss_mb_start=round(sampler.samples[0]),
                        rss_mb_max=round(max(sampler.samples)),
                        rss_mb_end=round(sampler.samples[-1]),
                    )
                    results.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                process.send_signal(signal.SIGINT)
                process.wait(30)
    by = {(r["mode"], r["clients"]): r["requests_per_s"] for r in results}
    top = max(int(c) for c in args.clients.split(","))
    speedup = by[("micro-batched", top)] / max(by[("one image at a time", top)], 1e-9)
    summary = {
        "duration_s": args.duration,
        "cpu_count": os.cpu_count(),
        "image": "256x256 JPEG, raw body, one per request",
        "speedup_at_max_clients": round(speedup, 2),
        "rows": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    head = "| mode | clients | requests/s | p50 ms | p99 ms | errors | server RSS MB"
    print(f"\n{head} (start / max / end) | cores: server / client / other |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in results:
        errors = sum(r["errors"].values())
        print(
            f"| {r['mode']} | {r['clients']} | {r['requests_per_s']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {errors} | {r['rss_mb_start']} / {r['rss_mb_max']} / "
            f"{r['rss_mb_end']} | {r['server_cores']} / {r['client_cores']} / "
            f"{r['other_cores']} |"
        )
    print(f"\nmicro-batched / one at a time at {top} clients: {speedup:.2f}x")


if __name__ == "__main__":
    main()
