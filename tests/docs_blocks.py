"""Run the code blocks of a Markdown document as a reader would paste them (used by tests/test_docs_blocks.py).

The conventions, by a fenced block's info string (its first word is the language, the words after it flags):

- ```python: run. All ```python blocks of one document run in order in ONE Python session (one namespace), so a
  later block may use the names an earlier one defined, as in a notebook. The flag ``mxnet`` (```python mxnet)
  runs the block in a second session under ``.venv-mxnet/bin/python`` (real MXNet 1.9.1 needs NumPy < 1.24);
  the two sessions share no names.
- ```sh / ```bash / ```shell: run as one bash script with ``set -euo pipefail``; every command must succeed.
- ```console: lines starting with ``$ `` are commands, run one by one with bash; the lines after a command are
  its expected output (standard output, each line compared with trailing spaces removed; a line ``...`` stands
  for any number of lines). A command with no lines after it is only required to succeed.
- ```text and ```json: shown to the reader (output, file contents), never run. ```text output is the standard
  output of the block just before it, compared as a console block's output is (``...`` for any lines). Any other
  language, or a fence without one, is an error: every block says what it is.

Every block of a document runs in one fresh temporary folder, in document order (Python, MXNet and shell blocks
interleaved), so a block may read the files an earlier block wrote. The folder looks like the top of a checkout:
``.venv``, ``.venv-mxnet``, ``examples`` and ``benchmarks`` are links to the project's. Shell blocks find the
project's ``.venv/bin`` first on ``PATH`` (``python``, ``tensorfile``), and the project's ``src`` is on
``PYTHONPATH``. Nothing may need the network or a GPU.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parent.parent
SESSION = Path(__file__).resolve().parent / "docs_session.py"
MXNET_PYTHON = ROOT / ".venv-mxnet" / "bin" / "python"
NOT_RUN = {"text", "json"}
SHELL = {"sh", "bash", "shell"}
LINKED = (".venv", ".venv-mxnet", "examples", "benchmarks")
BLOCK_TIMEOUT = 300  # seconds, one block


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, flags, source and the 1-based line of its first source line."""

    path: Path
    line: int
    language: str
    flags: tuple[str, ...]
    source: str

    @property
    def where(self) -> str:
        try:
            name = self.path.relative_to(ROOT)
        except ValueError:
            name = self.path
        return f"{name}:{self.line} (```{' '.join((self.language, *self.flags)).strip()})"


class DocBlockError(AssertionError):
    """A block failed, or is not a kind the docs test knows."""


