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
"""Output directories appear whole or not at all (`staging.py`), shown on `convert` as users run it: the command line
in its own process (`python -m transformers.heterogeneity.commands.cli`, what the overlay's console script runs, and
the form that also exists inside Transformers), killed for real with SIGKILL and SIGTERM, writing to a really full and
a really read-only file system (a tmpfs mounted in a user namespace, where the machine allows one)."""

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from transformers.heterogeneity.commands.cli import app
from transformers.heterogeneity.staging import OutputDirectoryError, staged_output_directory

from .checkpoints import write_deci_checkpoint, write_nemotron_checkpoint


runner = CliRunner()
CLI_MODULE = "transformers.heterogeneity.commands.cli"
COMMAND = [sys.executable, "-m", CLI_MODULE]
# Enough extra files that their progress lines (about 45 bytes each) overflow a pipe's buffer (64 KiB on Linux): a
# `convert` whose output is not read then blocks mid-way, with its staging directory in place, until it is killed.
EXTRA_FILES = 4000


def entries(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def staging_directories(directory: Path, name: str = "out") -> list[Path]:
    return sorted(path for path in directory.iterdir() if path.name.startswith(f".{name}."))


def test_the_output_gets_the_users_usual_permissions(tmp_path):
    source = write_deci_checkpoint(tmp_path / "src")
    previous = os.umask(0o027)
    try:
        result = runner.invoke(app, ["convert", str(source), str(tmp_path / "out")])
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    assert oct(stat.S_IMODE((tmp_path / "out").stat().st_mode)) == oct(0o750)  # 0o777 minus the umask, not 0o700


@pytest.mark.parametrize("exception", [RuntimeError("boom"), KeyboardInterrupt(), SystemExit(3)])
def test_any_exception_leaves_nothing(tmp_path, exception):
    with pytest.raises(type(exception)), staged_output_directory(tmp_path / "out", what="test output") as staging:
        (staging / "half-written").write_text("x")
        assert staging.parent == tmp_path and staging.name.startswith(".out.partial.")
        raise exception
    assert entries(tmp_path) == []


def test_success_renames_the_staging_directory(tmp_path):
    with staged_output_directory(tmp_path / "out") as staging:
        (staging / "file").write_text("content")
        assert not (tmp_path / "out").exists()
    assert entries(tmp_path) == ["out"] and (tmp_path / "out" / "file").read_text() == "content"


def test_an_os_error_in_the_block_becomes_one_clear_error(tmp_path):
    missing = tmp_path / "missing-source"
    expected = f"Writing the thing to {tmp_path / 'out'} failed: .*missing-source"
    with pytest.raises(OutputDirectoryError, match=expected), staged_output_directory(tmp_path / "out", what="thing"):
        missing.read_text()
    assert entries(tmp_path) == []


@pytest.mark.parametrize(
    ("make_destination", "message"),
    [
        (lambda tmp_path: tmp_path / "src", "src already exists; give a directory that does not exist yet"),
        (lambda tmp_path: (tmp_path / "dangling").symlink_to(tmp_path / "nowhere") or tmp_path / "dangling", "exists"),
        (lambda tmp_path: tmp_path / "no" / "such" / "out", "no/such does not exist; create it first"),
        (lambda tmp_path: (tmp_path / "file").write_text("x") and tmp_path / "file" / "out", "file is a file, not a"),
        (lambda tmp_path: (tmp_path / "file").write_text("x") and tmp_path / "file" / "a" / "out", "file is a file"),
    ],
    ids=["exists", "dangling-symlink", "parent-missing", "parent-is-a-file", "ancestor-is-a-file"],
)
def test_a_bad_destination_is_one_line_and_leaves_nothing(tmp_path, make_destination, message):
    source = write_deci_checkpoint(tmp_path / "src")
    destination = make_destination(tmp_path)
    before = entries(tmp_path)
    result = runner.invoke(app, ["convert", str(source), str(destination)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert entries(tmp_path) == before


def start_convert(tmp_path: Path, *arguments: str) -> tuple[subprocess.Popen, Path]:
    """Starts the console script on a checkpoint with `EXTRA_FILES` small files and returns once its staging
    directory exists; it then blocks writing progress lines that nobody reads."""
    source = write_deci_checkpoint(tmp_path / "src")
    for number in range(EXTRA_FILES):
        (source / f"extra-{number:05d}.txt").write_text("x")
    process = subprocess.Popen(
        [*COMMAND, "convert", *arguments, str(source), str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "stderr").open("w"),
        text=True,
    )
    for line in process.stdout:
        if line.startswith("Wrote config.json"):
            break
    else:
        pytest.fail(f"convert ended early: {(tmp_path / 'stderr').read_text()}")
    return process, tmp_path / "out"


def test_a_convert_killed_with_sigkill_is_cleaned_up_by_the_next_run(tmp_path):
    process, destination = start_convert(tmp_path, "--copy")
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    process.stdout.close()
    [staging] = staging_directories(tmp_path)
    assert staging.name.startswith(".out.partial.") and f".{process.pid}." in staging.name  # recognisable as stale
    assert not destination.exists()

    for extra in (tmp_path / "src").glob("extra-*.txt"):  # only there to stall the first run
        extra.unlink()
    completed = subprocess.run(
        [*COMMAND, "convert", "--copy", str(tmp_path / "src"), str(destination)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert f"Removed {staging}" in completed.stderr and f"process {process.pid}, which no longer runs" in (
        completed.stderr
    )
    assert staging_directories(tmp_path) == [] and (destination / "config.json").is_file()


def test_a_convert_ended_with_sigterm_removes_its_staging_directory(tmp_path):
    process, destination = start_convert(tmp_path, "--copy")
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)  # drain the pipe, so that the process can write what it still has
    assert process.returncode == 128 + signal.SIGTERM
    assert staging_directories(tmp_path) == [] and not destination.exists()


def test_staging_of_a_process_that_still_runs_is_refused_not_removed(tmp_path):
    host = socket.gethostname()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        staging = tmp_path / f".out.partial.{host}.{sleeper.pid}.0123abcd"
        staging.mkdir()
        expected = f"process {sleeper.pid} on this machine is writing"
        with pytest.raises(OutputDirectoryError, match=expected), staged_output_directory(tmp_path / "out"):
            pass
        assert staging.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    with staged_output_directory(tmp_path / "out"):  # the process has ended: its staging directory is stale
        pass
    assert entries(tmp_path) == ["out"]


def test_staging_of_another_host_is_refused(tmp_path):
    (tmp_path / ".out.partial.other-host.1.0123abcd").mkdir()
    expected = "process 1 on host other-host is writing .*remove"
    with pytest.raises(OutputDirectoryError, match=expected), staged_output_directory(tmp_path / "out"):
        pass


def user_namespaces_with_mounts() -> str | None:
    """Why a tmpfs cannot be mounted in a user namespace here, or None when it can."""
    try:
        completed = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except FileNotFoundError:
        return "no `unshare` command"
    return None if completed.returncode == 0 else f"unshare refused: {completed.stderr.strip()}"


def convert_on_a_small_file_system(
    tmp_path, mount_options: str, destination: str, option: str = "--copy", kv_scales: bool = False
) -> tuple[int, str, str]:
    """Runs `convert option` to `destination` inside a tmpfs mounted with `mount_options` at `tmp_path / "fs"` (in a
    private mount namespace, so it exists only for that command); returns its exit code, stderr, and the listing of
    the tmpfs after the command, including hidden entries."""
    reason = user_namespaces_with_mounts()
    if reason is not None:
        pytest.skip(f"needs a tmpfs in a user namespace ({reason})")
    source = write_nemotron_checkpoint(tmp_path / "src", with_kv_scales=kv_scales)  # 16 MB of weights
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    script = (
        'mount -t tmpfs -o "$2" tmpfs "$1" && mkdir -p "$1/parent" && mount -o "remount,$3" tmpfs "$1" || exit 99; '
        f'"$4" -m {CLI_MODULE} convert "$7" "$5" "$1/parent/$6" 2>"$1.stderr"; code=$?; ls -A "$1/parent" > '
        '"$1.listing"; exit $code'
    )
    size, _, remount = mount_options.partition(";")
    completed = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(mount_point)]
        + [size, remount or "rw", sys.executable, str(source), destination, option],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode != 99, completed.stderr
    stderr = Path(f"{mount_point}.stderr").read_text()
    return completed.returncode, stderr, Path(f"{mount_point}.listing").read_text()


@pytest.mark.parametrize(
    ("option", "kv_scales"),
    # copied shards; shards rewritten by safetensors; shards written by an export
    [("--copy", False), ("--drop-unused-tensors", True), ("--to=nemotron-nas", False)],
    ids=["copying", "rewriting", "exporting"],
)
def test_a_full_disk_is_one_clear_line_and_leaves_nothing(tmp_path, option, kv_scales):
    code, stderr, listing = convert_on_a_small_file_system(tmp_path, "size=1m", "out", option, kv_scales)
    assert code == 1
    written = "nemotron-nas" if option.startswith("--to") else "converted"
    assert stderr.count("\n") == 1 and stderr.startswith(f"Error: Writing the {written} checkpoint to "), stderr
    assert "no space left on the device" in stderr and "Nothing was left at" in stderr
    assert listing == ""  # neither the destination nor a staging directory


def test_a_read_only_destination_is_one_clear_line(tmp_path):
    code, stderr, listing = convert_on_a_small_file_system(tmp_path, "size=64m;ro", "out")
    assert code == 1
    assert stderr.count("\n") == 1 and "parent is on a read-only file system" in stderr, stderr
    assert listing == ""
