"""Run fuzz/harness.py for each target in turn, one process at a time, and summarize (``make fuzz``).

    .venv/bin/python fuzz/run_all.py [--seconds 360] [--formats npy,torch] [--report docs/FUZZING.md]

Each target gets ``--seconds`` of wall time. A run that libFuzzer stops (a hang past 10 s, RSS past
the limit, a fatal signal, a changed process-wide state) is recorded and restarted for the time left.
Writes ``fuzz/logs/<format>.log``, ``fuzz/results/<format>.json`` (seconds, executions, cov/ft,
failures) and, with ``--report``, the Markdown summary. Failures (the files themselves) are in
``fuzz/crashes/<format>/`` with ``index.tsv``; ``--promote`` also copies one file per failure into
``tests/regressions/<format>-<short-name>.<ext>`` (``tests/test_regressions.py`` loads each).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import targets  # noqa: E402

ORDER = ["npy", "npz", "npz-member", "torch-pickle", "torch", "torch-legacy", "safetensors", "tensorfile",
         "sharded", "mxnet", "gguf", "hdf5", "keras"]
assert sorted(ORDER) == sorted(targets.TARGETS)

STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
COV = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)/")


def _stop_kind(log: str) -> str | None:
    if "libFuzzer: timeout" in log or "ALARM: working on the last Unit" in log:
        return "timeout"
    if "libFuzzer: out-of-memory" in log:
        return "oom"
    if "deadly signal" in log:
        return "signal"
    if "Uncaught Python exception" in log:
        return "python"  # the harness saved it already (a changed process-wide state)
    return None


def run_target(name: str, seconds: int, python: str, extra: list[str]) -> dict:
    corpus = HERE / "corpus" / name
    crashes = HERE / "crashes" / name
    logs = HERE / "logs"
    crashes.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    if not corpus.exists() or not any(corpus.iterdir()):
        subprocess.run([python, str(HERE / "seed_corpus.py"), name], check=True)
    log_path = logs / f"{name}.log"
    result = {"format": name, "seconds": 0.0, "executions": 0, "cov": 0, "ft": 0, "corpus": 0, "runs": 0,
              "stops": []}
    start = time.monotonic()
    while (left := seconds - (time.monotonic() - start)) > 15 and result["runs"] < 60:
        began = time.monotonic()
        cmd = [python, str(HERE / "harness.py"), "--format", name, "--crashes", str(crashes), str(corpus),
               f"-max_total_time={int(left)}", "-timeout=10", "-rss_limit_mb=4096", "-print_final_stats=1",
               f"-artifact_prefix={crashes}/", *extra]
        with open(log_path, "a") as log:
            log.write(f"\n##### {datetime.datetime.now().isoformat(timespec='seconds')} {' '.join(cmd)}\n")
            log.flush()
            offset = log.tell()
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        with open(log_path) as f:
            f.seek(offset)
            text = f.read()
        result["runs"] += 1
        result["seconds"] += time.monotonic() - began
        stats = dict((k, int(v)) for k, v in STAT.findall(text))
        covs = COV.findall(text)
        if "number_of_executed_units" in stats:
            result["executions"] += stats["number_of_executed_units"]
        else:  # killed before the final stats: the last status line's count
            counts = re.findall(r"^#(\d+)\s", text, re.M)
            result["executions"] += int(counts[-1]) if counts else 0
        if covs:
            cov, ft, corp = map(int, covs[-1])
            result["cov"], result["ft"] = max(result["cov"], cov), max(result["ft"], ft)
            result["corpus"] = corp
        if proc.returncode != 0:
            kind = _stop_kind(text)
            result["stops"].append(kind or f"exit-{proc.returncode}")
            if kind is None and "Traceback" in text and "INFO: Seed" not in text:
                print(f"{name}: the harness failed to start:\n{text[-3000:]}", file=sys.stderr)
                time.sleep(10)  # e.g. a source file mid-edit; try again
            elif kind in ("timeout", "oom", "signal") and sum(s == kind for s in result["stops"]) <= 3:
                _save_stop(name, crashes, kind, text)
    return result


def _save_stop(name: str, crashes: Path, kind: str, log: str) -> None:
    """File the input that stopped libFuzzer (left in .work/ by the harness) as a failure."""
    work = crashes / ".work"
    files = [p for p in work.iterdir() if p.is_file()] if work.exists() else []
    if not files:
        return
    path = max(files, key=lambda p: p.stat().st_mtime)
    if targets.TARGETS[name].mode == "sharded":
        path = work / "model.safetensors.index.json"
    data = path.read_bytes()
    sha = hashlib.sha1(data).hexdigest()[:10]
    suffix = ".index.json" if targets.TARGETS[name].mode == "sharded" else "".join(path.suffixes)
    stem = f"{kind}-{sha}"
    shutil.copyfile(path, crashes / (stem + suffix))
    detail = "\n".join(line for line in log.splitlines() if "==" in line or "ALARM" in line or "Error" in line)
    (crashes / (stem + ".txt")).write_text(log[-6000:])
    with open(crashes / "index.tsv", "a") as f:
        f.write(f"{kind}\t{stem + suffix}\t{(detail.splitlines() or [kind])[0][:300]}\n")
    print(f"=== {name}: {kind}, saved {crashes / (stem + suffix)}", flush=True)


def failures(name: str) -> list[dict]:
    index = HERE / "crashes" / name / "index.tsv"
    if not index.exists():
        return []
    out = []
    for line in index.read_text().splitlines():
        sig, file, last = (line.split("\t") + ["", ""])[:3]
        out.append({"signature": sig, "file": file, "error": last})
    return out


def regression_name(name: str, failure: dict) -> str:
    """``<target>-<signature, short>-<sha6>.<ext>``: the failure's file as tests/regressions/ keeps it."""
    src = HERE / "crashes" / name / failure["file"]
    short = re.sub(r"[^a-z0-9]+", "-", failure["signature"].lower()).strip("-")[:50]
    if src.exists():
        short += "-" + hashlib.sha1(src.read_bytes()).hexdigest()[:6]
    suffix = ".index.json" if targets.TARGETS[name].mode == "sharded" else targets.TARGETS[name].suffix
    return f"{name}-{short}{suffix}"


