"""Keep TensorFlow's start-up log lines off the demo's terminal, without touching what TensorFlow computes.

TensorFlow writes C++ log lines to standard error when it starts (absl's "All log messages before
absl::InitializeLog()", CPU-feature and oneDNN notices, ``I0000 00:00:...`` lines); ``TF_CPP_MIN_LOG_LEVEL=3``
hides most of them, but not every build honours it for every line, and setting ``TF_ENABLE_ONEDNN_OPTS=0``
would change the numerics. So the demo runs itself as a child process and copies the child's standard error
line by line, leaving out only lines of those shapes (:data:`NOISE`); standard output is the terminal's own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

#: A line of TensorFlow's (absl's) C++ logging, or one of its start-up notices.
NOISE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.]+:\d+\]"  # absl: I0000 00:00:1796212717.734333  22961 file.cc:227]
    r"|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] (?:tensorflow|external|third_party)/\S+:\d+\]"  # TF's own
    r"|^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags"
)
#: Set in the child, so that it does not start a child of its own.
CHILD = "TENSORFILE_QUIET_LOGS_CHILD"


def run_filtered(argv: list[str]) -> int:
    """Run ``python argv...`` with TensorFlow's log lines left out of its standard error; its exit code."""
    env = {**os.environ, CHILD: "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with subprocess.Popen([sys.executable, *argv], stderr=subprocess.PIPE, env=env) as child:
        assert child.stderr is not None
        for line in child.stderr:
            if not NOISE.match(line.decode(errors="replace")):
                sys.stderr.buffer.write(line)
                sys.stderr.flush()
    return child.returncode


def in_child() -> bool:
    """True in the filtered child process."""
    return os.environ.get(CHILD) == "1"
