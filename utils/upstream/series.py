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
"""The upstream patch series: this repository's feature as commits on the pristine `transformers==5.23.0` source.

The series is defined by `utils/upstream/series/<NN-name>/` (see `utils/upstream/README.md`) and regenerated from the
repository on every run, so the files it copies are always this repository's files.

    python utils/upstream/series.py build     # pristine sdist -> git tree of the series -> dist/upstream/*.patch
    python utils/upstream/series.py export    # write the tree's commits (edited by hand) back into series/
    python utils/upstream/series.py apply     # a fresh pristine tree with dist/upstream/*.patch applied by `git am`

Only the standard library is used: the script runs before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path


UPSTREAM_VERSION = "5.23.0"
BASE_TAG = f"v{UPSTREAM_VERSION}"
REPOSITORY = Path(__file__).resolve().parents[2]
SERIES_DIR = REPOSITORY / "utils" / "upstream" / "series"
COVER_LETTER = REPOSITORY / "utils" / "upstream" / "cover_letter.md"
OVERLAY_ONLY = REPOSITORY / "utils" / "upstream" / "overlay_only.txt"
WORK_DIR = REPOSITORY / "build" / "upstream"  # ignored: the sdist cache and the git trees
SDIST = WORK_DIR / f"transformers-{UPSTREAM_VERSION}.tar.gz"
SERIES_TREE = WORK_DIR / "series-tree"
CHECK_TREE = WORK_DIR / "check-tree"
PATCH_DIR = REPOSITORY / "dist" / "upstream"
# Every file of these folders goes into the series, or is listed in overlay_only.txt.
COVERED_ROOTS = ("src/", "tests/heterogeneity/", "docs/source/en/")
PACKAGE = "transformers.heterogeneity"

# Fixed identity and date: a rerun writes byte-identical patches, so the series diffs cleanly between runs.
AUTHOR = ("transformers-heterogeneity", "transformers-heterogeneity@users.noreply.github.com")
DATE = "2026-01-01T00:00:00+0000"
GIT_ENV = {
    "GIT_AUTHOR_NAME": AUTHOR[0],
    "GIT_AUTHOR_EMAIL": AUTHOR[1],
    "GIT_AUTHOR_DATE": DATE,
    "GIT_COMMITTER_NAME": AUTHOR[0],
    "GIT_COMMITTER_EMAIL": AUTHOR[1],
    "GIT_COMMITTER_DATE": DATE,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


class SeriesError(RuntimeError):
    """The series definition is inconsistent, or does not apply to the pristine source."""


@dataclass
class HeldBack:
    """A top-level definition of a copied file that arrives in a later commit.

    `replacement` is `None` to leave the definition out, or the source of the value the definition has meanwhile.
    """

    path: str
    name: str
    replacement: str | None


@dataclass
class SeriesCommit:
    """One commit of the series, read from its folder.

    Files of the folder:
        message: the commit message (subject line, blank line, body that says why).
        files: repository paths (glob patterns, `#` comments) copied into the tree at the same path, or, for a line
            `PATTERN => FOLDER/`, under FOLDER in place of the pattern's folder (the families' upstream-style tests go
            to upstream's `tests/models/`).
        upstream.diff: the commit's edits of upstream files, a `git diff` against the tree left by the commits before.
        counterparts: present for a generic fix (no call into the package): the package symbols (`module:name`) with
            which the overlay gives heterogeneous models the same fix.
        held_back: `PATH NAME` or `PATH NAME = VALUE` lines: top-level definitions of copied files that a later
            commit brings (e.g. the registry rows), with the top-level statements that import or use them.
        registered_by_overlay: `module:name` lines: package functions that the overlay calls at run time to register
            what this commit writes into upstream's own tables (the Auto mappings), where the series makes no call.
        PENDING: the slot is reserved but not in the series yet; the file says why. Such a commit is left out.
    """

    name: str
    directory: Path
    subject: str
    body: str
    patterns: list[str]
    upstream_diff: str
    counterparts: list[str]
    held_back: list[HeldBack]
    pending: str | None
    registered_by_overlay: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    # Where each copied file goes in the tree (its repository path unless the `files` line names a folder).
    destinations: dict[str, str] = field(default_factory=dict)
    # Filled by `build`: for each upstream file the commit edits, the definitions it edits and the lines added/removed.
    upstream_changes: list[tuple[str, list[str], int, int]] = field(default_factory=list)

    @property
    def is_generic_fix(self) -> bool:
        return bool(self.counterparts)

    @property
    def message(self) -> str:
        return f"{self.subject}\n\n{self.body}\n" if self.body else f"{self.subject}\n"


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _read_commit(directory: Path) -> SeriesCommit:
    message_file = directory / "message"
    if not message_file.is_file():
        raise SeriesError(f"{directory.relative_to(REPOSITORY)} has no `message` file.")
    subject, _, body = message_file.read_text(encoding="utf-8").strip().partition("\n")
    held_back = []
    for line in _lines(directory / "held_back"):
        target, _, replacement = line.partition("=")
        path, name = target.split()
        held_back.append(HeldBack(path, name, replacement.strip() or None))
    diff_file = directory / "upstream.diff"
    pending_file = directory / "PENDING"
    return SeriesCommit(
        name=directory.name,
        directory=directory,
        subject=subject.strip(),
        body=body.strip(),
        patterns=_lines(directory / "files"),
        upstream_diff=diff_file.read_text(encoding="utf-8") if diff_file.is_file() else "",
        counterparts=_lines(directory / "counterparts"),
        held_back=held_back,
        pending=" ".join(pending_file.read_text(encoding="utf-8").split()) if pending_file.is_file() else None,
        registered_by_overlay=_lines(directory / "registered_by_overlay"),
    )


def repository_files() -> list[str]:
    """Tracked and untracked (not ignored) files of the repository, as the series copies them."""
    output = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(path for path in output.splitlines() if (REPOSITORY / path).is_file())


def load_series(files: list[str] | None = None) -> list[SeriesCommit]:
    """The commits of the series in order, pending ones included, each with the repository files it copies.

    Raises:
        SeriesError: a file of `COVERED_ROOTS` is in no commit (nor in overlay_only.txt) or in two, a pattern matches
            nothing, or a held-back definition is never brought by a later commit.
    """
    files = repository_files() if files is None else files
    commits = [_read_commit(directory) for directory in sorted(SERIES_DIR.iterdir()) if directory.is_dir()]
    overlay_only = set(_lines(OVERLAY_ONLY))
    owner: dict[str, str] = {}
    held_by: dict[str, str] = {}  # a file held back by a commit is copied again, complete, by one later commit
    for commit in commits:
        for line in commit.patterns:
            pattern, _, folder = (part.strip() for part in line.partition("=>"))
            matched = [path for path in files if fnmatch.fnmatchcase(path, pattern)]
            if not matched:
                raise SeriesError(f"series/{commit.name}/files: `{pattern}` matches no file of the repository.")
            source_folder = re.split(r"[*?[]", pattern)[0].rpartition("/")[0] + "/"
            for path in matched:
                commit.destinations[path] = folder + path.removeprefix(source_folder) if folder else path
                if path in overlay_only:
                    raise SeriesError(f"{path} is overlay-only (overlay_only.txt) but series/{commit.name} copies it.")
                if path in owner and owner[path] != commit.name and held_by.pop(path, None) != owner[path]:
                    raise SeriesError(f"{path} is copied by both series/{owner[path]} and series/{commit.name}.")
                owner[path] = commit.name
                if path not in commit.files:
                    commit.files.append(path)
        held_by.update((held.path, commit.name) for held in commit.held_back)
    uncovered = [
        path
        for path in files
        if path.startswith(COVERED_ROOTS)
        and path not in owner
        and path not in overlay_only
        and "__pycache__" not in path
    ]
    if uncovered:
        raise SeriesError(
            f"{uncovered} belong to no commit of the series: add each to the `files` of the commit it belongs to "
            "(utils/upstream/series/*/files), or to utils/upstream/overlay_only.txt if only the overlay needs it."
        )
    for position, commit in enumerate(commits):
        for held in commit.held_back:
            if held.path not in commit.files or commit.destinations[held.path] != held.path:
                raise SeriesError(f"series/{commit.name}/held_back names {held.path}, which the commit does not copy.")
            if not any(held.path in later.files for later in commits[position + 1 :] if later.pending is None):
                raise SeriesError(
                    f"series/{commit.name} holds back `{held.name}` of {held.path}, but no later commit copies it."
                )
    return commits


def hold_back(source: str, held: HeldBack) -> str:
    """`source` with `held.replacement` as the value of the top-level `held.name`, or without that definition and the
    top-level statements that import or use it (`app.command()(derive)`), which arrive with it."""
    tree = ast.parse(source)
    definition, users = None, []
    for node in tree.body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        names = [getattr(node, "name", None), *(getattr(target, "id", None) for target in targets)]
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            users += [node] if any((alias.asname or alias.name) == held.name for alias in node.names) else []
        elif held.name in names:
            definition = node
        elif isinstance(node, ast.Expr) and any(getattr(n, "id", None) == held.name for n in ast.walk(node)):
            users.append(node)
    if definition is None and not users:
        raise SeriesError(f"{held.path} has no top-level `{held.name}` to hold back (renamed? update `held_back`).")
    lines = source.splitlines(keepends=True)
    if held.replacement is not None:  # the name stays defined: what uses it stays too
        value = definition.value
        head = "".join(lines[: value.lineno - 1]) + lines[value.lineno - 1][: value.col_offset]
        tail = lines[value.end_lineno - 1][value.end_col_offset :] + "".join(lines[value.end_lineno :])
        return head + held.replacement + tail
    removed = set()
    for node in [definition, *users] if definition is not None else users:
        start = min([node.lineno, *(decorator.lineno for decorator in getattr(node, "decorator_list", []))])
        end = node.end_lineno
        if node is definition:
            while end < len(lines) and not lines[end].strip():  # the blank lines that separated it
                end += 1
        removed.update(range(start - 1, end))
    return "".join(line for number, line in enumerate(lines) if number not in removed)


def _git(tree: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["git", *args], cwd=tree, input=stdin, capture_output=True, text=True, env={**os.environ, **GIT_ENV}
    )
    if result.returncode != 0:
        raise SeriesError(f"`git {' '.join(args)}` failed in {tree}:\n{result.stdout}{result.stderr}")
    return result.stdout


def ensure_sdist() -> Path:
    """The pristine sdist from the package registry, downloaded once into the ignored `build/upstream/`."""
    if not SDIST.is_file():
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                f"transformers=={UPSTREAM_VERSION}", "--dest", str(WORK_DIR),
            ],
            check=True,
        )  # fmt: skip
    return SDIST


def pristine_tree(tree: Path) -> None:
    """`tree`: a fresh git repository holding the unpacked sdist as its one commit, tagged `v5.23.0`."""
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    prefix = f"transformers-{UPSTREAM_VERSION}/"
    with tarfile.open(ensure_sdist()) as archive:
        members = [member for member in archive.getmembers() if member.name.startswith(prefix)]
        for member in members:
            member.name = member.name[len(prefix) :]
        archive.extractall(tree, members=[member for member in members if member.name], filter="data")
    _git(tree, "init", "--quiet", "--initial-branch=main")
    # Hunk headers name the Python function or class they are in (in `git diff` and the patches), not the file's last
    # unindented line; `.git/info/` is not part of the tree.
    (tree / ".git" / "info").mkdir(parents=True, exist_ok=True)
    (tree / ".git" / "info" / "attributes").write_text("*.py diff=python\n", encoding="utf-8")
    _git(tree, "add", "--all", "--force")
    _git(tree, "commit", "--quiet", "--no-verify", "-m", f"transformers {UPSTREAM_VERSION} (sdist from PyPI)")
    _git(tree, "tag", BASE_TAG)


def apply_commit(tree: Path, commit: SeriesCommit) -> None:
    """Copies the commit's files, holds back what later commits bring, applies its upstream edits and commits."""
    for path in commit.files:
        target = tree / commit.destinations[path]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPOSITORY / path, target)
    for held in commit.held_back:
        target = tree / held.path
        target.write_text(hold_back(target.read_text(encoding="utf-8"), held), encoding="utf-8")
    if commit.upstream_diff:
        try:
            _git(tree, "apply", "--check", stdin=commit.upstream_diff)
        except SeriesError as error:
            raise SeriesError(
                f"series/{commit.name}/upstream.diff no longer applies: {error}\nRebuild up to the commit before, edit "
                "the tree by hand, commit, and run `python utils/upstream/series.py export`."
            ) from error
        _git(tree, "apply", stdin=commit.upstream_diff)
    _git(tree, "add", "--all", "--force")
    _git(tree, "commit", "--quiet", "--no-verify", "--allow-empty", "-F", "-", stdin=commit.message)


