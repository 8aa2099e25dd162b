"""The flags every command shares, with their one meaning (``tests/cli/test_vocabulary.py`` pins them).

A flag name means the same thing in every command that has it, and its short form (if any) is
the same everywhere; a command's help for it starts with the phrase below and may add what the
command does with it. Accuracy (mAP, top-k) is given and shown in points, 0–100, everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flag:
    short: str | None
    meaning: str


FLAGS: dict[str, Flag] = {
    "--output": Flag("-o", "What this command creates: a bundle, folder or file"),
    "--data": Flag("-d", "Labelled dataset: a YOLO data.yaml, a COCO json, or a folder holding one"),
    "--images": Flag(None, "Unlabelled images: a folder or image files"),
    "--imgsz": Flag(None, "Input size: 640, or height,width such as 480,640"),
    "--config": Flag("-c", "Configuration file"),
    "--report": Flag(None, "Folder to write the reports into"),
    "--artifact": Flag("-a", "Artifact"),
    "--json": Flag(None, "Print"),
    "--count": Flag(None, "How many"),
    "--runs": Flag(None, "Measured runs"),  # -n is audit tail's row count (issue 13 names it so)
    "--threads": Flag(None, "Intra-op threads"),
    "--device": Flag(None, "cpu, cuda or auto"),
}


def help_for(flag: str, detail: str = "") -> str:
    """The shared meaning of ``flag`` followed by what this command does with it."""
    meaning = FLAGS[flag].meaning
    return f"{meaning}{' — ' + detail if detail else ''}."
