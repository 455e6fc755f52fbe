"""Mutation score of the core estimated on a seeded random sample of each module's mutants.

Running every mutant of the core takes hours on a 2-core machine; a uniform sample of a few hundred per module
estimates the score with a stated 95 % interval in well under an hour:

    .venv/bin/python tests/mutation_sample.py                 # the sample of tests/MUTATION.md
    .venv/bin/python tests/mutation_sample.py --report-only   # its scores again, from mutants/*.meta

mutmut (configuration in pyproject.toml) generates the mutants at the start of any run; a first run filtered
on a name that matches nothing does only that and then stops with mutmut's own "nothing matches" error.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = {
    "train/evaluation.py": 300,
    "train/training_loop.py": 200,
    "dataset_script/convert.py": 150,
    "modeling_scale/simcl.py": 150,
}
SEED = 20261203
STATUS_BY_EXIT_CODE = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    33: "no tests",
    None: "not checked",
}
STATUS_BY_EXIT_CODE.update(dict.fromkeys((-24, 24, 36, 152, 255), "timeout"))
STATUS_BY_EXIT_CODE.update(dict.fromkeys((-11, -9), "crashed"))
"""mutmut's exit-code meanings; it calls -9 / -11 "segfault": the forked test process was killed. Under the
forkserver, tests that start the conversion's worker pool end this way even for mutants that change nothing
they check, so a crash is no verdict: crashed mutants are left out of the score and listed, to be run with
plain pytest (`MUTANT_UNDER_TEST=<name> pytest -x <its test files>` in mutants/)."""


def exit_codes(module: str) -> dict[str, int | None]:
    meta = ROOT / "mutants" / f"{module}.meta"
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}


def sample_names() -> dict[str, list[str]]:
    rng = random.Random(SEED)
    return {module: rng.sample(sorted(exit_codes(module)), size) for module, size in SAMPLE.items()}


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of a proportion from a sample (Wilson score interval)."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


def report(names: dict[str, list[str]]) -> None:
    """Per module: statuses of the sampled mutants and (killed + timed out) / (sampled - not checked -
    crashed), with its interval. Equivalent mutants are not known to mutmut: tests/MUTATION.md lists the
    survivors with the reason."""
    for module, sampled in names.items():
        codes = exit_codes(module)
        counts = Counter(STATUS_BY_EXIT_CODE.get(codes.get(name), "other") for name in sampled)
        detected = counts["killed"] + counts["timeout"]
        run = len(sampled) - counts["not checked"] - counts["crashed"]
        low, high = wilson_interval(detected, run)
        score = 100 * detected / max(run, 1)
        interval = f"95 % interval {100 * low:.1f}-{100 * high:.1f}"
        print(f"{module}: {dict(counts)} -> {score:.1f} % detected ({interval})")
        for name in sampled:
            status = STATUS_BY_EXIT_CODE.get(codes.get(name))
            if status in ("survived", "no tests", "crashed"):
                print(f"    {name} ({status})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--max-children", type=int, default=2)
    args = parser.parse_args(argv)
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    if not args.report_only:
        if not all(exit_codes(module) for module in SAMPLE):
            subprocess.run([mutmut, "run", "generate-only: matches no mutant"], cwd=ROOT, capture_output=True)
        chosen = [name for names in sample_names().values() for name in names]
        subprocess.run(
            [mutmut, "run", "--max-children", str(args.max_children), *chosen], cwd=ROOT, check=True
        )
    report(sample_names())


if __name__ == "__main__":
    main()
