"""A benchmark's goal: a ratio against a baseline measured in the same run, recorded in the benchmark JSON
(extra_info ``ratio``, ``goal`` and ``goal_is``, the side of it that passes) and then asserted. Never an
absolute time."""

import operator

SIDES = {"at most": operator.le, "at least": operator.ge, "more than": operator.gt}


def assert_goal(benchmark, ratio: float, goal: float, goal_is: str = "at most") -> None:
    """Record ``ratio`` and ``goal``; fail unless the ratio is ``goal_is`` (at most, at least, more than) the goal."""
    benchmark.extra_info["ratio"] = ratio
    benchmark.extra_info["goal"] = goal
    benchmark.extra_info["goal_is"] = goal_is
    assert SIDES[goal_is](ratio, goal), f"ratio {ratio:.3g}x misses its goal: {goal_is} {goal}x"
