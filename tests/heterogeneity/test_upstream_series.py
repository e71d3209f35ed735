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
"""The upstream patch series and the overlay make the same calls into `transformers.heterogeneity`.

The overlay's calls are read from `activation.py`: the package functions called by each wrapper that holds a
`# hetero-patch:` line, and by the callbacks of its `_CALLBACKS` table. The series' calls are read from the diffs of
upstream files in `utils/upstream/series/*/upstream.diff`: the package functions that the added lines import and call.
Generic fixes (no call into the package) are matched with their overlay counterparts instead, and the overlay's run-time
registrations with the commit that writes the same entries into upstream's tables (`registered_by_overlay`).
Everything is read from files: no network, no sdist, and the same result inside the overlay and on the patched tree.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest


REPOSITORY = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPOSITORY / "src" / "transformers" / "heterogeneity"
ACTIVATION = PACKAGE_DIR / "activation.py"
SERIES_SCRIPT = REPOSITORY / "utils" / "upstream" / "series.py"
MARKER = "hetero-patch:"


def load_series_module():
    if "upstream_series" not in sys.modules:  # a script, not a package: loaded from its path once
        spec = importlib.util.spec_from_file_location("upstream_series", SERIES_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["upstream_series"] = module  # its dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules["upstream_series"]


@pytest.fixture(scope="module")
def commits():
    return load_series_module().load_series()


@dataclass(frozen=True)
class Call:
    """A call of a function by name, and where it is made."""

    name: str
    where: str


def overlay_calls() -> tuple[list[Call], list[Call]]:
    """The package functions the overlay calls in place of upstream code, and the functions of `activation.py` itself
    that it calls there (which the series cannot call, since it leaves `activation.py` out)."""
    source = ACTIVATION.read_text(encoding="utf-8")
    tree = ast.parse(source)
    package_names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
    }
    own_functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    marked_lines = [
        token.start[0]
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT and MARKER in token.string
    ]
    functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    scopes = {}  # the innermost function around each marked line: the wrapper that stands in for upstream code
    for line in marked_lines:
        around = [node for node in functions if node.lineno <= line <= node.end_lineno]
        if not around:
            raise AssertionError(f"activation.py:{line}: a `# {MARKER}` line outside any function")
        innermost = max(around, key=lambda node: node.lineno)
        scopes[innermost.lineno] = (innermost, line)
    callbacks = _callback_functions(tree)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in callbacks:
            scopes.setdefault(node.lineno, (node, None))
    package_calls, own_calls = [], []
    for node, line in scopes.values():
        reason = "a `_CALLBACKS` entry" if line is None else f"`# {MARKER}` at line {line}"
        for call in ast.walk(node):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
                where = f"activation.py:{call.lineno} (in `{_patch_of(functions, node)}`, {reason})"
                if call.func.id in package_names:
                    package_calls.append(Call(call.func.id, where))
                elif call.func.id in own_functions:
                    own_calls.append(Call(call.func.id, where))
    return package_calls, own_calls


def _callback_functions(tree: ast.Module) -> set[str]:
    """Functions that `_CALLBACKS` calls directly (not through `_apply` of a `patch_*`)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_CALLBACKS" for t in node.targets):
            return {
                entry.elts[1].id
                for entry in node.value.elts
                if isinstance(entry, ast.Tuple) and isinstance(entry.elts[1], ast.Name)
            }
    raise AssertionError("activation.py has no `_CALLBACKS` table")


def _patch_of(functions: list, node: ast.AST) -> str:
    outer = [f for f in functions if f.lineno <= node.lineno <= f.end_lineno and f.col_offset == 0]
    return outer[0].name if outer else node.name


IMPORT = re.compile(r"^\s*from\s+(?:\.+|transformers\.)(?:\w+\.)*heterogeneity(?:\.[\w.]+)?\s+import\s+(.+)$")


def series_calls(commit) -> list[Call]:
    """The package functions that the added lines of a commit's upstream diff import and call."""
    calls = []
    for path, added in _added_lines(commit.upstream_diff).items():
        names, pending = set(), None
        for line in added:
            if pending is not None:  # a parenthesised import continues
                pending += line
                if ")" not in line:
                    continue
                line, pending = pending, None
            match = IMPORT.match(line)
            if match is None:
                continue
            imported = match.group(1).partition("#")[0]
            if imported.strip().startswith("(") and ")" not in imported:
                pending = line
                continue
            names.update(name.split(" as ")[-1].strip() for name in imported.strip("() ").split(",") if name.strip())
        for line in added:
            if IMPORT.match(line):
                continue
            for name in names:
                if re.search(rf"(?<![\w.]){re.escape(name)}\(", line):
                    calls.append(Call(name, f"series/{commit.name} ({path})"))
    return calls


def _added_lines(diff: str) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    current = None
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            current = None
        elif line.startswith("+++ "):
            current = files.setdefault(line[len("+++ b/") :], [])
        elif line.startswith("+") and current is not None:
            current.append(line[1:])
    return files


def counterpart_names(commits) -> dict[str, str]:
    """The package symbols the overlay calls where the series makes no call: the counterparts of generic fixes, and the
    registrations of entries that a commit writes into upstream's own tables."""
    return {
        symbol.partition(":")[2]: commit.name
        for commit in commits
        for symbol in [*(commit.counterparts if commit.is_generic_fix else []), *commit.registered_by_overlay]
    }


