"""What monitoring costs a request: p50 latency with monitoring at the default sample rate vs off, side by side.

    python benchmarks/monitor_overhead.py [--bundle zoo:n] [--rounds 80] [--block 4] [--concurrency 1 4] [--aa]

Two servers in this process serve the same bundle on 127.0.0.1, each with a :class:`~cvdeploy.monitor.Monitor`
(``monitor.sample`` 0.05, the default; a temporary SQLite database, as ``cvdeploy serve`` without ``--db``)
that is switched on for one of them per round (the service's observer) — which one, and which goes first,
alternate, so neither the server nor the order can favour a side. Clients post real photographs (six,
300-1000 px) to ``/v1/models/NAME/detect`` over keep-alive connections: per round a block of ``--block``
requests per client to each side. After each block the side's capture queue is flushed, untimed, so a
backlog never runs during the other side's block (the writer's work inside its own block is counted). The
figure is the p50 of all requests of each side; the ratio is monitored / off (target ≤ 1.05), with a 95 %
bootstrap interval over the rounds (resampled whole). ``--aa`` switches monitoring off on both sides: the
ratio then shows the noise floor of the machine. Short blocks, many rounds: on a machine others load
too, both sides then see the same weather.

Before that, the two costs behind the figure, measured directly: the capture hook on the request path
(``Monitor.image``: sample or not, queue a reference; microseconds on the event loop) and the writer
thread's work per request (features, output statistics; a thumbnail and summaries when sampled), which
runs off the request path at a lower CPU priority.

Ends with ``RESULT ratio_c1=… ci_c1=… p50_on_c1_ms=… p50_off_c1_ms=… [… _c4 …] hook_us=… writer_ms=…
writer_sampled_ms=… captured=… dropped=…``.
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


def direct_costs(app: Any, images: list[bytes]) -> dict[str, float]:
    """The hook's cost on the event loop and the writer's work per request, each a median."""
    import numpy as np

    from cvdeploy.images import decode_image
    from cvdeploy.monitor.capture import Observation, to_rows
    from cvdeploy.monitor.monitor import Monitor
    from cvdeploy.monitor.settings import MonitorConfig

    service = app.state.service
    entry = next(iter(service.repository.models.values()))
    mv = entry.versions[entry.serving]
    decoded = [decode_image(b) for b in images]
    prepared = []
    for img in decoded:
        x, geoms = mv.pipeline.preprocess([img])
        outs = mv.pipeline.infer(x)
        prepared.append((img, x, outs, mv.pipeline.decode(outs, geoms)[0]))
    timings = {"preprocess": 0.01, "queue": 0.0, "inference": 0.05, "postprocess": 0.001}
    mon = Monitor.open(None, MonitorConfig())
    try:
        hook = []
        for _ in range(5):
            for img, x, outs, res in prepared * 20:
                t = time.perf_counter()
                mon.image(mv, img, x, outs, res, timings, False, None)
                hook.append(time.perf_counter() - t)
            mon.writer.start()
            mon.flush(120)
        work: dict[bool, list[float]] = {False: [], True: []}
        for sampled in (False, True):
            for _ in range(5):
                for img, x, outs, res in prepared:
                    obs = Observation(0.0, mv.name, mv.version, "image", 200, None, timings, img, x, outs,
                                      [t.name for t in mv.outputs], res, True, sampled)  # fmt: skip
                    t = time.perf_counter()
                    to_rows(obs, False, 256)
                    work[sampled].append(time.perf_counter() - t)
    finally:
        mon.stop()
    return {"hook_us": float(np.median(hook)) * 1e6, "writer_ms": float(np.median(work[False])) * 1e3,
            "writer_sampled_ms": float(np.median(work[True])) * 1e3}  # fmt: skip


def bootstrap(rounds: list[tuple[list[float], list[float]]], n: int = 2000) -> tuple[float, float]:
    """95 % interval of median(on) / median(off), resampling whole rounds."""
    import numpy as np

    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(n):
        pick = rng.integers(0, len(rounds), len(rounds))
        on = [t for i in pick for t in rounds[i][0]]
        off = [t for i in pick for t in rounds[i][1]]
        ratios.append(float(np.median(on) / np.median(off)))
    lo, hi = np.percentile(ratios, (2.5, 97.5))
    return float(lo), float(hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="zoo:n")
    ap.add_argument(
        "--rounds", type=int, default=80, help="A/B block pairs per concurrency (a multiple of 4)"
    )
    ap.add_argument("--block", type=int, default=4, help="requests per client per block")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    ap.add_argument(
        "--aa", action="store_true", help="calibration: monitoring off on both sides (the noise floor)"
    )
    args = ap.parse_args()

    from cvdeploy.bundle import Bundle

    name = Bundle.load(args.bundle).name
    path = f"/v1/models/{name}/detect"
    images = photographs()
    servers = [start(args.bundle, True), start(args.bundle, True)]
    result: dict[str, str] = {}
    sent = 0
    try:
        costs = direct_costs(servers[0][0].config.app, images)
        print(f"capture hook on the request path: {costs['hook_us']:.1f} µs per request (median); writer thread, "
              f"off the request path: {costs['writer_ms']:.2f} ms per request, {costs['writer_sampled_ms']:.2f} ms "
              f"per sampled one", flush=True)  # fmt: skip
        result.update({k: f"{v:.2f}" for k, v in costs.items()})
        for clients in args.concurrency:
            for _, port, _ in servers:
                block(port, path, images, clients, 3)  # warm-up: sessions, allocators, the database file
                sent += 3 * clients
            rounds: list[tuple[list[float], list[float]]] = []
            for r in range(args.rounds):
                # which server monitors and which goes first both alternate, so neither server's identity
                # nor the order within a round can favour a side
                on, off = (servers[0], servers[1]) if (r // 2) % 2 == 0 else (servers[1], servers[0])
                on[0].config.app.state.service.observer = None if args.aa else on[2]
                off[0].config.app.state.service.observer = None
                got: dict[int, list[float]] = {}
                for srv in (on, off) if r % 2 == 0 else (off, on):
                    got[srv[1]] = block(srv[1], path, images, clients, args.block)
                    sent += clients * args.block
                    srv[2].flush(60)  # untimed: a backlog never runs in the other side's block
                rounds.append((got[on[1]], got[off[1]]))
            on_t = [t for a, _ in rounds for t in a]
            off_t = [t for _, b in rounds for t in b]
            p_on, p_off = statistics.median(on_t) * 1000, statistics.median(off_t) * 1000
            ratio = p_on / p_off
            lo, hi = bootstrap(rounds)
            label = "A/A (both off)" if args.aa else "monitored"
            print(f"concurrency {clients}: p50 {label} {p_on:.2f} ms, off {p_off:.2f} ms, ratio {ratio:.3f} "
                  f"(95 % CI {lo:.3f}-{hi:.3f}; {len(on_t)} requests each, {args.rounds} rounds)", flush=True)  # fmt: skip
            result.update({f"ratio_c{clients}": f"{ratio:.3f}", f"ci_c{clients}": f"{lo:.3f}-{hi:.3f}",
                           f"p50_on_c{clients}_ms": f"{p_on:.2f}", f"p50_off_c{clients}_ms": f"{p_off:.2f}"})  # fmt: skip
        captured = sum(srv[2].store.counts()[0] for srv in servers)
        sampled = sum(srv[2].store.counts()[1] for srv in servers)
        dropped = sum(srv[2].writer.dropped for srv in servers)
        print(f"monitored sides: {captured} requests captured ({sampled} with stage I/O), {dropped} dropped; "
              f"{sent} sent in all", flush=True)  # fmt: skip
        result.update(
            {"captured": str(captured), "sampled": str(sampled), "dropped": str(dropped), "aa": str(args.aa)}
        )
    finally:
        for server, _, _ in servers:
            server.should_exit = True
        time.sleep(0.5)
        for _, _, monitor in servers:
            monitor.stop()
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
