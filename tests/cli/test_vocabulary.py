"""One vocabulary: a shared flag means the same thing in every command, with the same short form.

Walks every command (subcommands included) and pins the flags of ``cvdeploy.cli.vocabulary``:
``-o/--output`` is always the bundle or folder a command creates, ``--data`` a labelled dataset,
``--images`` unlabelled images (never a count), ``--imgsz`` one size, ``-c`` only ``--config``,
``--report`` a folder; accuracy flags are in points.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
import typer

from cvdeploy.cli.main import app
from cvdeploy.cli.vocabulary import FLAGS

#: Commands whose help texts another module owns; their short forms are still pinned.
HELP_NOT_PINNED = {"serve"}


def _commands() -> dict[str, Any]:
    """``{"export": click.Command, "zoo dataset": ..., "bench compare": ...}``."""
    from cvdeploy.cli import bench_cmd

    out: dict[str, Any] = {}

    def walk(cmd: Any, path: str) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, f"{path} {name}".strip())
        else:
            out[path] = cmd

    walk(typer.main.get_command(app), "")
    out["bench compare"] = bench_cmd.compare_command()
    return out


def _options(cmd: Any) -> list[Any]:
    return [p for p in cmd.params if getattr(p, "param_type_name", "") == "option" and not p.hidden]


COMMANDS = _commands()


def test_every_command_is_walked() -> None:
    assert {
        "export",
        "predict",
        "val",
        "bench",
        "bench compare",
        "optimize",
        "inspect",
        "zoo dataset",
        "demo",
    } <= set(COMMANDS)


def test_a_short_flag_names_one_long_flag_everywhere() -> None:
    longs_of: dict[str, set[str]] = defaultdict(set)
    for cmd in COMMANDS.values():
        for p in _options(cmd):
            shorts = [o for o in p.opts + p.secondary_opts if not o.startswith("--")]
            longs = [o for o in p.opts if o.startswith("--")]
            for s in shorts:
                longs_of[s].update(longs[:1])
    clashes = {s: sorted(ls) for s, ls in longs_of.items() if len(ls) > 1}
    assert not clashes, f"one short flag, several meanings: {clashes}"


@pytest.mark.parametrize("flag", sorted(FLAGS))
def test_shared_flags_keep_their_short_form_and_meaning(flag: str) -> None:
    spec = FLAGS[flag]
    seen = 0
    for name, cmd in COMMANDS.items():
        for p in _options(cmd):
            if flag not in p.opts:
                continue
            seen += 1
            shorts = {o for o in p.opts + p.secondary_opts if not o.startswith("--")}
            assert shorts <= ({spec.short} if spec.short else set()), f"{name} {flag}: short form {shorts}"
            if name.split()[0] not in HELP_NOT_PINNED:
                assert (p.help or "").startswith(spec.meaning), f"{name} {flag}: {p.help!r}"
    assert seen, f"{flag} is in the vocabulary but no command has it"


def test_images_is_never_a_count_and_imgsz_is_one_size() -> None:
    for name, cmd in COMMANDS.items():
        for p in _options(cmd):
            if "--images" in p.opts:
                assert p.type_descriptor.annotation is not int, f"{name} --images is a count"
            if "--imgsz" in p.opts and name == "bench":
                assert p.multiple, "bench --imgsz sweeps by repeating the flag, each one size"


def test_accuracy_flags_say_points() -> None:
    for flag in ("--min-map", "--max-drop"):
        helps = [p.help for cmd in COMMANDS.values() for p in _options(cmd) if flag in p.opts]
        assert helps and all("points" in (h or "") for h in helps), (flag, helps)


def test_predict_and_serve_read_the_same_image_formats() -> None:
    from cvdeploy.images import IMAGE_MEDIA_TYPES, IMAGE_SUFFIXES, sniff_media_type

    assert {".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff"} <= set(IMAGE_SUFFIXES)
    assert set(IMAGE_MEDIA_TYPES) == {"image/jpeg", "image/png", "image/bmp", "image/webp", "image/tiff"}
    import cv2
    import numpy as np

    img = np.zeros((4, 4, 3), np.uint8)
    for ext, mime in ((".jpg", "image/jpeg"), (".png", "image/png"), (".bmp", "image/bmp"),
                      (".webp", "image/webp"), (".tiff", "image/tiff")):  # fmt: skip
        ok, buf = cv2.imencode(ext, img)
        assert ok and sniff_media_type(buf.tobytes()) == mime
