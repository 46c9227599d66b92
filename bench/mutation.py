"""Mutation testing (mutmut) of the modules where a silent bug costs most.

Each target is a source file and the tests meant to guard it. mutmut changes the file one small
edit at a time (``<`` to ``<=``, ``and`` to ``or``, a constant, a dropped argument...) and runs
those tests against each mutant: a mutant the tests still pass ("survived") is a bug they would
not catch. The table gives the killed share per target; survivors are written with their diffs
to ``bench/results/mutation-survivors.md`` so each can be read and either tested or judged
equivalent (a change with no observable effect).

The work happens in a copy of ``src/``, ``tests/`` and ``pyproject.toml`` (``--work``, default a
temporary folder), so the repository is never mutated; rerunning with the same ``--work``
reuses mutmut's cache and only retests what changed.

Usage:
    python bench/mutation.py                      # all targets (over 30 min on 2 cores; the queue is slowest)
    python bench/mutation.py --targets journal,fetch --max-children 2
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

REPO = Path(__file__).resolve().parents[1]

# name -> (source file, the tests that guard it, the functions that decide: mutmut name patterns;
# None = the whole file). The focus keeps formatting and plumbing out of the figure.
TARGETS: dict[str, tuple[str, list[str], list[str] | None]] = {
    "metrics": ("src/clearbg/evaluate/metrics.py", ["tests/test_evaluate_metrics.py", "tests/test_metrics.py"], None),
    "promote": ("src/clearbg/evaluate/compare.py", ["tests/test_compare.py"],
                ["x_compare_evaluations*", "x_first_champion*", "x__pair*", "x__row*", "xǁDecisionǁverdict*"]),
    "journal": ("src/clearbg/batch/journal.py", ["tests/test_batch_journal.py"], None),
    # (not the Hypothesis fuzz test: 1,500 examples per mutant, and it exits under mutmut's trampolines)
    "decode": ("src/clearbg/imageio.py", ["tests/test_imageio.py"],
               ["x_open_image*", "x__decode*", "x__resolve_limit*", "x_max_pixels*", "x__too_large*",
                "xǁ_PillowGuardOffǁ*", "x_atomic_write_bytes*"]),
    "fetch": ("src/clearbg/serve/fetch.py", ["tests/test_serve_fetch.py"], None),
    "queue": ("src/clearbg/review/queue.py", ["tests/test_review_queue.py"],
              ["xǁReviewQueueǁenqueue*", "xǁReviewQueueǁclaim*", "xǁReviewQueueǁrenew*", "xǁReviewQueueǁrelease*",
               "xǁReviewQueueǁcomplete*", "x_item_key*", "x__claimable*"]),
}
WHAT = {
    "metrics": "IoU, Dice, boundary F per image",
    "promote": "champion/challenger decision",
    "journal": "batch journal and results.parquet",
    "decode": "image decoding, size limits, atomic writes",
    "fetch": "image_url safety (SSRF)",
    "queue": "review queue",
}
STATUS = status_by_exit_code  # mutmut's own verdict per exit code
# Survivors read one by one and judged equivalent: no test can see them because nothing
# observable changes. They are listed with the survivors but left out of the killed share.
# A mutant's name holds its function and a number, so a change to that function renumbers
# them: an entry that no longer names a survivor is reported, to be judged again.
EQUIVALENT: dict[str, str] = {
    'clearbg.evaluate.metrics.x_confusion_counts__mutmut_9':
        '`.to(None)` for `.to(p.device)`: both tensors are already on one device wherever the metric runs',
    'clearbg.evaluate.metrics.x_confusion_counts__mutmut_46':
        '`.to(None)` for `.to(torch.int64)`: the counts are int64 sums already',
    'clearbg.evaluate.compare.x_compare_evaluations__mutmut_57':
        "`groupby(sort=True)` is pandas' default",
    'clearbg.evaluate.compare.x_compare_evaluations__mutmut_76':
        'a metric one side lacks keeps its bare name after the merge, so neither suffixed name exists either way',
    'clearbg.evaluate.compare.x__pair__mutmut_76':
        "`validate='one_to_one'`: repeated ids are refused before the merge",
    'clearbg.evaluate.compare.x__pair__mutmut_80':
        "`validate='one_to_one'`: repeated ids are refused before the merge",
    'clearbg.evaluate.compare.x__pair__mutmut_113':
        '`reset_index(drop=None)`: the extra index column is never read',
    'clearbg.evaluate.compare.x__pair__mutmut_115':
        'sort `kind`: ids are unique, every sort gives the same order',
    'clearbg.evaluate.compare.x__pair__mutmut_117':
        'sort `kind`: ids are unique, every sort gives the same order',
    'clearbg.evaluate.compare.x__pair__mutmut_121':
        'sort `kind`: ids are unique, every sort gives the same order',
    'clearbg.evaluate.compare.x__pair__mutmut_122':
        '`reset_index(drop=False)`: the extra index column is never read',
    'clearbg.evaluate.compare.x__row__mutmut_2':
        '`to_numpy(dtype=None)`: `_pair` has checked the column is finite numbers',
    'clearbg.evaluate.compare.x__row__mutmut_4':
        '`to_numpy(dtype=None)`: `_pair` has checked the column is finite numbers',
    'clearbg.batch.journal.xǁJournalǁ_chunks__mutmut_6':
        "fsspec's `ls(detail=None)` lists names like `detail=False`",
    'clearbg.batch.journal.xǁJournalǁ_chunks__mutmut_8':
        "the local filesystem's `ls` default gives the same sorted names here",
    'clearbg.batch.journal.xǁJournalǁ_chunks__mutmut_30':
        'the journal is ASCII JSON (`json.dumps` escapes the rest), any encoding reads it',
    'clearbg.batch.journal.xǁJournalǁ_chunks__mutmut_32':
        'the journal is ASCII JSON (`json.dumps` escapes the rest), any encoding reads it',
    'clearbg.batch.journal.xǁJournalǁ_chunks__mutmut_34':
        '`UTF-8` and `utf-8` name one codec',
    'clearbg.batch.journal.xǁJournalǁopen__mutmut_30':
        'the journal is ASCII JSON (`json.dumps` escapes the rest), any encoding writes it',
    'clearbg.batch.journal.xǁJournalǁopen__mutmut_33':
        'the journal is ASCII JSON (`json.dumps` escapes the rest), any encoding writes it',
    'clearbg.batch.journal.xǁJournalǁopen__mutmut_37':
        '`UTF-8` and `utf-8` name one codec',
    'clearbg.batch.journal.xǁJournalǁadd__mutmut_7':
        'key order inside a JSON line is never read',
    'clearbg.batch.journal.xǁJournalǁadd__mutmut_9':
        'key order inside a JSON line is never read',
    'clearbg.batch.journal.xǁJournalǁadd__mutmut_10':
        'key order inside a JSON line is never read',
    'clearbg.batch.journal.xǁJournalǁadd__mutmut_14':
        "a part's name only has to grow with time within one job; local time does",
    'clearbg.batch.journal.xǁJournalǁadd__mutmut_16':
        '`utc` and `UTC` name one zone',
    'clearbg.batch.journal.xǁJournalǁadd__mutmut_17':
        'the name still grows with time (a constant prefix and suffix)',
    'clearbg.batch.journal.xǁJournalǁadd__mutmut_18':
        '`%y%m%d` then the epoch seconds (`%s`): the name still grows with time',
    'clearbg.batch.journal.xǁJournalǁadd__mutmut_20':
        'one more hex digit of the random suffix',
    'clearbg.batch.journal.xǁJournalǁclose__mutmut_2':
        "a closed journal's file handle is never used again, `None` or `''`",
    'clearbg.batch.journal.xǁJournalǁwrite_results__mutmut_29':
        '`to_parquet(index=None)` stores a RangeIndex as metadata only, readers get the same table',
    'clearbg.imageio.xǁ_PillowGuardOffǁ__init____mutmut_1':
        'runs once at import, before mutmut can switch any mutant on',
    'clearbg.imageio.xǁ_PillowGuardOffǁ__init____mutmut_2':
        'runs once at import, before mutmut can switch any mutant on',
    'clearbg.imageio.xǁ_PillowGuardOffǁ__init____mutmut_3':
        'runs once at import, before mutmut can switch any mutant on',
    'clearbg.imageio.xǁ_PillowGuardOffǁ__init____mutmut_4':
        'runs once at import, before mutmut can switch any mutant on',
    'clearbg.imageio.x_open_image__mutmut_8':
        '`read(None)` for `read(1)`: only emptiness is tested',
    'clearbg.imageio.x_open_image__mutmut_9':
        '`read(2)` for `read(1)`: only emptiness is tested',
    'clearbg.imageio.x_open_image__mutmut_12':
        "Pillow's `Image.open` rewinds to 0 before it sniffs each format",
    'clearbg.imageio.x__decode__mutmut_17':
        "the message of a Pillow bomb error, unreachable while our guard has Pillow's limit off",
    'clearbg.imageio.x_atomic_write_bytes__mutmut_19':
        "the temp file's first mode; it is chmod-ed to the final mode before the rename",
    'clearbg.imageio.x_atomic_write_bytes__mutmut_22':
        "the temp file's first mode; it is chmod-ed to the final mode before the rename",
    'clearbg.imageio.x_atomic_write_bytes__mutmut_46':
        '`unlink` of our own temp file; nothing makes it fail',
    'clearbg.serve.fetch.x_fetch_url__mutmut_1':
        'the default timeout; the server always passes its own',
    'clearbg.serve.fetch.x_fetch_url__mutmut_43':
        'HTTP header names are case-insensitive (`getheader` too)',
    'clearbg.serve.fetch.x_fetch_url__mutmut_44':
        'HTTP header names are case-insensitive (`getheader` too)',
    'clearbg.serve.fetch.x_fetch_url__mutmut_52':
        'HTTP header names are case-insensitive (`getheader` too)',
    'clearbg.serve.fetch.x_fetch_url__mutmut_53':
        'HTTP header names are case-insensitive (`getheader` too)',
    'clearbg.serve.fetch.xǁ_PinnedHTTPSConnectionǁ__init____mutmut_4':
        '`HTTPSConnection` without a context makes a verifying default one',
    'clearbg.serve.fetch.xǁ_PinnedHTTPSConnectionǁ__init____mutmut_8':
        '`HTTPSConnection` without a context makes a verifying default one',
    'clearbg.serve.fetch.x__get__mutmut_38':
        'HTTP header names are case-insensitive; http.client sees `host` in any case',
    'clearbg.serve.fetch.x__get__mutmut_39':
        'HTTP header names are case-insensitive; http.client sees `host` in any case',
    'clearbg.serve.fetch.x__get__mutmut_45':
        'HTTP header names are case-insensitive',
    'clearbg.serve.fetch.x__get__mutmut_46':
        'HTTP header names are case-insensitive',
    'clearbg.review.queue.xǁReviewQueueǁenqueue__mutmut_35':
        'Pillow format names are case-insensitive',
    'clearbg.review.queue.xǁReviewQueueǁcomplete__mutmut_41':
        'Pillow format names are case-insensitive',
    'clearbg.review.queue.xǁReviewQueueǁclaim__mutmut_12':
        'how many candidates one query fetches; the loop asks again',
    'clearbg.review.queue.xǁReviewQueueǁclaim__mutmut_22':
        'how many candidates one query fetches; the loop asks again',
    'clearbg.review.queue.xǁReviewQueueǁclaim__mutmut_15':
        'the id only breaks ties of score and creation time to the millisecond',
    'clearbg.review.queue.xǁReviewQueueǁclaim__mutmut_18':
        'the id only breaks ties of score and creation time to the millisecond',
    'clearbg.review.queue.xǁReviewQueueǁrenew__mutmut_14':
        "a claim's token is cleared when it ends, so the token check alone refuses",
    'clearbg.review.queue.xǁReviewQueueǁrelease__mutmut_12':
        "a claim's token is cleared when it ends, so the token check alone refuses",
    'clearbg.review.queue.xǁReviewQueueǁcomplete__mutmut_72':
        "a claim's token is cleared when it ends, so the token check alone refuses",
    'clearbg.review.queue.xǁReviewQueueǁrelease__mutmut_5':
        'a released item is pending, so the status check alone refuses its old token',
    'clearbg.review.queue.xǁReviewQueueǁcomplete__mutmut_65':
        'a completed item is not claimed, so the status check alone refuses its old token',
    'clearbg.review.queue.x_item_key__mutmut_7':
        '`to_bytes` is big-endian by default (Python 3.11+)',
    'clearbg.review.queue.x__claimable__mutmut_8':
        'only claimed items have a lease (pending and decided ones have none)',
    'clearbg.review.queue.x__claimable__mutmut_11':
        "a lease ending at exactly the database's current float time",
}


def prepare_work(work: Path, targets: list[str]) -> None:
    """Copy the code and tests into ``work`` with a [tool.mutmut] section for ``targets``."""
    for name in ("src", "tests"):
        shutil.rmtree(work / name, ignore_errors=True)
        shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    files = [TARGETS[t][0] for t in targets]
    tests = sorted({test for t in targets for test in TARGETS[t][1]})
    section = (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {json.dumps(files)}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
        # The queue's PostgreSQL variants run the same code against a second database and
        # would start a server for every mutant; under mutation the SQLite variants stand in.
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:randomly", "-q", "-W", "ignore", '
        '"-k", "not postgresql and not server_database"]\n'
        'process_isolation = "forkserver"\n'  # torch and MLflow are not fork-safe after import
        "timeout_multiplier = 5.0\n"
    )
    pyproject = (REPO / "pyproject.toml").read_text()
    (work / "pyproject.toml").write_text(pyproject.split("\n[tool.mutmut]")[0] + section)


def read_results(work: Path, targets: list[str]) -> dict[str, Counter]:
    """mutmut's verdict per mutant, counted per target (from its ``.meta`` files)."""
    counts: dict[str, Counter] = {}
    for target in targets:
        meta = work / "mutants" / (TARGETS[target][0] + ".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}
        codes = {k: code for k, code in codes.items() if k in focus(target, list(codes))}
        counts[target] = Counter(STATUS[code] for code in codes.values())
        survivors = [k for k, code in codes.items() if STATUS[code] == "survived"]
        counts[target]["survived"] -= sum(k in EQUIVALENT for k in survivors)
        counts[target]["equivalent"] = sum(k in EQUIVALENT for k in survivors)
        counts[target]["_survivors"] = survivors  # type: ignore[assignment]
    return counts


def module_name(path: str) -> str:
    return path.removeprefix("src/").removesuffix(".py").replace("/", ".")


def patterns(target: str) -> list[str]:
    """mutmut name patterns of a target's mutants (``clearbg.imageio.x_open_image*``)."""
    path, _, functions = TARGETS[target]
    return [f"{module_name(path)}.{f}" for f in (functions or ["*"])]


def focus(target: str, names: list[str]) -> set[str]:
    return {n for n in names if any(fnmatch.fnmatch(n, pattern) for pattern in patterns(target))}


def killed_share(c: Counter) -> float:
    """Killed among the mutants that were judged, equivalent ones left out (timeouts count as
    killed: the test noticed)."""
    judged = c["killed"] + c["timeout"] + c["survived"] + c["no tests"] + c["segfault"]
    return (c["killed"] + c["timeout"] + c["segfault"]) / judged if judged else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of: {', '.join(TARGETS)}")
    parser.add_argument("--work", type=Path, help="work folder (kept; reuse it to resume)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--report", type=Path, default=REPO / "bench" / "results" / "mutation-survivors.md")
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="clearbg-mutation-"))
    # The mutated copy must exist before Python starts: a PYTHONPATH folder missing at start-up
    # is cached as absent, and the editable install's src/ would be tested instead.
    (work / "mutants" / "src").mkdir(parents=True, exist_ok=True)
    prepare_work(work, targets)
    env = {**os.environ, "CLEARBG_SHARED": str(REPO.parent / "shared"), "PYTHONPATH": str(work / "mutants" / "src"),
           "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    print(f"mutmut in {work} on {', '.join(targets)} ({args.max_children} children)", flush=True)
    selection = [pattern for t in targets for pattern in patterns(t)]
    run = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *selection],
                         cwd=work, env=env)
    minutes = (time.perf_counter() - started) / 60
    counts = read_results(work, targets)

    print(f"\n| target | what | mutants | killed | timeout | survived | equivalent | no tests | killed share |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    total = Counter()
    for target in targets:
        c = counts[target]
        total.update({k: v for k, v in c.items() if k != "_survivors"})
        n = sum(v for k, v in c.items() if k != "_survivors")
        print(f"| {target} | {WHAT[target]} | {n} | {c['killed']} | {c['timeout']} | {c['survived']} | "
              f"{c['equivalent']} | {c['no tests']} | {killed_share(c):.1%} |")
    n = sum(total.values())
    print(f"| **all** | | {n} | {total['killed']} | {total['timeout']} | {total['survived']} | "
          f"{total['equivalent']} | {total['no tests']} | **{killed_share(total):.1%}** |")
    judged = {k for t in targets for k in EQUIVALENT if any(fnmatch.fnmatch(k, p) for p in patterns(t))}
    stale = sorted(judged - {k for t in targets for k in counts[t]["_survivors"]})
    if stale:
        print(f"\nEQUIVALENT entries that name no survivor any more (judge again): {', '.join(stale)}")
    print(f"\nmutmut 3 exit {run.returncode}; {minutes:.0f} min; host {os.cpu_count()} CPUs")

    lines = [f"# Surviving mutants ({time.strftime('%Y-%m-%d')}, bench/mutation.py)\n"]
    for target in targets:
        for name in counts[target]["_survivors"]:
            diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, env=env,
                                  capture_output=True, text=True).stdout
            verdict = f"Equivalent: {EQUIVALENT[name]}\n\n" if name in EQUIVALENT else ""
            lines.append(f"## {target}: `{name}`\n\n{verdict}```diff\n{_strip_ansi(diff).strip()}\n```\n")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines))
    print(f"survivors and their diffs: {args.report}")
    return 0 if run.returncode == 0 else 1


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


if __name__ == "__main__":
    sys.exit(main())
