"""The one walk over "needs" edges that plan, plugin_plan and lint share."""

from __future__ import annotations

from repoforge.graph import find_cycle, in_dependency_order


def test_find_cycle_names_the_cycle_itself_not_the_walk_that_reached_it() -> None:
    assert find_cycle({0: {1}, 1: {2}, 2: set()}) is None
    assert find_cycle({0: {1}, 1: {0}}) == [0, 1, 0]
    # step 0 only leads into the cycle 1 -> 2 -> 1
    assert find_cycle({0: {1}, 1: {2}, 2: {1}}) == [1, 2, 1]


def test_dependencies_are_visited_first_and_each_back_edge_is_reported() -> None:
    graph = {"a": ["b", "c"], "b": ["c"], "c": [], "x": ["y"], "y": ["x"]}
    order: list[str] = []
    cycles: list[tuple[str, str, str]] = []
    in_dependency_order(
        graph,
        lambda n: [(d, f"{n}->{d}") for d in graph[n]],
        order.append,
        lambda n, d, edge: cycles.append((n, d, edge)),
    )
    assert order == ["c", "b", "a", "y", "x"]
    assert cycles == [("y", "x", "y->x")]
