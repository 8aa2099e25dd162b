"""What the hardened HTTP layer costs: uvicorn's h11 protocol with deadlines (what ``cvdeploy serve`` runs)
vs uvicorn's httptools protocol (faster, but with no header size limit), side by side in one process.

    python benchmarks/http_server.py [--bundle zoo:n] [--health 300] [--infer 40]

Both servers serve the same bundle with the same configuration on 127.0.0.1; requests alternate one by
one between them over keep-alive connections: ``GET /v2/health/live`` (the HTTP layer alone) and a v2
binary infer of one 640-px photograph (what a client sees). Ends with one ``RESULT key=value ...`` line.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from serve import photo_640, v2_binary


def start(bundle: str, protocol: str) -> tuple[Any, int]:
    from cvdeploy.serve import server as srv
    from cvdeploy.serve.app import create_app
    from cvdeploy.serve.config import Platform, ServeConfig

    cfg = ServeConfig()
    app = create_app([bundle], cfg, platform=Platform("local", "127.0.0.1", 0))
    sock = srv.bind_socket("127.0.0.1", 0)
    server = srv._uvicorn_server(app, cfg)
    if protocol == "httptools":
        server.config.http = "httptools"
    server.config.install_signal_handlers = False
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, int(sock.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="zoo:n")
    ap.add_argument("--health", type=int, default=300, help="health requests per server")
    ap.add_argument("--infer", type=int, default=40, help="infer requests per server")
    args = ap.parse_args()

    from cvdeploy.bundle import Bundle
    from cvdeploy.images import decode_image
    from cvdeploy.pipeline import Pipeline

    servers = {k: start(args.bundle, k) for k in ("h11", "httptools")}
    b = Bundle.load(args.bundle)
    pipe = Pipeline.from_bundle(b)
    x, _ = pipe.preprocess([decode_image(photo_640())])
    body, headers = v2_binary(x, pipe.runtime.outputs[0].name)
    conns = {k: http.client.HTTPConnection("127.0.0.1", port) for k, (_, port) in servers.items()}

    def timed(
        k: str, method: str, path: str, data: bytes | None = None, hdrs: dict[str, str] | None = None
    ) -> float:
        t = time.perf_counter()
        conns[k].request(method, path, body=data, headers=hdrs or {})
        resp = conns[k].getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{k}: {method} {path} answered {resp.status}")
        return time.perf_counter() - t

    result: dict[str, str] = {}
    cases = (("health", ("GET", "/v2/health/live"), args.health),
             ("infer", ("POST", f"/v2/models/{b.name}/infer", body, headers), args.infer))  # fmt: skip
    for what, req, n in cases:
        times: dict[str, list[float]] = {k: [] for k in conns}
        for _ in range(5):
            for k in conns:
                timed(k, *req)  # type: ignore[arg-type]
        for _ in range(n):
            for k in conns:
                times[k].append(timed(k, *req))  # type: ignore[arg-type]
        p50 = {k: statistics.median(v) * 1000 for k, v in times.items()}
        print(f"{what:7s} p50: h11 (hardened) {p50['h11']:.3f} ms, httptools {p50['httptools']:.3f} ms, "
              f"ratio {p50['h11'] / p50['httptools']:.3f} ({n} requests each, alternating)", flush=True)  # fmt: skip
        result[f"{what}_h11_ms"] = f"{p50['h11']:.3f}"
        result[f"{what}_httptools_ms"] = f"{p50['httptools']:.3f}"
        result[f"{what}_ratio"] = f"{p50['h11'] / p50['httptools']:.3f}"
    for server, _ in servers.values():
        server.should_exit = True
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
