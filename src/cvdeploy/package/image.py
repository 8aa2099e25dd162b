"""The container image every server target builds on: Dockerfile, .dockerignore, pinned requirements.

Slim official Python base of the version packaged with, only the extras the artifact needs (pinned to
the versions installed here), a non-root user, nothing written outside ``/tmp`` (read-only root
filesystems work), a ``HEALTHCHECK`` on the readiness route, the bundle baked in or mounted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cvdeploy import __version__
from cvdeploy.package.base import PORT, READY, UID, Context

#: The base image: the official slim Python image of the interpreter packaged with.
BASE_IMAGE = (
    f"python:{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}-slim-bookworm"
)


def healthcheck(
    route: str = READY,
    port: int = PORT,
    route_env: str | None = None,
    port_env: str | None = None,
    scheme: str = "http",
) -> list[str]:
    """An exec-form HEALTHCHECK command: Python's urllib (slim images have no curl); non-2xx fails.

    Over ``https`` the certificate is not verified: the probe talks to its own container on 127.0.0.1,
    whose certificate names the service, not the loopback."""
    r = f"os.environ.get({route_env!r}, {route!r})" if route_env else repr(route)
    p = f"os.environ.get({port_env!r}, '{port}')" if port_env else repr(str(port))
    ctx = ", context=ssl._create_unverified_context()" if scheme == "https" else ""
    code = (f"import os, ssl, urllib.request; urllib.request.urlopen('{scheme}://127.0.0.1:' + {p} + {r}, "
            f"timeout=4{ctx})")  # fmt: skip
    return ["python", "-c", code]


def write_image(
    ctx: Context,
    cmd: Sequence[str],
    entrypoint: Sequence[str] | None = None,
    extra_files: Sequence[tuple[str, str, str | None]] = (),
    health: Sequence[str] | None = None,
    bundle: bool = True,
) -> None:
    """Write ``Dockerfile``, ``.dockerignore``, ``requirements.txt`` and (baked) ``model/`` into ``ctx.out``.

    ``extra_files``: ``(file in the context, path in the image, chmod mode or None)``; ``bundle=False``
    when the platform delivers the model itself (SageMaker's model.tar.gz).
    """
    ctx.requirements()
    wheel = ctx.wheel()
    if bundle:
        ctx.copy_bundle("model")  # baked: copied into the image; mounted: mounted from this folder
    if bundle and ctx.options.model == "mount":
        ctx.note(f"the bundle is not in the image: mount {ctx.out / 'model'} at {ctx.model_dir} (read-only)")
    ctx.render(
        "Dockerfile.j2",
        "Dockerfile",
        version=__version__,
        target=ctx.result.target,
        base_image=BASE_IMAGE,
        wheel=wheel,
        extra_files=list(extra_files),
        model_path=ctx.model_dir,
        bake=bundle and ctx.options.model == "bake",
        mount=bundle and ctx.options.model == "mount",
        uid=UID,
        port=PORT,
        healthcheck=list(health or healthcheck(scheme=ctx.scheme)),
        entrypoint=list(entrypoint) if entrypoint else None,
        cmd=list(cmd),
    )
    allowed = [f for f, _, _ in extra_files] + (["wheels/"] if wheel else [])
    ctx.render("dockerignore.j2", ".dockerignore", allowed=allowed)
