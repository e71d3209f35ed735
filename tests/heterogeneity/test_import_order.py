"""Installing the package never breaks a first import of Transformers (issue 10): the fast subset of the matrix.

The full matrix (every module of `transformers`' public import structure) runs in `.ci/run`.
"""

import pytest

from .import_order import FAST_CASES, CaseResult, run_cases


@pytest.fixture(scope="module")
def results() -> dict[str, CaseResult]:
    """All fast cases at once, two fresh interpreters at a time (each spends seconds importing torch)."""
    return {result.statements[0]: result for result in run_cases(FAST_CASES, workers=2)}


@pytest.mark.parametrize("first_import", [case[0] for case in FAST_CASES])
def test_first_import_works_and_a_heterogeneous_model_builds_afterwards(results, first_import):
    result = results[first_import]
    assert not result.problems, "\n".join(result.problems)
    assert result.imports == {first_import: "ok"}
    assert result.model == "ok"


def test_a_regression_is_reported():
    """An import that fails only with the package active is a problem; one that fails identically without it is not
    (here both fail, the same way)."""
    failing_both = CaseResult(["import no_such_module"], {"import no_such_module": "ModuleNotFoundError: x"}, "ok")
    failing_both.imports_without_package = {"import no_such_module": "ModuleNotFoundError: x"}
    assert failing_both.problems == []
    regression = CaseResult(["from transformers import Trainer"], {"from transformers import Trainer": "Boom"}, "ok")
    regression.imports_without_package = {"from transformers import Trainer": "ok"}
    assert regression.problems == ["`from transformers import Trainer`: Boom (without the package: ok)"]
