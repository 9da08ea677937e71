"""Load benchmark for `POST /predict` and `POST /explain`: a real uvicorn server on loopback.

Starts `digitlab serve` (uvicorn, 127.0.0.1, a free port) on a run in its own process, then
sends a 280×280 PNG drawing (what the drawing page sends) in two phases:

1. latency: one request at a time, so p50/p99 are the service time plus the loopback trip;
2. throughput: `--concurrency` requests in flight, for requests per second;
3. `/predict` and `/explain` side by side, one at a time: the page's "inside the network"
   panel costs `/explain`'s p50 (target ≤ 20 ms), and `/predict` must not get slower.

Each phase stops after `--requests` requests or `--duration` seconds, whichever comes first.
The client runs on the same machine, so on 2 cores its own CPU time competes with the
server's; the server's CPU time per request is reported too, from /proc.

    python benchmarks/bench_serve.py --run latest --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

TARGET_P50_MS = 5.0
TARGET_RPS = 300.0
TARGET_EXPLAIN_P50_MS = 20.0


def drawing_png() -> bytes:
    """A 7 drawn as the page draws it: black 18-px strokes on an opaque white RGBA canvas."""
    image = Image.new("RGBA", (280, 280), (255, 255, 255, 255))
    ImageDraw.Draw(image).line(
        [(80, 50), (200, 50), (150, 140), (115, 240)], fill=(0, 0, 0, 255), width=18, joint="curve"
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(run: str, port: int) -> subprocess.Popen:
    code = (
        "from digitlab.api import run_server; "
        f"run_server({run!r}, host='127.0.0.1', port={port}, log_level='warning')"
    )
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "jax")}
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def wait_until_healthy(server: subprocess.Popen, base: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer /health within {timeout:.0f} s")


def raw_request(host: str, port: int, png: bytes, path: str = "/predict") -> bytes:
    """The bytes of one multipart `POST path`, prepared once and sent as they are."""
    boundary = "digitlab-bench"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="drawing.png"'
            "\r\nContent-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def raw_sender(host: str, port: int, png: bytes, path: str = "/predict"):
    """A keep-alive HTTP/1.1 connection sending a prepared request and reading the status.

    Far lighter than httpx (~0.1 ms of CPU a request instead of ~2 on these cores), so on a
    2-core machine the load generator leaves the server most of the CPU.
    """
    reader, writer = await asyncio.open_connection(host, port)
    request = raw_request(host, port, png, path)

    async def send() -> int:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        return int(head[9:12])

    return send, writer


async def load(
    base: str,
    png: bytes,
    requests: int,
    concurrency: int,
    duration: float,
    client: str,
    path: str = "/predict",
):
    """Send up to `requests` POST `path`, `concurrency` at a time, for at most `duration` s.

    Returns the latencies (seconds) of the successful requests, the wall time and the errors.
    """
    latencies: list[float] = []
    errors = 0
    remaining = requests
    host, port = base.removeprefix("http://").split(":")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as http:

        async def httpx_send() -> int:
            files = {"file": ("drawing.png", png, "image/png")}
            return (await http.post(path, files=files)).status_code

        async def worker() -> None:
            nonlocal remaining, errors
            writer = None
            send = httpx_send
            if client == "raw":
                send, writer = await raw_sender(host, int(port), png, path)
            while remaining > 0 and time.perf_counter() < stop_at:
                remaining -= 1
                sent = time.perf_counter()
                try:
                    ok = await asyncio.wait_for(send(), timeout=10) == 200
                except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, TimeoutError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors += 1
            if writer is not None:
                writer.close()

        start = time.perf_counter()
        stop_at = start + duration
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, wall, errors


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def report(name: str, latencies: list[float], wall: float, errors: int, server_cpu: float | None):
    if not latencies:
        print(f"{name:<22} no successful requests ({errors} errors)")
        return
    ms = [x * 1000 for x in latencies]
    cpu = f"  server CPU {server_cpu * 1000 / len(ms):.2f} ms/req" if server_cpu is not None else ""
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    print(
        f"{name:<26} n={len(ms):<5} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
        f"  {len(ms) / wall:7.1f} req/s  errors {errors}{cpu}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="latest", help="run path, name or 'latest'")
    parser.add_argument("--requests", type=int, default=2000, help="requests per phase")
    parser.add_argument("--concurrency", type=int, default=4, help="in flight, throughput phase")
    parser.add_argument("--duration", type=float, default=60, help="seconds per phase, at most")
    parser.add_argument("--warmup", type=int, default=50, help="requests before measuring")
    parser.add_argument(
        "--client",
        choices=["httpx", "raw"],
        default="httpx",
        help="httpx.AsyncClient, or a minimal keep-alive HTTP/1.1 client that costs the "
        "server's 2 cores far less CPU",
    )
    args = parser.parse_args()

    from digitlab.runs import load_run  # fail fast, with digitlab's message, on a bad --run

    run = load_run(args.run)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(str(run.path), port)
    try:
        wait_until_healthy(server, base)
        png = drawing_png()
        print(f"run {run.name}; {len(png)} B 280×280 PNG; {os.cpu_count()} CPUs; {base}")
        print(f"client: {args.client}")
        asyncio.run(load(base, png, args.warmup, 1, args.duration, args.client))
        results = {}
        for name, concurrency in [
            ("latency (1 in flight)", 1),
            (f"throughput ({args.concurrency} in flight)", args.concurrency),
        ]:
            before = cpu_seconds(server.pid)
            latencies, wall, errors = asyncio.run(
                load(base, png, args.requests, concurrency, args.duration, args.client)
            )
            after = cpu_seconds(server.pid)
            server_cpu = after - before if before is not None and after is not None else None
            report(name, latencies, wall, errors, server_cpu)
            results[concurrency] = (latencies, wall)
        sequential, _ = results[1]
        p50 = percentile([x * 1000 for x in sequential], 50) if sequential else float("inf")
        loaded, wall = results[args.concurrency]
        rps = len(loaded) / wall if wall else 0.0
        verdict = "met" if p50 <= TARGET_P50_MS and rps >= TARGET_RPS else "NOT met"
        print(f"targets (p50 <= {TARGET_P50_MS:g} ms, >= {TARGET_RPS:g} req/s): {verdict}")
        side_by_side = {}
        for path in ("/explain", "/predict"):
            asyncio.run(load(base, png, args.warmup, 1, args.duration, args.client, path))
            latencies, wall, errors = asyncio.run(
                load(base, png, args.requests, 1, args.duration, args.client, path)
            )
            report(f"{path} (1 in flight)", latencies, wall, errors, None)
            side_by_side[path] = percentile([x * 1000 for x in latencies], 50)
        verdict = "met" if side_by_side["/explain"] <= TARGET_EXPLAIN_P50_MS else "NOT met"
        print(
            f"/explain p50 {side_by_side['/explain']:.2f} ms next to /predict p50 "
            f"{side_by_side['/predict']:.2f} ms; target /explain <= "
            f"{TARGET_EXPLAIN_P50_MS:g} ms: {verdict}"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
