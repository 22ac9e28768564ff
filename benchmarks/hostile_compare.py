"""The hostile corpus (tests/hostile/make_corpus.py) through tensorfile and through other readers, side by side.

Every file goes through tensorfile (``load``, ``load(framework="numpy")``, ``open`` + every tensor, CLI ``ls``,
``info``, ``verify``, ``cat``: the acceptance harness of tests/hostile/worker.py) and, where the tool reads that
kind of file, through ``torch.load(weights_only=True)`` (torch zip and legacy files),
``safetensors.safe_open`` + ``get_tensor`` of every name (safetensors, tensorfile files, shards),
``np.load(allow_pickle=False)`` (``.npy`` / ``.npz``, every member) and picklescan's ``scan_file_path``
(pickle-bearing files; picklescan only scans, it loads nothing). Each runs in the same sandboxed worker
processes: 2 GiB address space, results checked for payload marker, process-state change, crash, hang
(12 s), > 10 s, > 256 MiB peak RSS growth.

Prints a markdown table (one row per file) and a summary per column.

    python benchmarks/hostile_compare.py [--out table.md] [--json results.json] [--corpus DIR] [-k SUBSTRING]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ROOT / "tests" / "hostile"
sys.path.insert(0, str(HOSTILE))

import make_corpus  # noqa: E402
import worker  # noqa: E402

TOOLS = {  # column -> (op, readers it applies to)
    "torch.load(weights_only=True)": ("cmp_torch", {"torch-zip", "torch-legacy"}),
    "safetensors": ("cmp_safetensors", {"safetensors", "tensorfile", "sharded-shard"}),
    "np.load(allow_pickle=False)": ("cmp_numpy", {"npy", "npz"}),
    "picklescan": ("cmp_picklescan", {"torch-zip", "torch-legacy", "npy", "npz"}),
}


def _kind(rel: str, entry: dict[str, Any]) -> str:
    if entry["reader"] == "sharded" and not rel.endswith(".json"):
        return "sharded-shard"  # a safetensors file in the sharded group (the Hugging Face blob)
    return entry["reader"]


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def ops_for_file(rel: str, entry: dict[str, Any], tools: dict[str, tuple[str, set[str]]]) -> list[str]:
    ops = worker.ops_for(entry, worker.OPS)
    kind = _kind(rel, entry)
    return ops + [op for op, kinds in tools.values() if kind in kinds]


def _limits_note(rec: dict[str, Any]) -> str:
    notes = []
    if rec.get("marker"):
        notes.append("**PAYLOAD RAN**")
    if rec.get("state"):
        notes.append("**process state changed**")
    if rec.get("rss_mib", 0) > worker.RSS_LIMIT_MIB:
        notes.append(f"**+{rec['rss_mib']:.0f} MiB**")
    if rec.get("secs", 0) > worker.TIME_LIMIT_S:
        notes.append(f"**{rec['secs']:.0f} s**")
    return ", ".join(notes)


def tool_cell(rec: dict[str, Any] | None, op: str) -> str:
    if rec is None:
        return ""
    outcome = rec["outcome"]
    if outcome == "died":
        cell = "**crash** (" + rec.get("message", "").split("worker ")[-1].split(" during")[0] + ")"
    elif outcome == "timeout":
        cell = "**hang** (killed after 12 s)"
    elif op == "cmp_picklescan":
        if outcome == "ok":
            cell = "clean"
        elif rec.get("exc_type") == "PicklescanFlagged":
            cell = "flagged: " + rec.get("message", "").split(": ", 1)[-1][:60]
        else:
            cell = f"scan error ({rec.get('exc_type')})"
    elif outcome == "ok":
        cell = "loaded"
    else:
        cell = f"refused ({rec.get('exc_type')})"
    note = _limits_note(rec)
    return f"{cell}, {note}" if note else cell


def tensorfile_cell(recs: list[dict[str, Any]], entry: dict[str, Any]) -> str:
    load = next(r for r in recs if r["op"] == "load")
    if load["outcome"] == "ok":
        cell = "loaded"
    elif load["outcome"] == "refused":
        cell = f"refused ({load.get('exc_type')})"
    elif load["outcome"] == "foreign":
        cell = f"**raised {load.get('exc_type')}** (not a TensorFileError)"
    else:
        cell = tool_cell(load, "load")
    bad = []
    for rec in recs:
        for p in worker.problems(rec, entry):
            bad.append(f"{rec['op']}: {p.split(':')[0]}")
    if bad:
        cell += " ✗ " + "; ".join(dict.fromkeys(bad))[:140]
    return cell


def table(records: list[dict[str, Any]], manifest: dict[str, dict[str, Any]], tools: dict[str, tuple[str, set[str]]]) -> str:
    by_file: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_file.setdefault(rec["file"], []).append(rec)
    cols = ["file", "expect", "tensorfile"] + list(tools)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    summary: dict[str, dict[str, int]] = {c: {} for c in ["tensorfile", *tools]}

    def count(col: str, key: str) -> None:
        summary[col][key] = summary[col].get(key, 0) + 1

    for rel, recs in by_file.items():
        entry = manifest[rel]
        tf_ops = [r for r in recs if not r["op"].startswith("cmp_")]
        row = [f"`{rel}`", entry["expect"], tensorfile_cell(tf_ops, entry)]
        hostile = entry["expect"] == "error"
        if any(worker.problems(r, entry) for r in tf_ops):
            count("tensorfile", "files failing the harness")
        for col, (op, _) in tools.items():
            rec = next((r for r in recs if r["op"] == op), None)
            row.append(tool_cell(rec, op))
            if rec is None:
                continue
            count(col, "files tried")
            if rec.get("marker"):
                count(col, "payload ran")
            if rec.get("state"):
                count(col, "process state changed")
            if rec["outcome"] in ("died", "timeout"):
                count(col, "crash or hang")
            if rec.get("rss_mib", 0) > worker.RSS_LIMIT_MIB:
                count(col, f"> {worker.RSS_LIMIT_MIB} MiB")
            if hostile and rec["outcome"] == "ok":
                count(col, "hostile file loaded" if op != "cmp_picklescan" else "hostile file called clean")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    out = ["\n".join(lines), "", "| column | summary |", "|---|---|"]
    for col, counts in summary.items():
        out.append(f"| {col} | " + (", ".join(f"{k}: {v}" for k, v in counts.items()) or "-") + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", metavar="DIR", help="build the corpus here (default: a temporary folder)")
    parser.add_argument("--out", metavar="TABLE.md", help="also write the table here")
    parser.add_argument("--json", metavar="RESULTS.json", help="write every result as JSON")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("-k", dest="only", action="append", help="only files whose name contains this (repeatable)")
    args = parser.parse_args(argv)
    tools = {col: spec for col, spec in TOOLS.items()
             if _available({"cmp_torch": "torch", "cmp_safetensors": "safetensors", "cmp_numpy": "numpy",
                            "cmp_picklescan": "picklescan"}[spec[0]])}
    for col in TOOLS.keys() - tools.keys():
        print(f"note: {col} is not installed; its column is left out", file=sys.stderr)
    folder = Path(args.corpus) if args.corpus else Path(tempfile.mkdtemp(prefix="hostile-corpus-"))
    t0 = time.perf_counter()
    make_corpus.build(folder)
    _, manifest = make_corpus.load_manifest(folder)
    files = [f for f in sorted(manifest) if not args.only or any(k in f for k in args.only)]
    records = worker.run_corpus(folder, files, jobs=args.jobs,
                                ops_for_file=lambda rel, entry: ops_for_file(rel, entry, tools))
    versions = []
    for module in ("tensorfile", "torch", "safetensors", "numpy", "picklescan"):
        try:
            from importlib.metadata import version

            versions.append(f"{module} {version(module)}")
        except Exception:  # noqa: BLE001
            pass
    text = table(records, {f: manifest[f] for f in files}, tools)
    header = (f"Hostile corpus: {len(files)} files ({sum(manifest[f]['expect'] == 'error' for f in files)} hostile), "
              f"{', '.join(versions)}; each file in a worker under a 2 GiB address-space limit; "
              f"{time.perf_counter() - t0:.0f} s.\n\n")
    print(header + text)
    if args.out:
        Path(args.out).write_text(header + text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"manifest": manifest, "results": records}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
