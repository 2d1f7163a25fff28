"""The run's outputs: the table on stdout, the JSON under bench/results/, and README.md's
benchmark table between its markers, with the date and the machine."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.runner import Row

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def machine() -> dict[str, Any]:
    """What the figures were measured on, from /proc."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kb = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.MULTILINE)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model.group(1).strip() if model else platform.processor() or "unknown",
        "memory_gib": round(int(mem_kb.group(1)) / 1024 / 1024, 1) if mem_kb else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.2f}"


def _target(row: Row) -> str:
    if row.met is None:
        return row.target
    return f"{row.target} {'(met)' if row.met else '(not met)'}"


def table(rows: list[Row]) -> str:
    lines = ["| what | measured | floor in the same run | ratio | target |", "|---|---|---|---|---|"]
    lines += [f"| {r.what} | {r.measured} | {r.floor} | {fmt_ratio(r.ratio)} | {_target(r)} |" for r in rows]
    return "\n".join(lines)


def header(info: dict[str, Any], profile: str, when: datetime, sha: str) -> str:
    return (f"Measured {when:%Y-%m-%d %H:%M} UTC by `make bench` ({profile}, commit {sha}) on "
            f"{info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB memory, Linux {info['kernel']}, "
            f"Python {info['python']}; load average at start {info['load_at_start'][0]}.")


def _finite(value: Any) -> Any:
    """JSON has no infinity or NaN: those become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, rows: list[Row], info: dict[str, Any], profile: str, when: datetime, sha: str,
               args: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"date": when.isoformat(timespec="seconds"), "profile": profile, "commit": sha, "machine": info,
                "args": args, "rows": [r.as_dict() for r in rows]}
    path.write_text(json.dumps(_finite(document), indent=2, ensure_ascii=False) + "\n")


def update_readme(text: str, readme: Path = README) -> bool:
    """Replaces what is between the markers; False when README has no markers."""
    content = readme.read_text()
    start, end = content.find(START), content.find(END)
    if start < 0 or end < start:
        return False
    readme.write_text(content[:start + len(START)] + "\n" + text + "\n" + content[end:])
    return True