def documents() -> list[Path]:
    """README.md, README.ko.md and every Markdown file under docs/, sorted."""
    found = [ROOT / "README.md", ROOT / "README.ko.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [path for path in found if path.is_file()]


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of one Markdown file, in order (indented code blocks are not allowed)."""
    text = path.read_text(encoding="utf-8")
    out = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type == "code_block":
            raise DocBlockError(f"{path}:{token.map[0] + 1}: an indented code block; fence it with a language")
        if token.type != "fence":
            continue
        words = token.info.split()
        language, flags = (words[0].lower(), tuple(words[1:])) if words else ("", ())
        out.append(Block(path, token.map[0] + 2, language, flags, token.content))
    return out


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether output lines match the expected ones, where an expected line ``...`` stands for any lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and actual[0] == expected[0] and matches(expected[1:], actual[1:])


def console_commands(block: Block) -> list[tuple[int, str, list[str]]]:
    """A ```console block as (line, command, expected output lines)."""
    commands: list[tuple[int, str, list[str]]] = []
    for offset, line in enumerate(block.source.splitlines()):
        if line.startswith("$ "):
            commands.append((block.line + offset, line[2:], []))
        elif not commands:
            raise DocBlockError(f"{block.where}: a console block starts with a command line, '$ ...'")
        else:
            commands[-1][2].append(line.rstrip())
    return commands


class Session:
    """A Python process that runs blocks in one namespace (tests/docs_session.py)."""

    def __init__(self, python: Path | str, cwd: Path, env: dict[str, str], out: IO[bytes], log: IO[bytes]) -> None:
        read, write = os.pipe()
        self.process = subprocess.Popen([str(python), str(SESSION), str(write)], stdin=subprocess.PIPE, stdout=out,
                                        stderr=log, cwd=cwd, env=env, pass_fds=(write,))  # fmt: skip
        os.close(write)
        self.answers = os.fdopen(read, "r")

    def run(self, block: Block) -> str | None:
        """None when the block ran, else the traceback."""
        request = {"source": block.source, "path": str(block.path), "line": block.line}
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()
        ready, _, _ = select.select([self.answers], [], [], BLOCK_TIMEOUT)
        if not ready:
            self.process.kill()
            return f"timed out after {BLOCK_TIMEOUT} s"
        line = self.answers.readline()
        if not line:
            return f"the Python session ended (exit code {self.process.wait()})"
        answer = json.loads(line)
        return None if answer["ok"] else answer["error"]

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.answers.close()


def environment() -> dict[str, str]:
    """The variables blocks run with: the project's .venv/bin first on PATH, its src on PYTHONPATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT / "src"), env.get("PYTHONPATH", "")] if p)
    return env


def needs_mxnet(path: Path) -> bool:
    return any(block.language == "python" and "mxnet" in block.flags for block in blocks(path))


def run_document(path: Path, workdir: Path, *, mxnet_python: Path = MXNET_PYTHON) -> list[Block]:
    """Run every block of ``path`` in ``workdir`` (empty); returns the blocks run. Raises DocBlockError."""
    for name in LINKED:
        if (ROOT / name).exists():
            (workdir / name).symlink_to(ROOT / name)
    env = environment()
    sessions: dict[str, Session] = {}
    ran = []
    out_path, log_path = workdir.parent / f"{workdir.name}.out", workdir.parent / f"{workdir.name}.err"
    printed = ""  # the standard output of the last block run
    with open(out_path, "ab") as out, open(log_path, "ab") as log:
        try:
            for block in blocks(path):
                if block.language == "text" and block.flags == ("output",):
                    expected = [line.rstrip() for line in block.source.splitlines()]
                    if not ran or not matches(expected, [line.rstrip() for line in printed.splitlines()]):
                        raise DocBlockError(f"{block.where}: the block before printed\n{printed}but this block shows\n"
                                            f"{block.source}")  # fmt: skip
                    continue
                if block.language in NOT_RUN:
                    continue
                start_out, start_log = out.tell(), log.tell()
                error = _run_block(block, workdir, env, out, log, sessions, mxnet_python)
                out.flush()
                log.flush()
                printed = out_path.read_bytes()[start_out:].decode(errors="replace")
                if error is not None:
                    stderr = log_path.read_bytes()[start_log:].decode(errors="replace")
                    raise DocBlockError(f"{block.where} failed:\n{error}\n--- standard output ---\n{printed[-3000:]}"
                                        f"--- standard error ---\n{stderr[-3000:]}")  # fmt: skip
                ran.append(block)
        finally:
            for session in sessions.values():
                session.close()
    return ran


def _run_block(block: Block, cwd: Path, env: dict[str, str], out: IO[bytes], log: IO[bytes],
               sessions: dict[str, Session], mxnet_python: Path) -> str | None:  # fmt: skip
    if block.language == "python":
        unknown = set(block.flags) - {"mxnet"}
        if unknown:
            raise DocBlockError(f"{block.where}: unknown flag(s) {sorted(unknown)}; the only one is 'mxnet'")
        kind = "mxnet" if "mxnet" in block.flags else "python"
        if kind not in sessions:
            sessions[kind] = Session(mxnet_python if kind == "mxnet" else sys.executable, cwd, env, out, log)
        return sessions[kind].run(block)
    if block.language in SHELL:
        if any(line.startswith("$ ") for line in block.source.splitlines()):
            raise DocBlockError(f"{block.where}: '$ ' prompts belong in a ```console block")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.source], cwd=cwd, env=env, stdout=out,
                              stderr=log, timeout=BLOCK_TIMEOUT)  # fmt: skip
        return None if done.returncode == 0 else f"exit code {done.returncode}"
    if block.language == "console":
        for line, command, expected in console_commands(block):
            done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                  stderr=log, timeout=BLOCK_TIMEOUT)  # fmt: skip
            out.write(done.stdout)
            if done.returncode != 0:
                return f"line {line}: `{command}` exited with {done.returncode}"
            actual = [s.rstrip() for s in done.stdout.decode(errors="replace").splitlines()]
            if expected and not matches(expected, actual):
                return (f"line {line}: `{command}` printed\n" + "\n".join(actual) + "\nbut the document shows\n"
                        + "\n".join(expected))  # fmt: skip
        return None
    what = f"language '{block.language}'" if block.language else "no language"
    raise DocBlockError(f"{block.where}: a block with {what}; use python, python mxnet, sh, console, text or json")
