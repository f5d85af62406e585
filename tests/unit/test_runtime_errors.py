"""The runtime's error counting outside a server: `counting` counts error responses an `execute` returns or raises,
and `count_sent_errors` those a model sends itself through a response sender (decoupled), once per send that
succeeded. A real Triton proves both in tests/integration/test_user_model_errors.py."""

from __future__ import annotations

from typing import Any

import pytest

from repoforge.runtime import errors


class Response:
    def __init__(self, error: bool) -> None:
        self.error = error

    def has_error(self) -> bool:
        return self.error


class Sender:
    """Stands in for the stub's InferenceResponseSender (a C++ class whose `send` the runtime wraps)."""

    refuse = False

    def send(self, response: Any = None, flags: int = 0) -> None:
        if self.refuse:
            raise RuntimeError("the server refused it")


class Counter(errors.ErrorCounter):
    def __init__(self) -> None:  # no stub: count in a list instead of pb_utils' metrics
        self.added: list[int] = []

    def add(self, n: int) -> None:
        self.added.append(n)


def test_sent_error_responses_are_counted_once_each_after_the_send() -> None:
    counter = Counter()
    assert errors.count_sent_errors(counter, Sender)
    assert errors.count_sent_errors(counter, Sender)  # wrapping twice keeps one wrapper
    s = Sender()
    s.send(Response(True), flags=1)
    s.send(response=Response(False))
    s.send(flags=1)  # the final flag alone: no response
    s.send(Response(True))
    assert sum(counter.added) == 2
    s.refuse = True
    with pytest.raises(RuntimeError):
        s.send(Response(True))
    assert sum(counter.added) == 2  # not sent, not counted


def test_without_a_stub_there_is_nothing_to_wrap() -> None:
    assert not errors.count_sent_errors(Counter())  # triton_python_backend_utils exists only in the stub


def test_returned_and_raised_errors_are_counted() -> None:
    class Model:
        def execute(self, requests: list[Any]) -> list[Response]:
            if requests == ["boom"]:
                raise ValueError("boom")
            return [Response(r == "bad") for r in requests]

    model = errors.counting(Model)()
    model._repoforge_errors = counter = Counter()
    model.execute(["ok", "bad", "bad"])
    with pytest.raises(ValueError):
        model.execute(["boom"])
    assert counter.added == [2, 1]
