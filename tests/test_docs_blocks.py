"""Every code block of README.md, README.ko.md and docs/**/*.md runs as written (conventions: tests/docs_blocks.py).

One test per document, so a failure names the file; the message names the block's line and shows its traceback
and output.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from docs_blocks import MXNET_PYTHON, ROOT, DocBlockError, blocks, documents, matches, needs_mxnet, run_document

DOCUMENTS = documents()
#: Documents run two at a time (their blocks run in subprocesses): the docs test takes about half as long on CI's
#: two cores. Each test waits for its own document.
WORKERS = 2


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    def run(path, workdir):
        try:
            run_document(path, workdir)
        except DocBlockError as exc:
            return str(exc)
        return None

    chosen = {item.callspec.params["path"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_every_block_runs"}  # fmt: skip  # those pytest selected
    todo = [p for p in DOCUMENTS if p in chosen and not (needs_mxnet(p) and not MXNET_PYTHON.exists())]
    todo.sort(key=lambda p: -p.stat().st_size)  # the longest first
    # the folders made here, one thread: tmp_path_factory is not thread-safe (two threads that make its base
    # folder at once each make one, and one of them then refuses the other's)
    workdirs = {path: tmp_path_factory.mktemp("doc") / "work" for path in todo}
    for workdir in workdirs.values():
        workdir.mkdir()
    with ThreadPoolExecutor(WORKERS) as pool:
        yield {path: pool.submit(run, path, workdirs[path]) for path in todo}


@pytest.mark.parametrize("path", DOCUMENTS, ids=[str(p.relative_to(ROOT)) for p in DOCUMENTS])
def test_every_block_runs(path, runs):
    if path not in runs:
        pytest.skip(f"{path.name} has MXNet blocks and {MXNET_PYTHON} is missing: `make test` builds it")
    failure = runs[path].result()
    if failure is not None:
        pytest.fail(failure, pytrace=False)


def test_the_documents_include_both_readmes_and_the_chapter_in_both_languages():
    names = {str(p.relative_to(ROOT)) for p in DOCUMENTS}
    assert {"README.md", "README.ko.md", "docs/en/file-io.md", "docs/ko/file-io.md"} <= names
    runnable = [b for b in blocks(ROOT / "docs" / "en" / "file-io.md") if b.language != "text"]
    assert {"python", "console"} <= {b.language for b in runnable}
    assert any("mxnet" in b.flags for b in runnable)


def test_the_readmes_link_to_each_other():
    assert "README.ko.md" in (ROOT / "README.md").read_text().split("\n\n", 2)[1]
    assert "README.md" in (ROOT / "README.ko.md").read_text().split("\n\n", 2)[1]


def _fresh(tmp_path):
    workdir = tmp_path / f"w{len(list(tmp_path.glob('w*')))}"
    workdir.mkdir()
    return workdir


def test_a_failing_block_is_reported_with_its_file_and_line(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# t\n\n```python\nx = 1\n```\n\n```sh\ntest -f made\n```\n\n```python\nmade = open('made', 'w')\n"
                   "made.close()\nprint('x is', x)\nx / 0\n```\n")  # fmt: skip
    with pytest.raises(DocBlockError, match=r"doc.md:8 \(```sh\) failed:\nexit code 1"):
        run_document(doc, _fresh(tmp_path))
    doc.write_text(doc.read_text().replace("test -f made", "test ! -f made"))
    workdir = _fresh(tmp_path)
    with pytest.raises(DocBlockError) as info:
        run_document(doc, workdir)
    message = str(info.value)
    assert "doc.md:12 (```python) failed" in message and f'File "{doc}", line 15' in message
    assert "ZeroDivisionError" in message and "x is 1" in message  # the names of the first block, its output
    assert os.path.exists(workdir / "made")


def test_console_output_is_compared_and_unknown_languages_refused(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("```console\n$ printf 'a\\nb\\nc\\n'\na\n...\nc\n$ echo hi\nhello\n```\n")
    with pytest.raises(DocBlockError, match=r"line 6: `echo hi` printed\nhi\nbut the document shows\nhello"):
        run_document(doc, _fresh(tmp_path))
    for fence in ("```\nx\n```\n", "```ruby\nputs 1\n```\n"):
        doc.write_text(fence)
        with pytest.raises(DocBlockError, match="use python, python mxnet, sh, console, text or json"):
            run_document(doc, _fresh(tmp_path))
    assert matches(["a", "...", "c"], ["a", "c"]) and not matches(["a"], ["a", "b"])


def test_an_output_block_is_compared_with_what_the_block_before_printed(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("```python\nprint('a'); print('b')\n```\n\n```text output\na\nb\n```\n\n```sh\necho c\n```\n\n"
                   "```text output\nd\n```\n")  # fmt: skip
    with pytest.raises(DocBlockError, match=r"doc.md:15 \(```text output\): the block before printed\nc\nbut"):
        run_document(doc, _fresh(tmp_path))
    doc.write_text(doc.read_text().replace("\nd\n", "\nc\n"))
    assert [b.line for b in run_document(doc, _fresh(tmp_path))] == [2, 11]


def _code(path):
    """A document's blocks with comments removed: what must be the same in each language."""
    return [(b.language, b.flags, [re.sub(r"\s+#.*$|^#.*$", "", line).rstrip() for line in b.source.splitlines()])
            for b in blocks(path)]  # fmt: skip


@pytest.mark.parametrize("english, korean", [("README.md", "README.ko.md"), ("docs/en/file-io.md", "docs/ko/file-io.md")])
def test_the_korean_pages_run_the_same_code_as_the_english_ones(english, korean):
    assert _code(ROOT / korean) == _code(ROOT / english)