def _module_of(path: str) -> str | None:
    if not path.endswith(".py") or not path.startswith("src/"):
        return None
    module = path[len("src/") : -len(".py")].replace("/", ".")
    return module.removesuffix(".__init__")


def _top_level_package_imports(path: Path, module: str) -> set[str]:
    """The package modules that `module` imports when it is imported (not inside functions nor `TYPE_CHECKING`)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    imported = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            if name.startswith(PACKAGE):
                imported.add(name)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names if alias.name.startswith(PACKAGE))
    return imported


def check_import_closure(tree: Path, commit: SeriesCommit) -> None:
    """Every package module in the tree, and every model file of the series (the checkpoint families), imports only
    package modules that the tree has (each commit stands alone)."""
    present = {}
    for path in (tree / "src" / "transformers" / "heterogeneity").rglob("*.py"):
        present[_module_of(str(path.relative_to(tree)))] = path
    importers = dict(present)
    for path in (tree / "src" / "transformers" / "models").glob("*/*.py"):
        if "heterogeneity" in path.read_text(encoding="utf-8"):
            importers[_module_of(str(path.relative_to(tree)))] = path
    missing = []
    for module, path in importers.items():
        for imported in _top_level_package_imports(path, module):
            if imported not in present:
                missing.append(f"{module} imports {imported}")
    if missing:
        raise SeriesError(
            f"After series/{commit.name} the package cannot be imported: {missing}. Move the imported module into an "
            "earlier commit (its `files`)."
        )


def build(tree: Path = SERIES_TREE) -> list[SeriesCommit]:
    """The series as a git tree: the pristine sdist, then every commit that is not pending."""
    commits = load_series()
    pristine_tree(tree)
    for commit in commits:
        if commit.pending is None:
            apply_commit(tree, commit)
            check_import_closure(tree, commit)
            commit.upstream_changes = edited_definitions(tree, commit.upstream_diff)
    return commits


def edited_definitions(tree: Path, diff: str) -> list[tuple[str, list[str], int, int]]:
    """For each file of `diff` (applied in `tree`): the definitions (`Class.method`) its added and removed lines are in,
    in file order, and the number of lines added and removed."""
    changes = []
    for path, hunks in _hunks(diff).items():
        source = (tree / path).read_text(encoding="utf-8")
        scopes = _scopes(ast.parse(source))
        names, added, removed = [], 0, 0
        for new_line, lines in hunks:
            line_number = new_line
            for line in lines:
                if line.startswith("-"):
                    removed += 1
                    touched = line_number
                elif line.startswith("+"):
                    added += 1
                    touched = line_number
                    line_number += 1
                else:
                    line_number += 1
                    continue
                if not line[1:].strip():  # a blank line belongs to no definition in particular
                    continue
                name = next((qualname for start, end, qualname in scopes if start <= touched <= end), "module level")
                if name not in names:
                    names.append(name)
        changes.append((path, names, added, removed))
    return changes


def _hunks(diff: str) -> dict[str, list[tuple[int, list[str]]]]:
    files: dict[str, list[tuple[int, list[str]]]] = {}
    hunks = None
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            hunks = None
        elif line.startswith("+++ "):
            hunks = files.setdefault(line[len("+++ b/") :], [])
        elif line.startswith("@@") and hunks is not None:
            hunks.append((int(re.match(r"@@ -\S+ \+(\d+)", line).group(1)), []))
        elif hunks and line[:1] in ("+", "-", " "):
            hunks[-1][1].append(line)
    return files


def _scopes(tree: ast.Module) -> list[tuple[int, int, str]]:
    """(first line, last line, qualified name) of every function and class, innermost first."""
    scopes = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                scopes.append((child.lineno, child.end_lineno, name))
                visit(child, f"{name}.")

    visit(tree, "")
    return sorted(scopes, key=lambda scope: scope[1] - scope[0])


def cover_letter(commits: list[SeriesCommit]) -> tuple[str, str]:
    """The cover letter's subject and body (cover_letter.md, then the slots that are not in the series yet)."""
    subject, _, body = COVER_LETTER.read_text(encoding="utf-8").strip().partition("\n")
    body += "\n\nWhich upstream lines change (generated from the patches)\n" + "-" * 56 + "\n"
    for commit in commits:
        if commit.pending is None and commit.upstream_changes:
            body += f"\n{commit.subject}\n"
            for path, names, added, removed in commit.upstream_changes:
                body += f"    {path.removeprefix('src/transformers/')}: {', '.join(names)} (+{added} -{removed})\n"
    pending = [commit for commit in commits if commit.pending is not None]
    if pending:
        body += "\n\nNot in this series yet:\n" + "".join(
            f"\n- {commit.subject}: {commit.pending}" for commit in pending
        )
    return subject.strip().removeprefix("# ").strip(), body.strip()


