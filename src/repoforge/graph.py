"""The one depth-first walk over "needs" edges: ensemble steps (plan and lint) and models that call other
models (plugins, ensembles) are checked for cycles, and derived in dependency order, by the same code."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import TypeVar

N = TypeVar("N", bound=Hashable)
E = TypeVar("E")

_OPEN, _DONE = 1, 2


def in_dependency_order(
    nodes: Iterable[N],
    needs: Callable[[N], Iterable[tuple[N, E]]],
    visit: Callable[[N], None],
    on_cycle: Callable[[N, N, E], None],
) -> None:
    """Call `visit(n)` once per node, after every node it needs; `needs(n)` gives (node, edge) pairs.
    An edge back to a node still being visited closes a cycle: `on_cycle(n, needed, edge)`, and the walk
    goes on without following it."""
    state: dict[N, int] = {}

    def walk(n: N) -> None:
        state[n] = _OPEN
        for dep, edge in needs(n):
            if state.get(dep) == _OPEN:
                on_cycle(n, dep, edge)
            elif dep not in state:
                walk(dep)
        visit(n)
        state[n] = _DONE

    for n in nodes:
        if n not in state:
            walk(n)


def find_cycle(deps: Mapping[int, Iterable[int]]) -> list[int] | None:
    """The first cycle met walking the nodes in sorted order, as [n0, n1, ..., n0]; None when there is none."""
    state: dict[int, int] = {}
    stack: list[int] = []

    def walk(n: int) -> list[int] | None:
        state[n] = _OPEN
        stack.append(n)
        for m in sorted(deps.get(n, ())):
            if state.get(m) == _OPEN:
                return stack[stack.index(m) :] + [m]
            if m not in state:
                found = walk(m)
                if found:
                    return found
        stack.pop()
        state[n] = _DONE
        return None

    for n in sorted(deps):
        if n not in state:
            found = walk(n)
            if found:
                return found
    return None
