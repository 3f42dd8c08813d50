"""Print per-module mutation scores from mutmut's results in ``mutants/``.

mutmut 3 keeps one ``mutants/<path>.meta`` JSON file per mutated module, mapping each mutant
to the exit code of its test run.  This script reads those files (it does not import mutmut's
configuration, so it runs from anywhere) and prints one row per module: killed / total and the
score, with the other outcomes (survived, no tests, timeout, ...) in their own columns.

Usage: ``python tools/mutation_report.py [--mutants DIR] [--survivors] [--fail-under PCT]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

# mutmut.stats.status_by_exit_code (mutmut 3.8), repeated so the report needs no mutmut import
STATUS_BY_EXIT_CODE: dict[int | None, str] = {
    1: "killed",
    3: "killed",  # an internal pytest error counts as a kill
    37: "killed",  # caught by the type checker
    0: "survived",
    5: "no tests",
    33: "no tests",
    2: "interrupted",
    None: "not checked",
    34: "skipped",
    35: "suspicious",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    -11: "segfault",
    -9: "segfault",
}
COLUMNS = ["killed", "survived", "no tests", "timeout", "suspicious", "not checked"]


def status(exit_code: int | None) -> str:
    """The status mutmut names for a mutant's exit code (unknown codes are suspicious, as in mutmut)."""
    return STATUS_BY_EXIT_CODE.get(exit_code, "suspicious")


def load(mutants: Path) -> dict[str, dict[str, str]]:
    """``{module path: {mutant name: status}}`` for every ``.meta`` file under ``mutants``."""
    results: dict[str, dict[str, str]] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        module = meta.relative_to(mutants).as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        results[module] = {name: status(code) for name, code in codes.items()}
    return results


def table(results: dict[str, dict[str, str]]) -> tuple[str, float | None]:
    """The report as text, and the overall score (killed / checked, in %), None when nothing ran."""
    header = f"{'module':<28}{'killed/checked':>14}{'score':>9}" + "".join(f"{c:>13}" for c in COLUMNS[1:])
    lines = [header, "-" * len(header)]
    grand: Counter[str] = Counter()
    for module, by_mutant in results.items():
        counts = Counter(by_mutant.values())
        grand.update(counts)
        lines.append(_row(module, counts))
    lines.append("-" * len(header))
    lines.append(_row("total", grand))
    checked = sum(grand.values()) - grand["not checked"]
    overall = 100.0 * grand["killed"] / checked if checked else None
    if grand["not checked"]:
        lines.append(
            f"{grand['not checked']} mutants not checked (a partial run): the score counts checked ones only"
        )
    return "\n".join(lines), overall


def _row(name: str, counts: Counter[str]) -> str:
    total = sum(counts.values())
    checked = total - counts["not checked"]
    score = f"{100.0 * counts['killed'] / checked:.1f}%" if checked else "-"
    others = "".join(f"{counts[c]:>13}" for c in COLUMNS[1:])
    extra = sum(n for s, n in counts.items() if s not in COLUMNS)
    return f"{name:<28}{counts['killed']:>7}/{checked:<6}{score:>9}{others}" + (
        f"  +{extra} other" if extra else ""
    )


def main(argv: list[str] | None = None) -> int:
    """Print the table; the exit code is 1 without results or below ``--fail-under``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"), help="mutmut's work directory")
    parser.add_argument("--survivors", action="store_true", help="also list surviving mutants")
    parser.add_argument("--fail-under", type=float, default=None, help="exit 1 below this overall score")
    args = parser.parse_args(argv)
    results = load(args.mutants)
    if not results:
        print(f"no mutmut results under {args.mutants}/ (run `make mutation` first)", file=sys.stderr)
        return 1
    text, overall = table(results)
    print(text)
    if args.survivors:
        for by_mutant in results.values():
            for name, st in sorted(by_mutant.items()):
                if st in ("survived", "no tests", "suspicious"):
                    print(f"{st:>10}  {name}   (mutmut show '{name}')")
    if args.fail_under is not None and (overall is None or overall < args.fail_under):
        print(f"mutation score {overall} is below {args.fail_under}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
