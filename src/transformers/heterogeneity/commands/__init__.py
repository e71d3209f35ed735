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
"""The `transformers-heterogeneity` command line: `cli.py` wires the commands, one module per command."""

from typing import NoReturn

import typer


def fail(message: str) -> NoReturn:
    """Ends a command with one `Error: ...` line on stderr and exit code 1."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=1)
