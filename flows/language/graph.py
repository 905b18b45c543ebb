"""Graph arithmetic over `needs`: topological order and cycles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle as a path that returns to its start (`[a, b, a]`), or None. Unknown names are ignored."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(needs, WHITE)
    for root in needs:
        if colour[root] != WHITE:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        colour[root] = GREY
        while stack:
            node, index = stack[-1]
            edges = [n for n in needs[node] if n in needs]
            if index < len(edges):
                stack[-1] = (node, index + 1)
                nxt = edges[index]
                if colour[nxt] == GREY:
                    return [*path[path.index(nxt) :], nxt]
                if colour[nxt] == WHITE:
                    colour[nxt] = GREY
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                colour[node] = BLACK
                stack.pop()
                path.pop()
    return None


def topological_order(needs: Mapping[str, Sequence[str]]) -> list[str]:
    """Names ordered so that each comes after all it needs; ties keep declaration order.

    The caller has checked that there is no cycle and no unknown name.
    """
    remaining = {name: set(deps) for name, deps in needs.items()}
    order: list[str] = []
    while remaining:
        ready = [name for name, deps in remaining.items() if not deps]
        if not ready:
            raise ValueError("cycle in needs")
        for name in ready:
            del remaining[name]
        done = set(ready)
        for deps in remaining.values():
            deps -= done
        order.extend(ready)
    return order


def ancestors(needs: Mapping[str, Sequence[str]], name: str) -> set[str]:
    seen: set[str] = set()
    stack = list(needs.get(name, ()))
    while stack:
        node = stack.pop()
        if node in seen or node not in needs:
            continue
        seen.add(node)
        stack.extend(needs[node])
    return seen
