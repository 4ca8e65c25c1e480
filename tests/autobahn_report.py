#!/usr/bin/env python3
"""Turn the Autobahn runner's report.json into the markdown table of docs/conformance.md.

    python3 tests/autobahn_report.py reports/autobahn/report.json

Prints, per section (1.x Framing ... 10.x Misc, 12.x/13.x permessage-deflate), how many
cases were OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED and FAILED, beside the figures
published for the `websockets` library (17.4, in the runner's README), then every case that
was not OK with the runner's words. Exit status: 0 when nothing FAILED, 1 when something did
(or the report is incomplete), 2 when the report cannot be read. Standard library only.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECTIONS = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8",
    "7": "Close",
    "9": "Limits/performance",
    "10": "Misc",
    "12": "Compression",
    "13": "Compression parameters",
}
VERDICTS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
SHORT = {"OK": "OK", "NON-STRICT": "NS", "INFORMATIONAL": "INFO", "UNIMPLEMENTED": "UNIMPL",
         "FAILED": "FAILED"}

# websockets 17.4 (legacy server, fragment limit raised), as published in the README of
# shared/tools/autobahn: these cases are not OK, every other case of 1.x-10.x is, and all
# 216 of 12.x/13.x (its default compression).
WEBSOCKETS_VERSION = "17.4"
WEBSOCKETS_NOT_OK = {
    **dict.fromkeys(["3.2", "3.3", "4.1.3", "4.1.4", "4.2.3", "4.2.4", "5.15", "6.4.3",
                     "6.4.4"], "NON-STRICT"),
    **dict.fromkeys(["7.1.6", "7.13.1", "7.13.2"], "INFORMATIONAL"),
}


def case_key(case_id: str) -> tuple[int, ...]:
    """'6.4.10' sorts after '6.4.9'."""
    return tuple(int(part) for part in case_id.split("."))


def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        report: Any = json.load(f)
    if not isinstance(report, dict) or not isinstance(report.get("cases"), dict):
        raise ValueError("no 'cases' object: not a report.json of the autobahn runner")
    return report


def tally(cases: dict[str, dict[str, Any]],
          verdict_of: Callable[[str], str]) -> dict[str, Counter[str]]:
    table: dict[str, Counter[str]] = {section: Counter() for section in SECTIONS}
    for case_id in cases:
        section = case_id.split(".")[0]
        table.setdefault(section, Counter())[verdict_of(case_id)] += 1
    return table


def cell(counts: Counter[str], verdict: str) -> str:
    value = counts.get(verdict, 0)
    return f"**{value}**" if verdict == "FAILED" and value else str(value)


def render(report: dict[str, Any], source: str) -> str:
    cases: dict[str, dict[str, Any]] = report["cases"]
    ours = tally(cases, lambda case_id: cases[case_id].get("verdict", "FAILED"))
    theirs = tally(cases, lambda case_id: WEBSOCKETS_NOT_OK.get(case_id, "OK"))
    shown = [v for v in VERDICTS if v != "UNIMPLEMENTED" or any(
        counts.get(v) for counts in ours.values())]
    lines = [
        f"Source: `{source}`; {len(cases)} cases, {report.get('seconds', '?')} s, "
        f"strict close: {'yes' if report.get('strict_close') else 'no'}, "
        f"quick: {'yes' if report.get('quick') else 'no'}, url: {report.get('url', '?')}.",
        "",
        "| Section | Cases | " + " | ".join(shown) + f" | websockets {WEBSOCKETS_VERSION} ("
        + " / ".join(SHORT[v] for v in VERDICTS if v != "UNIMPLEMENTED") + ") |",
        "|---|--:|" + "--:|" * len(shown) + ":-:|",
    ]
    total: Counter[str] = Counter()
    total_theirs: Counter[str] = Counter()
    for section in sorted(ours, key=int):
        counts, other = ours[section], theirs[section]
        n = sum(counts.values())
        if not n:
            continue
        total.update(counts)
        total_theirs.update(other)
        name = SECTIONS.get(section, "?")
        lines.append(f"| {section}.x {name} | {n} | "
                     + " | ".join(cell(counts, v) for v in shown) + " | "
                     + " / ".join(str(other.get(v, 0)) for v in VERDICTS
                                  if v != "UNIMPLEMENTED") + " |")
    lines.append(f"| **All** | **{sum(total.values())}** | "
                 + " | ".join(f"**{total.get(v, 0)}**" for v in shown) + " | "
                 + " / ".join(str(total_theirs.get(v, 0)) for v in VERDICTS
                              if v != "UNIMPLEMENTED") + " |")
    not_ok = sorted((cid for cid, case in cases.items() if case.get("verdict") != "OK"),
                    key=case_key)
    lines += ["", "Cases that were not OK:" if not_ok else "Every case was OK.", ""]
    for case_id in not_ok:
        case = cases[case_id]
        lines.append(f"- {case_id} {case.get('verdict')}: {case.get('description', '')}: "
                     f"{case.get('result', '')} (close: {case.get('resultClose', '')}; "
                     f"our close code {case.get('remoteCloseCode')})")
    close_failed = report.get("closeFailed") or []
    if close_failed:
        lines.append("")
        lines.append("Closing handshake not clean (FAILED under --strict-close): "
                     + ", ".join(sorted(close_failed, key=case_key)))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="report.json written by the runner's --out")
    parser.add_argument("--expect", type=int, default=0, metavar="N",
                        help="fail unless the report holds at least N cases (e.g. 301)")
    args = parser.parse_args(argv)
    try:
        report = load(args.report)
    except (OSError, ValueError) as exc:
        print(f"autobahn_report: cannot read {args.report}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render(report, str(args.report)))
    cases = report["cases"]
    failed = sorted((cid for cid, case in cases.items() if case.get("verdict") == "FAILED"),
                    key=case_key)
    if failed:
        print(f"autobahn_report: {len(failed)} FAILED: {' '.join(failed)}", file=sys.stderr)
        return 1
    if len(cases) < args.expect:
        print(f"autobahn_report: only {len(cases)} cases, expected {args.expect}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
