"""The task registry without I/O: signatures become argument schemas, options are checked."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

import pulse
from tests import tasks_example

pytestmark = pytest.mark.unit


def test_a_signature_becomes_the_schema_of_its_keyword_arguments() -> None:
    # Given the example's add(ctx, a: int, b: int = 0)
    schema = tasks_example.add.schema()
    # Then the context is not an argument, a is required, b has its default
    body = schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    assert body["required"] == ["a"]
    assert body["properties"] == {"a": {"type": "integer"}, "b": {"type": "integer", "default": 0}}
    assert body["additionalProperties"] is False
    assert tasks_example.add.takes_context


def test_arguments_are_converted_and_checked_by_the_signature() -> None:
    assert tasks_example.add.arguments({"a": 2}) == {"a": 2, "b": 0}
    with pytest.raises(msgspec.ValidationError, match=r"\$\.a"):
        tasks_example.add.arguments({"a": "two"})
    with pytest.raises(msgspec.ValidationError, match="unknown field `c`"):
        tasks_example.add.arguments({"a": 1, "c": 3})


def test_an_integral_float_the_api_accepted_as_an_integer_runs_as_that_int() -> None:
    # JSON Schema (the API's check) takes 1e3 as an integer: the run must too
    assert tasks_example.add.arguments(msgspec.json.decode(b'{"a": 1e3}')) == {"a": 1000, "b": 0}
    big = msgspec.json.decode(b'{"a": 1e16, "b": -9e18}')
    assert tasks_example.add.arguments(big) == {"a": 10**16, "b": -9 * 10**18}
    with pytest.raises(msgspec.ValidationError, match=r"\$\.a"):
        tasks_example.add.arguments({"a": "1000"})  # strings stay strings
    with pytest.raises(msgspec.ValidationError, match=r"\$\.a"):
        tasks_example.add.arguments({"a": 1.5})


def test_the_registry_finds_its_tasks_by_name_and_refuses_a_second_of_a_name() -> None:
    tasks = pulse.Tasks()

    @tasks.task(name="x.one")
    async def one() -> None: ...

    assert tasks.get("x.one") is one
    assert len(tasks) == 1
    with pytest.raises(ValueError, match="registered twice"):

        @tasks.task(name="x.one")
        async def again() -> None: ...


def test_options_out_of_range_are_refused_when_declared() -> None:
    tasks = pulse.Tasks()
    with pytest.raises(ValueError, match="priority"):
        tasks.task(name="bad", priority=9)(lambda: None)
    with pytest.raises(ValueError, match="max_attempts"):
        tasks.task(name="bad", max_attempts=0)(lambda: None)


def test_var_keyword_arguments_cannot_be_described() -> None:
    tasks = pulse.Tasks()
    with pytest.raises(TypeError, match="kwargs"):

        @tasks.task(name="bad")
        async def loose(**kwargs: int) -> None: ...


def test_retry_takes_seconds_or_a_timedelta() -> None:
    assert pulse.Retry(after=2.5).after_s == 2.5
    assert pulse.Retry(after=timedelta(minutes=1)).after_s == 60
    assert pulse.Retry().after_s is None


def test_a_name_defaults_to_the_functions_qualified_name() -> None:
    tasks = pulse.Tasks()

    @tasks.task
    async def build() -> None: ...

    assert (
        build.name
        == f"{__name__}.test_a_name_defaults_to_the_functions_qualified_name.<locals>.build"
    )


def test_a_name_the_api_could_not_accept_is_refused_when_declared() -> None:
    tasks = pulse.Tasks()
    with pytest.raises(ValueError, match="task name"):
        tasks.task(name="has a space")(lambda: None)
