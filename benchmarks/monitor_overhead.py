"""What monitoring costs a request: p50 latency with monitoring at the default sample rate vs off, side by side.

    python benchmarks/monitor_overhead.py [--bundle zoo:n] [--rounds 8] [--block 15] [--concurrency 1 4]

Two servers in this process serve the same bundle on 127.0.0.1: one with a :class:`~cvdeploy.monitor.Monitor`
(``monitor.sample`` 0.05, the default; a temporary SQLite database, as ``cvdeploy serve`` without ``--db``),
one without. Clients post real photographs (six, 480-1000 px) to ``/v1/models/NAME/detect`` over keep-alive
connections, in alternating blocks (A B A B ...): a block of ``--block`` requests per client to one server,
then the other. After each block of the monitored server its capture queue is flushed, untimed, so the
writer's backlog never runs during the other server's block (its work inside the block is counted). The
figure is the p50 of all requests of each server; the ratio is monitored / off (target ≤ 1.05).

Ends with ``RESULT ratio_c1=… p50_on_c1_ms=… p50_off_c1_ms=… [ratio_c4=… ...] captured=… dropped=…``.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time
from typing import Any


def start(bundle: str, monitored: bool) -> tuple[Any, int, Any]:
    from cvdeploy.monitor.monitor import Monitor
    from cvdeploy.monitor.settings import MonitorConfig
    from cvdeploy.serve import server as srv
    from cvdeploy.serve.app import create_app
    from cvdeploy.serve.config import Platform, ServeConfig

    cfg = ServeConfig()
    monitor = Monitor.open(None, MonitorConfig()) if monitored else None
    app = create_app([bundle], cfg, platform=Platform("local", "127.0.0.1", 0), monitor=monitor)
    sock = srv.bind_socket("127.0.0.1", 0)
    server = srv._uvicorn_server(app, cfg)
    server.config.install_signal_handlers = False
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, int(sock.getsockname()[1]), monitor


def photographs() -> list[bytes]:
    import cv2

    from cvdeploy.images import sample_images

    out = []
    for img in sample_images(6):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(buf.tobytes())
    return out


def block(port: int, path: str, images: list[bytes], clients: int, n: int) -> list[float]:
    """``clients`` threads, each posting ``n`` images over its own keep-alive connection; → seconds each."""
    times: list[float] = []
    lock = threading.Lock()

    def client(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []
        for i in range(n):
            data = images[(offset + i) % len(images)]
            t = time.perf_counter()
            conn.request("POST", path, body=data, headers={"Content-Type": "image/jpeg"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{path} answered {resp.status}")
            mine.append(time.perf_counter() - t)
        conn.close()
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="zoo:n")
    ap.add_argument("--rounds", type=int, default=8, help="A/B block pairs per concurrency")
    ap.add_argument("--block", type=int, default=15, help="requests per client per block")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()

    from cvdeploy.bundle import Bundle

    name = Bundle.load(args.bundle).name
    path = f"/v1/models/{name}/detect"
    images = photographs()
    on_server, on_port, monitor = start(args.bundle, True)
    off_server, off_port, _ = start(args.bundle, False)
    result: dict[str, str] = {}
    total = 0
    try:
        for clients in args.concurrency:
            block(on_port, path, images, clients, 3)  # warm-up: sessions, allocators, the database file
            block(off_port, path, images, clients, 3)
            monitor.flush(60)
            on: list[float] = []
            off: list[float] = []
            ratios = []
            for r in range(args.rounds):
                order = ((on_port, on), (off_port, off)) if r % 2 == 0 else ((off_port, off), (on_port, on))
                got = {}
                for port, sink in order:
                    times = block(port, path, images, clients, args.block)
                    sink.extend(times)
                    got[port] = statistics.median(times)
                    if port == on_port:
                        monitor.flush(60)  # untimed: the backlog does not run in the other server's block
                ratios.append(got[on_port] / got[off_port])
            total += len(on) + 3 * clients
            p_on, p_off = statistics.median(on) * 1000, statistics.median(off) * 1000
            ratio = p_on / p_off
            spread = f"{min(ratios):.3f}-{max(ratios):.3f}"
            print(f"concurrency {clients}: p50 monitored {p_on:.2f} ms, off {p_off:.2f} ms, ratio {ratio:.3f} "
                  f"(per-round ratios {spread}; {len(on)} requests each)", flush=True)  # fmt: skip
            result.update({f"ratio_c{clients}": f"{ratio:.3f}", f"p50_on_c{clients}_ms": f"{p_on:.2f}",
                           f"p50_off_c{clients}_ms": f"{p_off:.2f}"})  # fmt: skip
        monitor.flush(60)
        requests, samples = monitor.store.counts()
        print(f"monitored server: {requests} requests captured ({samples} with stage I/O), "
              f"{monitor.writer.dropped} dropped; {total} sent", flush=True)  # fmt: skip
        result.update({"captured": str(requests), "sent": str(total), "sampled": str(samples),
                       "dropped": str(monitor.writer.dropped)})  # fmt: skip
    finally:
        on_server.should_exit = off_server.should_exit = True
        time.sleep(0.5)
        monitor.stop()
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
