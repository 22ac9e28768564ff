"""One Python session for the docs test: runs a document's ```python blocks in order, in one namespace.

Started by ``tests/docs_blocks.py`` with the Python a block asks for (``.venv`` or ``.venv-mxnet``), standard
library only. Protocol: one JSON request per line on standard input (``{"source", "path", "line"}``), one JSON
answer per line on the file descriptor given as ``argv[1]`` (``{"ok": true}`` or ``{"ok": false, "error":
traceback}``), sent once the block's output is flushed. What a block prints goes to standard output and standard
error, which the test collects. Each block is compiled under the Markdown file's path with its own line numbers,
so a traceback points into the document.
"""

from __future__ import annotations

import builtins
import json
import os
import sys
import traceback


def main() -> None:
    answers = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    requests = sys.stdin
    sys.stdin = open(os.devnull)  # noqa: SIM115  # a block reading input gets EOF, not the next request
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    for line in requests:
        request = json.loads(line)
        try:
            code = compile("\n" * (request["line"] - 1) + request["source"], request["path"], "exec")
            exec(code, namespace)
        except BaseException:  # noqa: BLE001  # a SystemExit or KeyboardInterrupt in a block is a failure too
            sys.stdout.flush()
            answer = {"ok": False, "error": traceback.format_exc()}
        else:
            sys.stdout.flush()
            answer = {"ok": True}
        sys.stderr.flush()
        answers.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