def promote(name: str) -> list[str]:
    """Copy one file per failure into tests/regressions/ (named <format>-<short>.<ext>)."""
    dest = ROOT / "tests" / "regressions"
    dest.mkdir(parents=True, exist_ok=True)
    made = []
    for f in failures(name):
        src = HERE / "crashes" / name / f["file"]
        if not src.exists():
            continue
        target = dest / regression_name(name, f)
        if not target.exists():
            shutil.copyfile(src, target)
            made.append(str(target.relative_to(ROOT)))
    return made


def report(path: Path) -> None:
    """Write the Markdown summary; ``fuzz/causes.json`` ({"<target> <signature>": "one-line cause"}) adds causes."""
    rows, details = [], []
    causes_file = HERE / "causes.json"
    causes = json.loads(causes_file.read_text()) if causes_file.exists() else {}
    for name in ORDER:
        rfile = HERE / "results" / f"{name}.json"
        if not rfile.exists():
            continue
        r = json.loads(rfile.read_text())
        fails = failures(name)
        rows.append(f"| {name} | {r['seconds']:.0f} | {r['executions']:,} | {r['cov']} / {r['ft']} | {r['corpus']} | "
                    f"{len(fails)} |")
        for f in fails:
            cause = causes.get(f"{name} {f['signature']}", "")
            details.append(f"| {name} | `{f['signature']}` | `{regression_name(name, f)}` | {f['error'].replace('|', '/')[:200]} | "
                           f"{cause} |")
    text = [
        "# Fuzzing results",
        "",
        f"Generated by `fuzz/run_all.py --report` on {datetime.date.today().isoformat()} (atheris, one process at a",
        "time on a 2-core machine). cov/ft: libFuzzer's edge coverage and features of the instrumented",
        "`tensorfile` modules at the end of the run. Failures: one per distinct exception type + innermost",
        "tensorfile frame; each file is in `tests/regressions/` (as found, with its traceback, in `fuzz/crashes/<target>/`).",
        "",
        "| target | seconds | executions | cov / ft | corpus | failures |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
        *rows,
        "",
        "## Failures",
        "",
        "| target | signature | file | error (last line) | cause |",
        "| --- | --- | --- | --- | --- |",
        *details,
        "",
    ]
    notes = HERE / "notes.md"  # hand-written: the Hypothesis tests' findings and anything else to keep
    if notes.exists():
        text += [notes.read_text()]
    path.write_text("\n".join(text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 360)))
    parser.add_argument("--formats", default=",".join(ORDER))
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--report", type=Path, default=None, help="write the Markdown summary here")
    parser.add_argument("--promote", action="store_true", help="copy failures into tests/regressions/")
    parser.add_argument("--report-only", action="store_true", help="do not fuzz; rewrite the report")
    args, extra = parser.parse_known_args()
    names = [n for n in args.formats.split(",") if n]
    for n in names:
        if n not in targets.TARGETS:
            parser.error(f"unknown format {n!r}; expected some of {ORDER}")
    (HERE / "results").mkdir(exist_ok=True)
    for name in names:
        if not args.report_only:
            print(f"--- fuzzing {name} for {args.seconds} s", flush=True)
            result = run_target(name, args.seconds, args.python, extra)
            result["failures"] = failures(name)
            (HERE / "results" / f"{name}.json").write_text(json.dumps(result, indent=1))
            print(f"--- {name}: {result['executions']} executions, cov {result['cov']} ft {result['ft']}, "
                  f"{len(result['failures'])} failures, stops {result['stops']}", flush=True)
        if args.promote:
            for made in promote(name):
                print(f"    regression file {made}", flush=True)
        if args.report:
            report(args.report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
