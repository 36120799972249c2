"""Per-module mutation scores of the last ``mutmut run`` (tox -e mutation), read from mutants/.

One row per module of ``only_mutate`` in pyproject.toml's [tool.mutmut]: mutants, killed, survived,
timeout, no tests (no selected test calls the function), unchecked (not run yet, e.g. an interrupted
run), other (suspicious, segfault, skipped), equivalent, and the score killed / (mutants - equivalent). Equivalent mutants (no test can
tell them from the original) are listed one name a line, ``# why`` after it, in
.ci/mutation_equivalent.txt; they leave the denominator.

``--survivors`` lists each module's surviving (and no-tests) mutants with the line they change, grouped
by function, for writing the tests that kill them; ``mutmut show NAME`` prints one mutant's diff.
Run from the repository root, in the environment mutmut ran in.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import sys
import tomllib
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = ROOT / ".ci" / "mutation_equivalent.txt"
COLUMNS = ("mutants", "killed", "survived", "timeout", "no tests", "unchecked", "other", "equivalent", "score")


def configured_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return list(config["only_mutate"])


def equivalent_names(path: Path = EQUIVALENT) -> set[str]:
    if not path.is_file():
        return set()
    names = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {name for name in names if name}


def results(module: str) -> dict[str, str] | None:
    """{mutant name: status} of one module, None when mutmut has not mutated it yet."""
    meta = ROOT / "mutants" / f"{module}.meta"
    if not meta.is_file():
        return None
    return {name: status_by_exit_code[code] for name, code in json.loads(meta.read_text())["exit_code_by_key"].items()}


def row(statuses: dict[str, str], equivalent: set[str]) -> dict:
    counts = Counter(status for name, status in statuses.items() if name not in equivalent)
    excluded = sum(name in equivalent for name in statuses)
    named = ("killed", "survived", "timeout", "no tests", "not checked")
    scored = len(statuses) - excluded
    return {"mutants": len(statuses), "killed": counts["killed"], "survived": counts["survived"],
            "timeout": counts["timeout"], "no tests": counts["no tests"], "unchecked": counts["not checked"],
            "other": sum(counts.values()) - sum(counts[status] for status in named), "equivalent": excluded,
            "score": counts["killed"] / scored if scored else None}


def table(rows: dict[str, dict | None]) -> str:
    width = max(len(name) for name in [*rows, "module"])
    lines = [f"{'module':<{width}}  " + "  ".join(f"{column:>10}" for column in COLUMNS)]
    for name, figures in rows.items():
        if figures is None:
            lines.append(f"{name:<{width}}  not run yet")
            continue
        cells = [f"{figures[column]:>10}" for column in COLUMNS[:-1]]
        score = figures["score"]
        cells.append(f"{'—' if score is None else f'{100 * score:.1f}%':>10}")
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def markdown(rows: dict[str, dict | None]) -> str:
    """The table as markdown (README): module, mutants, killed, survived, no tests, equivalent, score."""
    lines = ["| module | mutants | killed | survived | no tests | unchecked | equivalent | score |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, figures in rows.items():
        if figures is None:
            lines.append(f"| `{name}` | not run yet | | | | | | |")
            continue
        score = "—" if figures["score"] is None else f"{100 * figures['score']:.1f}%"
        lines.append(f"| `{name}` | {figures['mutants']} | {figures['killed']} | {figures['survived']} | "
                     f"{figures['no tests']} | {figures['unchecked']} | {figures['equivalent']} | {score} |")
    return "\n".join(lines)


def total(rows: dict[str, dict | None]) -> dict:
    present = [figures for figures in rows.values() if figures is not None]
    summed = {column: sum(figures[column] for figures in present) for column in COLUMNS[:-1]}
    scored = summed["mutants"] - summed["equivalent"]
    summed["score"] = summed["killed"] / scored if scored else None
    return summed


def _functions(source: str) -> dict[str, str]:
    """Source of every function and method of a mutated file, by name."""
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = ast.get_source_segment(source, node)
    return found


def changed_lines(functions: dict[str, str], name: str) -> str:
    """The mutant's change against its function's original, as '-old / +new' lines."""
    function = name.rsplit(".", 1)[1]
    original_name = function.split("__mutmut_")[0] + "__mutmut_orig"
    original, mutated = functions.get(original_name), functions.get(function)
    if original is None or mutated is None:
        return f"(source not found; mutmut show {name})"
    mutated = mutated.replace(function, original_name, 1)
    diff = [line for line in difflib.unified_diff(original.splitlines(), mutated.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return " / ".join(line[0] + line[1:].strip() for line in diff)


def survivors(module: str, statuses: dict[str, str], equivalent: set[str]) -> list[str]:
    wanted = {name: status for name, status in statuses.items()
              if status in ("survived", "no tests") and name not in equivalent}
    if not wanted:
        return []
    functions = _functions((ROOT / "mutants" / module).read_text())
    lines = []
    for function in sorted({name.split("__mutmut_")[0] for name in wanted}):
        members = sorted((name for name in wanted if name.split("__mutmut_")[0] == function),
                         key=lambda name: int(name.rsplit("_", 1)[1]))
        lines.append(f"  {function.rsplit('.', 1)[1].replace('ǁ', '.').removeprefix('x.').removeprefix('x_')}:")
        for name in members:
            marker = "" if wanted[name] == "survived" else " [no tests]"
            lines.append(f"    {name.rsplit('.', 1)[1]}{marker}: {changed_lines(functions, name)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--survivors", action="store_true", help="list surviving mutants with their change")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown (README)")
    parser.add_argument("--survivor-names", action="store_true",
                        help="print only the names of surviving and no-tests mutants, one a line (for 'mutmut run')")
    arguments = parser.parse_args(argv)
    equivalent = equivalent_names()
    per_module = {}
    for module in configured_modules():
        statuses = results(module)
        per_module[module] = None if statuses is None else row(statuses, equivalent)
    if all(figures is None for figures in per_module.values()):
        print("no mutation results under mutants/; run 'tox -e mutation' (or 'mutmut run') first", file=sys.stderr)
        return 2
    if arguments.survivor_names:
        for module in per_module:
            for name, status in (results(module) or {}).items():
                if status in ("survived", "no tests") and name not in equivalent:
                    print(name)
        return 0
    rows = {**per_module, "total": total(per_module)}
    print(markdown(rows) if arguments.markdown else table(rows))
    if arguments.survivors:
        for module in per_module:
            statuses = results(module)
            listed = survivors(module, statuses, equivalent) if statuses else []
            if listed:
                print(f"\n{module}: surviving mutants")
                print("\n".join(listed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
