"""The order a scale-down retires warm pods in (fleet/packing.py): the rules the
controller test (tests/backends/test_scale_down_nodes.py) shows on one case, each apart."""

from __future__ import annotations

from fleet.packing import least_used_first


def test_without_nodes_the_oldest_ready_goes_first_as_before() -> None:
    """The local backend's pods have no node: the ready set's order, unchanged."""
    ready = [("b", "", 2.0), ("a", "", 1.0), ("c", "", 3.0)]
    assert least_used_first(ready, claimed=["", ""]) == ["a", "b", "c"]


def test_a_node_without_sessions_empties_first_even_with_newer_pods() -> None:
    ready = [("old-on-busy", "n1", 1.0), ("new-1", "n2", 5.0), ("new-2", "n2", 6.0)]
    assert least_used_first(ready, claimed=["n1"]) == ["new-1", "new-2", "old-on-busy"]


def test_ties_go_to_the_node_with_fewer_pods_then_the_oldest() -> None:
    ready = [("x1", "big", 1.0), ("x2", "big", 2.0), ("y1", "small", 3.0),
             ("z1", "other", 0.5)]  # fmt: skip
    # No sessions anywhere: "small" and "other" hold one pod each, "other"'s is older.
    assert least_used_first(ready, claimed=[]) == ["z1", "y1", "x1", "x2"]
    # A session on "other": it goes last, whatever its pods' age.
    assert least_used_first(ready, claimed=["other"]) == ["y1", "x1", "x2", "z1"]
