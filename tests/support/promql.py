"""PromQL read as Prometheus reads it: an expression's nodes and the metric names it selects."""

from __future__ import annotations

from collections.abc import Iterator

import promql_parser


def walk(node: object) -> Iterator[object]:
    """`node` and every node under it, depth first."""
    yield node
    if isinstance(node, promql_parser.Call):
        children = list(node.args)
    else:
        names = ("expr", "lhs", "rhs", "vector_selector", "param")
        children = [getattr(node, name) for name in names if getattr(node, name, None)]
    for child in children:
        yield from walk(child)


def selected_names(node: object) -> set[str]:
    """Every metric name the selectors under `node` select, `{__name__="x"}` included."""
    names: set[str] = set()
    for selector in walk(node):
        if isinstance(selector, promql_parser.VectorSelector):
            names.update([selector.name] if selector.name else [])
            names.update(m.value for m in selector.matchers.matchers if m.name == "__name__")
    return names


def metric_names(expression: str) -> set[str]:
    """Every metric name `expression` selects; ValueError when it does not parse."""
    return selected_names(promql_parser.parse(expression))
