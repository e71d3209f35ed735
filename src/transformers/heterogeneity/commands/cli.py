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
"""Root of the `transformers-heterogeneity` command line.

It only wires the commands; each lives in its own module and imports torch and the modeling code inside the command,
so that `--help` and argument errors do not pay for them.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from .convert import convert
from .demo import demo
from .derive import derive
from .inspect import inspect
from .search import search


app = typer.Typer(
    name="transformers-heterogeneity",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 119},
)


def _show_version(value: bool) -> None:
    if not value:
        return
    versions = []
    for distribution in ("transformers-heterogeneity", "transformers", "torch"):  # read from metadata: no import
        try:
            versions.append(f"{distribution} {version(distribution)}")
        except PackageNotFoundError:
            versions.append(f"{distribution} not installed")
    typer.echo(f"{versions[0]} ({', '.join(versions[1:])})")
    raise typer.Exit()


@app.callback()
def callback(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the versions and exit."),
    ] = False,
) -> None:
    """Per-layer heterogeneous models for Hugging Face Transformers."""
    # A callback makes `app` a group even while it has a single command, so commands keep their names.


app.command()(demo)
app.command()(inspect)
app.command()(convert)
app.command()(derive)
app.command()(search)


def main() -> None:
    """Entry point of the `transformers-heterogeneity` console script."""
    app()


if __name__ == "__main__":
    main()
