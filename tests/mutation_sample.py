"""Mutation score of the core estimated on a seeded random sample of each module's mutants.

Running every mutant of the core takes hours on a 2-core machine; a uniform sample of a few hundred per module
estimates the score with a stated 95 % interval in well under an hour:

    .venv/bin/python tests/mutation_sample.py                 # the sample of tests/MUTATION.md
    .venv/bin/python tests/mutation_sample.py --report-only   # its scores again, from mutants/*.meta
    .venv/bin/python tests/mutation_sample.py --draw          # draw a new sample (seed SEED) first

The sample is the list of mutant names in tests/mutation_sample.txt, drawn once: a draw depends on every
mutant of a module, so re-drawing after any change to the module would replace the whole sample. mutmut
numbers each function's mutants anew when the function changes (and runs them again), so a kept name stays a
uniform draw from its function.

mutmut's "segfault" is no verdict here (see STATUS_BY_EXIT_CODE): after mutmut's pass, each crashed mutant of
the sample is run again with plain pytest on the tests mutmut's stats give for its function, and that exit
code is its verdict (kept in mutants/plain-pytest-verdicts.json with the function's hash, so a changed
function is run again). `--rerun-survivors` does the same for the survivors, after tests were added.

mutmut (configuration in pyproject.toml) generates the mutants at the start of any run; a first run filtered
on a name that matches nothing does only that and then stops with mutmut's own "nothing matches" error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = {
    "train/evaluation.py": 300,
    "train/training_loop.py": 200,
    "dataset_script/convert.py": 150,
    "modeling_scale/simcl.py": 150,
}
SEED = 20261203
SAMPLE_FILE = ROOT / "tests" / "mutation_sample.txt"
MUTANTS = ROOT / "mutants"
PLAIN_VERDICTS = MUTANTS / "plain-pytest-verdicts.json"
MUTMUT = str(Path(sys.executable).with_name("mutmut"))
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
plain pytest (`rerun_plain`)."""


def exit_codes(module: str) -> dict[str, int | None]:
    """mutmut's exit code per mutant of `module`; a crash or a survival run again by plain pytest (with the
    function unchanged since) gets that run's exit code."""
    meta = MUTANTS / f"{module}.meta"
    codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}
    verdicts, hashes = _plain_verdicts(), _stats().get("function_hashes", {})
    for name, code in codes.items():
        verdict = verdicts.get(name)
        rerun = STATUS_BY_EXIT_CODE.get(code) in ("crashed", "survived")
        if rerun and verdict and verdict["hash"] == hashes.get(_function_of(name)):
            codes[name] = verdict["exit_code"]
    return codes


def _stats() -> dict:
    path = MUTANTS / "mutmut-stats.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _function_of(mutant: str) -> str:
    return mutant.rsplit("__mutmut_", 1)[0]


def _plain_verdicts() -> dict[str, dict]:
    return json.loads(PLAIN_VERDICTS.read_text()) if PLAIN_VERDICTS.is_file() else {}


def _plain_pytest(mutant: str, tests: list[str]) -> int:
    environment = {**os.environ, "MUTANT_UNDER_TEST": mutant}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        *tests,
    ]
    return subprocess.run(command, cwd=MUTANTS, env=environment, capture_output=True).returncode


def generate_mutants() -> None:
    """Bring mutants/ up to date with the source (mutmut regenerates what changed and marks the changed
    functions' mutants not checked); a first run filtered on a name that matches nothing does only that."""
    subprocess.run([MUTMUT, "run", "generate-only: matches no mutant"], cwd=ROOT, capture_output=True)


def rerun_plain(names: dict[str, list[str]], jobs: int, statuses: tuple[str, ...] = ("crashed",)) -> None:
    """Run each mutant of the sample with one of `statuses` with plain pytest (`jobs` at a time) on the tests
    that reach its function, in mutants/ with the current tests, and keep the exit code as its verdict
    (survivors: after tests were added, without a mutmut pass)."""
    generate_mutants()  # the current tests against stale copies of the source would fail for any mutant
    shutil.copytree(ROOT / "tests", MUTANTS / "tests", dirs_exist_ok=True)
    stats = _stats()
    tests_of, hashes = stats["tests_by_mangled_function_name"], stats["function_hashes"]
    chosen = [
        name
        for module, sampled in names.items()
        for name, code in exit_codes(module).items()
        if name in sampled and STATUS_BY_EXIT_CODE.get(code) in statuses
    ]
    first = sorted(tests_of[_function_of(chosen[0])])[:1] if chosen else []
    if chosen and _plain_pytest("fail", first) == 0:
        raise RuntimeError(
            f"plain pytest in {MUTANTS} does not run the mutated code: {first} passed as 'fail'"
        )
    verdicts = _plain_verdicts()

    def verdict(name: str) -> tuple[str, dict]:
        code = _plain_pytest(name, sorted(tests_of[_function_of(name)]))
        print(f"    {name}: {STATUS_BY_EXIT_CODE.get(code, code)} under plain pytest", flush=True)
        return name, {"exit_code": code, "hash": hashes.get(_function_of(name))}

    with ThreadPoolExecutor(jobs) as pool:
        for name, result in pool.map(verdict, chosen):
            if result["exit_code"] in (0, 1):  # passed / failed; not an interrupted or broken run
                verdicts[name] = result
                PLAIN_VERDICTS.write_text(json.dumps(verdicts, indent=1))


def module_of(mutant: str) -> str:
    return next(
        module for module in SAMPLE if mutant.startswith(module.removesuffix(".py").replace("/", "."))
    )


def draw_sample() -> None:
    """A uniform sample of SAMPLE[module] mutants of each module, seeded, written to SAMPLE_FILE."""
    rng = random.Random(SEED)
    names = [name for module, size in SAMPLE.items() for name in rng.sample(sorted(exit_codes(module)), size)]
    SAMPLE_FILE.write_text("\n".join(names) + "\n")


def sample_names() -> dict[str, list[str]]:
    """The sample of SAMPLE_FILE, by module."""
    names = {module: [] for module in SAMPLE}
    for name in SAMPLE_FILE.read_text().split():
        names[module_of(name)].append(name)
    return names


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
    crashed), with its interval; a crash run again by plain pytest counts as that run's verdict. Equivalent
    mutants are not known to mutmut: tests/MUTATION.md lists the survivors with the reason."""
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
    parser.add_argument(
        "--rerun-survivors", action="store_true", help="run the survivors again with plain pytest (new tests)"
    )
    parser.add_argument("--draw", action="store_true", help=f"draw a new sample into {SAMPLE_FILE.name}")
    parser.add_argument(
        "--max-children", type=int, default=2, help="mutants run at a time (also plain pytest)"
    )
    args = parser.parse_args(argv)
    if not args.report_only:
        generate_mutants()
        if args.draw:
            draw_sample()
        chosen = [name for names in sample_names().values() for name in names]
        subprocess.run(
            [MUTMUT, "run", "--max-children", str(args.max_children), *chosen], cwd=ROOT, check=True
        )
        rerun_plain(sample_names(), args.max_children)
    if args.rerun_survivors:
        rerun_plain(sample_names(), args.max_children, ("survived",))
    report(sample_names())


if __name__ == "__main__":
    main()
