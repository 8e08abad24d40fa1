"""How every benchmark ends: its Markdown table on stdout, and the same figures as JSON with --json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", help="also write the figures to this JSON file")


def publish(markdown: str, figures: dict, json_path: str | None) -> None:
    print()
    print(markdown)
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2))
