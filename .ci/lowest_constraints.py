"""Print pip constraints that pin every runtime dependency of pyproject.toml to its lower bound.

Used by `make lowest`: ``python .ci/lowest_constraints.py > constraints.txt``. A requirement
``name>=X`` becomes ``name==X``. Names given with ``--skip`` (torch, whose registry build is a
multi-GB CUDA wheel) are left out, and so is a requirement without a ``>=`` bound.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOWER_BOUND = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


def lower_bounds(pyproject: Path, skip: set[str]) -> list[str]:
    """``name==lower`` for each runtime dependency with a ``>=`` bound, skipped names left out."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pins = []
    for requirement in dependencies:
        match = LOWER_BOUND.match(requirement)
        if match is None:
            continue
        name, version = match.groups()
        if name.lower() not in skip:
            pins.append(f"{name}=={version}")
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--skip", action="append", default=[], help="a package to leave out")
    args = parser.parse_args(argv)
    pins = lower_bounds(args.pyproject, {name.lower() for name in args.skip})
    sys.stdout.write("".join(f"{pin}\n" for pin in pins))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