def test_the_series_makes_every_call_the_overlay_makes(commits):
    package_calls, _ = overlay_calls()
    made = {call.name for commit in commits if commit.pending is None for call in series_calls(commit)}
    counterparts = counterpart_names(commits)
    missing = [call for call in package_calls if call.name not in made and call.name not in counterparts]
    assert not missing, "\n".join(
        f"The overlay calls `{call.name}` at {call.where}, but no upstream edit of the series does: add the call to the "
        "upstream file the patch stands in for (its docstring names it) in the `upstream.diff` of the series commit it "
        "belongs to (utils/upstream/README.md: build, edit the tree, export); if it is the overlay's form of a generic "
        "fix, list it in that fix's `counterparts`; if it registers what a commit writes into upstream's tables, in "
        "that commit's `registered_by_overlay`."
        for call in missing
    )


def test_the_overlay_makes_every_call_the_series_makes(commits):
    package_calls, _ = overlay_calls()
    overlay_names = {call.name for call in package_calls}
    extra = [
        call
        for commit in commits
        if commit.pending is None
        for call in series_calls(commit)
        if call.name not in overlay_names
    ]
    assert not extra, "\n".join(
        f"{call.where} calls `{call.name}`, but the overlay never does: add the call to the `activation.py` patch of "
        "that upstream function (on a `# hetero-patch:` line), or remove it from the series."
        for call in extra
    )


def test_the_overlay_calls_nothing_that_only_activation_has():
    _, own_calls = overlay_calls()
    assert not own_calls, "\n".join(
        f"The overlay calls `{call.name}` at {call.where}, a function of activation.py, which the series leaves out: "
        "move it into the package (a module the series copies) so that upstream's file can call it too."
        for call in own_calls
    )


def test_every_generic_fix_stands_alone_and_has_an_overlay_counterpart(commits):
    fixes = [commit for commit in commits if commit.is_generic_fix]
    assert fixes, "the series lists no generic fix"
    problems = []
    for commit in fixes:
        if commit.files:
            problems.append(
                f"series/{commit.name} is a generic fix but copies files of this repository: {commit.files}"
            )
        if commit.pending is None and not commit.upstream_diff:
            problems.append(f"series/{commit.name} is a generic fix without an `upstream.diff`")
        calls = series_calls(commit)
        if calls or "heterogeneity" in "".join(sum(_added_lines(commit.upstream_diff).values(), [])):
            problems.append(f"series/{commit.name} is a generic fix but its upstream edits use the package: {calls}")
        problems += _undefined_symbols(commit, "counterparts", commit.counterparts)
    assert not problems, "\n".join(problems)


def test_every_registration_the_overlay_makes_in_place_of_upstream_tables_exists(commits):
    problems = []
    for commit in commits:
        problems += _undefined_symbols(commit, "registered_by_overlay", commit.registered_by_overlay)
        if commit.registered_by_overlay and (commit.is_generic_fix or not commit.upstream_diff):
            problems.append(f"series/{commit.name}/registered_by_overlay needs upstream table edits of its own")
    assert not problems, "\n".join(problems)


def _undefined_symbols(commit, file_name: str, symbols: list[str]) -> list[str]:
    problems = []
    for symbol in symbols:
        module, _, name = symbol.partition(":")
        path = PACKAGE_DIR.joinpath(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if not path.is_file() or name not in _top_level_names(path):
            problems.append(
                f"series/{commit.name}/{file_name} names `{symbol}`, which the package does not define: if the "
                "overlay no longer needs it, remove the line; if it was renamed or moved, update it."
            )
    return problems


MAX_HUNK_LINES = 20  # an edit of an upstream file is a few lines calling into the package, never a rewrite


def test_every_edit_of_an_upstream_file_is_small(commits):
    """Generic fixes are upstream code of their own (they cannot call the package), so their size is not bounded here;
    every other edit calls into the package."""
    large = []
    for commit in (commit for commit in commits if not commit.is_generic_fix):
        hunk, added = None, 0
        for line in [*commit.upstream_diff.splitlines(), "@@ end"]:
            if line.startswith(("@@", "diff --git ")):
                if hunk is not None and added > MAX_HUNK_LINES:
                    large.append(f"series/{commit.name}: {hunk} adds {added} lines")
                hunk, added = (line, 0) if line.startswith("@@") else (None, 0)
            elif hunk is not None and line.startswith("+"):
                added += 1
    assert not large, (
        f"Edits of upstream files must stay small (at most {MAX_HUNK_LINES} added lines per hunk): move the work into "
        f"the package and call it. {large}"
    )


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
    return names


def test_the_divergence_check_sees_both_sides():
    """The readers find calls on both sides, so that an empty comparison cannot pass by reading nothing."""
    series = load_series_module().load_series()
    package_calls, _ = overlay_calls()
    expected = {"model_init_started", "model_init_finished", "adjust_cache_layer_types", "model_init_config"}
    assert expected <= {call.name for call in package_calls}
    made = {call.name for commit in series if commit.pending is None for call in series_calls(commit)}
    assert expected <= made


def test_series_readers_report_a_call_made_on_one_side_only():
    """A diff that calls one more package function is seen, with the commit and file in the message."""
    diff = (
        "diff --git a/src/transformers/cache_utils.py b/src/transformers/cache_utils.py\n"
        "--- a/src/transformers/cache_utils.py\n"
        "+++ b/src/transformers/cache_utils.py\n"
        "@@ -1,2 +1,5 @@\n"
        "+    from .heterogeneity.cache_utils import (\n"
        "+        layers_without_kv_cache,\n"
        "+    )\n"
        "+    skipped = layers_without_kv_cache(config)\n"
        " unchanged(line)\n"
    )

    class Commit:
        name = "99-example"
        upstream_diff = diff

    assert series_calls(Commit()) == [
        Call("layers_without_kv_cache", "series/99-example (src/transformers/cache_utils.py)")
    ]