def write_patches(tree: Path, commits: list[SeriesCommit], out_dir: Path = PATCH_DIR) -> list[Path]:
    """`git format-patch --cover-letter` of the tree into `out_dir` (its old patches removed first)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.patch"):
        old.unlink()
    _git(
        tree,
        "format-patch", "--quiet", "--cover-letter", "--no-signature", f"--base={BASE_TAG}",
        "--output-directory", str(out_dir), f"{BASE_TAG}..HEAD",
    )  # fmt: skip
    subject, body = cover_letter(commits)
    letter = next(out_dir.glob("0000-cover-letter.patch"))
    text = letter.read_text(encoding="utf-8")
    text = text.replace("*** SUBJECT HERE ***", subject).replace("*** BLURB HERE ***", body)
    letter.write_text(text, encoding="utf-8")
    return sorted(out_dir.glob("*.patch"))


def export(tree: Path = SERIES_TREE) -> None:
    """Writes each commit of `tree` after `v5.23.0` back into its series folder: message and upstream edits (every
    change to a file that the commit does not copy from this repository)."""
    commits = [commit for commit in load_series() if commit.pending is None]
    shas = _git(tree, "rev-list", "--reverse", f"{BASE_TAG}..HEAD").split()
    if len(shas) != len(commits):
        raise SeriesError(f"{tree} has {len(shas)} commits after {BASE_TAG}; the series has {len(commits)}.")
    for sha, commit in zip(shas, commits):
        changed = _git(tree, "diff", "--name-only", f"{sha}^", sha).split()
        copied = set(commit.destinations.values())
        upstream = [path for path in changed if path not in copied]
        diff = _git(tree, "diff", "--no-color", "--no-ext-diff", f"{sha}^", sha, "--", *upstream) if upstream else ""
        diff_file = commit.directory / "upstream.diff"
        if diff:
            diff_file.write_text(diff, encoding="utf-8")
        elif diff_file.exists():
            diff_file.unlink()
        message = _git(tree, "log", "-1", "--format=%B", sha).strip()
        (commit.directory / "message").write_text(message + "\n", encoding="utf-8")
        print(f"{commit.name}: {len(upstream)} upstream file(s)")


def apply_patches(tree: Path = CHECK_TREE, patch_dir: Path = PATCH_DIR) -> None:
    """A fresh pristine tree with the written series applied by `git am` (no fuzz: any mismatch fails)."""
    patches = sorted(path for path in patch_dir.glob("*.patch") if not path.name.startswith("0000-"))
    if not patches:
        raise SeriesError(f"No patches in {patch_dir}: run `make upstream-patch` first.")
    pristine_tree(tree)
    _git(tree, "am", "--quiet", "--whitespace=nowarn", *map(str, patches))
    print(f"{len(patches)} patches applied to transformers {UPSTREAM_VERSION} in {tree.relative_to(REPOSITORY)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "export", "apply"])
    arguments = parser.parse_args()
    try:
        if arguments.command == "build":
            commits = build()
            patches = write_patches(SERIES_TREE, commits)
            for patch in patches:
                print(patch.relative_to(REPOSITORY))
        elif arguments.command == "export":
            export()
        else:
            apply_patches()
    except SeriesError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
