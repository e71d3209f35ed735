# Copyright 2026 The HuggingFace Inc. team. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Every Python snippet of README.md, docs/source/en/*.md and the checkpoint families' pages in
docs/source/en/model_doc/ runs as written, and shows what the page says it shows.

The convention, for whoever writes the docs:

- A ```py / ```python block runs. The blocks of one page run in order in one namespace (like a notebook), in a
  temporary working directory, so a page may build a config in one block and use it in the next.
- A ```text block right after a Python block is its expected output: what the block prints, then the `repr` of its
  last line when that is an expression (as in a Python prompt). When the block raises, it is `ExceptionName: message`.
  A line ending in `...` matches any line that starts with the text before it.
- `<!-- doc-test: skip REASON -->` on the line before a block skips it; the reason must say what it needs (a Hub
  download, a GPU, a real checkpoint), and skips are listed in the test output.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest


REPOSITORY = Path(__file__).resolve().parents[2]
DOCS = REPOSITORY / "docs" / "source" / "en"
# The checkpoint families' model pages (`model_doc/` holds upstream's pages too in the patched tree).
MODEL_PAGES = [
    DOCS / "model_doc" / f"{name}.md" for name in ("deci", "gpt_oss_puzzle", "nemotron_h_puzzle", "nemotron_nas")
]
PAGES = [REPOSITORY / "README.md", *sorted(DOCS.glob("*.md")), *MODEL_PAGES]
SKIP_MARKER = re.compile(r"^<!-- doc-test: skip (?P<reason>\S.*?) -->$")
FENCE = re.compile(r"^(?P<indent> *)```(?P<language>[\w-]*)\s*$")  # indented: a block inside a list item


@dataclass
class Snippet:
    line: int  # 1-based line of the opening fence
    code: str
    expected: str | None
    skip_reason: str | None


def snippets(page: Path) -> list[Snippet]:
    """The Python blocks of `page`, each with the text block that follows it and its skip marker, if any."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = []  # (language, first line index, body, index of the line after the closing fence)
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].lstrip().startswith("```"))
        body = textwrap.dedent("\n".join(lines[index + 1 : end]))
        blocks.append((opening["language"], index, body, end + 1))
        index = end + 1
    found = []
    for position, (language, start, body, after) in enumerate(blocks):
        if language not in ("py", "python"):
            continue
        following = blocks[position + 1] if position + 1 < len(blocks) else None
        is_output = (
            following is not None
            and following[0] == "text"
            and all(not line.strip() for line in lines[after : following[1]])
        )
        marker = SKIP_MARKER.match(lines[start - 1].strip()) if start else None
        found.append(
            Snippet(start + 1, body, following[2] if is_output else None, marker["reason"] if marker else None)
        )
    return found


def run(code: str, namespace: dict) -> str:
    """Runs `code` as a Python prompt would: its prints, then the `repr` of a final expression that is not None."""
    tree = ast.parse(code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(tree, "<snippet>", "exec"), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<snippet>", "eval"), namespace)
            if value is not None:
                print(repr(value))
    return output.getvalue()


def matches(actual: str, expected: str) -> bool:
    actual_lines = [line.rstrip() for line in actual.strip().splitlines()]
    expected_lines = [line.rstrip() for line in expected.strip().splitlines()]
    return len(actual_lines) == len(expected_lines) and all(
        got.startswith(want[:-3]) if want.endswith("...") else got == want
        for got, want in zip(actual_lines, expected_lines)
    )


def page_id(page: Path) -> str:
    return str(page.relative_to(REPOSITORY))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_snippets_run_and_show_what_the_page_says(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets save checkpoints into the working directory
    namespace = {"__name__": f"doc_snippets_{page.stem}"}
    found = snippets(page)
    for snippet in found:
        where = f"{page_id(page)}:{snippet.line}"
        if snippet.skip_reason is not None:
            print(f"skipped {where}: {snippet.skip_reason}")
            continue
        try:
            actual = run(snippet.code, namespace)
        except Exception as error:
            if snippet.expected is None or not snippet.expected.strip().startswith(type(error).__name__):
                pytest.fail(f"{where} raised:\n{traceback.format_exc()}")
            actual = f"{type(error).__name__}: {error}"
        if snippet.expected is not None:
            assert matches(actual, snippet.expected), f"{where} shows\n{actual}\nbut the page says\n{snippet.expected}"


def test_the_pages_have_snippets_and_every_skip_gives_a_reason():
    assert len(PAGES) >= 2
    all_snippets = [snippet for page in PAGES for snippet in snippets(page)]
    assert len(all_snippets) >= 10
    assert all(len(snippet.skip_reason) > 10 for snippet in all_snippets if snippet.skip_reason is not None)


README_REFUSALS = ("Refused with a `HeterogeneousConfigError`", "## Supported architectures")
GUIDE_REFUSALS = ("## What is refused", "## Save and load")
REFUSAL_ERRORS = ("HeterogeneousConfigError", "UnsupportedArchitectureError")


def refusals(page: Path, bounds: tuple[str, str]) -> dict[str, str]:
    """The bullets of a page's list of what is refused: bold title -> the bullet's text (with its blocks)."""
    text = page.read_text(encoding="utf-8")
    start = text.index(bounds[0])
    section = text[start : text.index(bounds[1], start)]
    parts = re.split(r"^- \*\*(.+?)\*\*", section, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def refusal_kinds() -> list[str]:
    """The kinds of refusal the README lists (the guide lists the same ones; see the test below)."""
    return list(refusals(REPOSITORY / "README.md", README_REFUSALS))


def test_the_readme_and_the_guide_list_the_same_refusals_each_shown_by_a_run_example():
    """The README's list of what is refused and the guide's are the same list, and each kind in the guide has an
    example that `test_python_snippets_run_and_show_what_the_page_says` runs: the code refuses it with the error
    shown."""
    readme = refusals(REPOSITORY / "README.md", README_REFUSALS)
    guide_page = REPOSITORY / "docs" / "source" / "en" / "heterogeneity.md"
    guide = refusals(guide_page, GUIDE_REFUSALS)
    assert list(readme) == list(guide) and len(readme) >= 10
    examples = {snippet.line: snippet for snippet in snippets(guide_page)}
    text = guide_page.read_text(encoding="utf-8")
    section_start = text.index(GUIDE_REFUSALS[0])
    for title, bullet in guide.items():
        first_line = text[: text.index(f"- **{title}**", section_start)].count("\n") + 1
        last_line = first_line + bullet.count("\n")
        shown = [
            snippet
            for line, snippet in examples.items()
            if first_line < line <= last_line and snippet.expected and snippet.skip_reason is None
        ]
        assert any(snippet.expected.strip().startswith(REFUSAL_ERRORS) for snippet in shown), title
