"""`Cause`: why something ended, as a value that reads as one line or as a tree."""

from __future__ import annotations

import dataclasses

import pytest

from llm_worker.cancel import INTERRUPT_KINDS, Cause


def test_interrupt_carries_kind_reason_and_origin() -> None:
    cause = Cause.interrupt("deadline", "took too long", origin="run 7")

    assert cause.tag == "interrupt"
    assert cause.kind == "deadline"
    assert cause.reason == "took too long"
    assert cause.origin == "run 7"
    assert cause.is_interrupt


def test_interrupt_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown interrupt kind 'stopped'"):
        Cause.interrupt("stopped")  # type: ignore[arg-type]


def test_every_documented_interrupt_kind_is_accepted() -> None:
    documented = {"explicit", "deadline", "superseded", "parent", "keyboard_interrupt", "external"}

    assert documented <= INTERRUPT_KINDS
    assert {Cause.interrupt(kind).kind for kind in INTERRUPT_KINDS} == INTERRUPT_KINDS  # type: ignore[arg-type]


def test_failure_keeps_the_exception_and_describes_it() -> None:
    error = KeyError("missing")
    cause = Cause.failure(error, origin="tool search")

    assert cause.kind == "failure"
    assert not cause.is_interrupt
    assert cause.error is error
    assert cause.failures() == [error]
    assert str(cause) == "failed: KeyError: 'missing' [tool search]"


def test_failure_without_message_is_named_by_its_type() -> None:
    assert str(Cause.failure(TimeoutError())) == "failed: TimeoutError"


def test_interrupt_renders_as_one_readable_line() -> None:
    assert str(Cause.interrupt("explicit", "user pressed Stop", origin="thread gui")) == (
        "interrupted (explicit): user pressed Stop [thread gui]"
    )
    assert str(Cause.interrupt("external")) == "interrupted (external)"


def test_composition_renders_as_one_line_with_nested_groups() -> None:
    error = ValueError("bad")
    cause = Cause.sequential(
        Cause.interrupt("explicit", "stop"),
        Cause.parallel(Cause.failure(error), Cause.interrupt("parent", "stop")),
    )

    text = str(cause)

    assert "\n" not in text
    assert text == (
        "interrupted (explicit): stop; then (failed: ValueError: bad | interrupted (parent): stop)"
    )


def test_composition_renders_as_a_tree() -> None:
    cause = Cause.sequential(
        Cause.interrupt("explicit", "stop"),
        Cause.parallel(Cause.failure(ValueError("bad")), Cause.interrupt("parent")),
        Cause.failure(OSError("clean-up failed")),
    )

    assert cause.render_tree().splitlines() == [
        "sequential",
        "├─ interrupted (explicit): stop",
        "├─ parallel",
        "│  ├─ failed: ValueError: bad",
        "│  └─ interrupted (parent)",
        "└─ failed: OSError: clean-up failed",
    ]


def test_a_leaf_renders_as_a_one_line_tree() -> None:
    cause = Cause.interrupt("deadline", "5s")

    assert cause.render_tree() == str(cause)


def test_compositions_flatten_same_tag_and_drop_empty_parts() -> None:
    a, b, c = (Cause.interrupt("explicit", name) for name in "abc")

    nested = Cause.parallel(Cause.parallel(a, b), None, Cause.empty(), c)

    assert nested.tag == "parallel"
    assert nested.parts == (a, b, c)
    mixed = Cause.sequential(a, Cause.parallel(b, c))
    assert mixed.parts[1].tag == "parallel"


def test_composition_of_one_cause_is_that_cause_and_of_none_is_empty() -> None:
    a = Cause.interrupt("explicit")

    assert Cause.sequential(None, a, Cause.empty()) is a
    assert Cause.parallel() is Cause.empty()
    assert Cause.sequential(None).kind == "empty"
    assert str(Cause.empty()) == "no cause"
    assert not Cause.empty().is_interrupt


def test_a_composition_has_the_kind_of_its_first_part() -> None:
    failure = Cause.failure(RuntimeError("boom"))
    interrupt = Cause.interrupt("superseded")

    assert Cause.parallel(failure, interrupt).kind == "failure"
    assert not Cause.parallel(failure, interrupt).is_interrupt
    assert Cause.sequential(interrupt, failure).kind == "superseded"
    assert Cause.sequential(interrupt, failure).is_interrupt


def test_leaves_failures_and_interrupts_are_listed_in_order() -> None:
    e1, e2 = ValueError("1"), ValueError("2")
    i1, i2 = Cause.interrupt("explicit", "i1"), Cause.interrupt("parent", "i2")
    f1, f2 = Cause.failure(e1), Cause.failure(e2)

    cause = Cause.sequential(i1, Cause.parallel(f1, i2), f2)

    assert list(cause.leaves()) == [i1, f1, i2, f2]
    assert cause.failures() == [e1, e2]
    assert cause.interrupts() == [i1, i2]


def test_a_cause_is_immutable() -> None:
    cause = Cause.interrupt("explicit", "x")

    with pytest.raises(dataclasses.FrozenInstanceError):
        cause.reason = "y"  # type: ignore[misc]
