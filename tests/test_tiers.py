"""The run refuses a test without a tier, or a unit test that needs a server."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit

CONFTEST = """
import pytest
from tests.tiers import refuse_untiered

@pytest.fixture
def server_urls():
    return None

def pytest_collection_modifyitems(items):
    refuse_untiered(items)
"""
INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
markers =
    unit
    integration
    system
"""


def run(pytester: pytest.Pytester, module: str) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    pytester.makepyfile(test_sample=module)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider")


def test_a_test_without_a_tier_stops_the_run(pytester: pytest.Pytester) -> None:
    result = run(pytester, "def test_forgotten():\n    pass\n")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_sample.py::test_forgotten: no tier*"])


def test_a_unit_test_that_needs_a_server_stops_the_run(pytester: pytest.Pytester) -> None:
    module = "import pytest\npytestmark = pytest.mark.unit\ndef test_x(server_urls):\n    pass\n"

    result = run(pytester, module)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_x: a unit test uses server fixtures (server_urls)*"])


def test_two_tiers_stop_the_run(pytester: pytest.Pytester) -> None:
    module = (
        "import pytest\npytestmark = pytest.mark.unit\n"
        "@pytest.mark.system\ndef test_x():\n    pass\n"
    )

    result = run(pytester, module)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_x: more than one tier (system, unit)*"])


def test_a_tiered_test_runs(pytester: pytest.Pytester) -> None:
    result = run(
        pytester, "import pytest\npytestmark = pytest.mark.integration\ndef test_x():\n    pass\n"
    )

    result.assert_outcomes(passed=1)
