"""The resource dependency graph: topological order, cycles, dependents."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Graph:
    # node -> the nodes it depends on (edges to nodes outside the graph are ignored)
    deps: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, edges: dict[str, set[str] | list[str]]) -> "Graph":
        nodes = set(edges)
        return cls({n: {d for d in ds if d in nodes and d != n} for n, ds in edges.items()})

    def dependents(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {n: set() for n in self.deps}
        for n, ds in self.deps.items():
            for d in ds:
                out[d].add(n)
        return out

    def topological(self) -> list[str]:
        """Dependencies first; ties broken by id so the order is stable. Raises CycleError."""
        indeg = {n: len(ds) for n, ds in self.deps.items()}
        rdeps = self.dependents()
        import heapq

        ready = [n for n, k in indeg.items() if k == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            n = heapq.heappop(ready)
            order.append(n)
            for m in rdeps[n]:
                indeg[m] -= 1
                if indeg[m] == 0:
                    heapq.heappush(ready, m)
        if len(order) != len(self.deps):
            raise CycleError(self.find_cycle({n for n, k in indeg.items() if k > 0}))
        return order

    def find_cycle(self, among: set[str] | None = None) -> list[str]:
        """One cycle, as a closed path [a, b, ..., a]."""
        nodes = sorted(among if among is not None else self.deps)
        color: dict[str, int] = {}
        for start in nodes:
            if color.get(start):
                continue
            stack = [(start, iter(sorted(self.deps[start])))]
            path = [start]
            color[start] = 1
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    color[node] = 2
                    stack.pop()
                    path.pop()
                    continue
                if color.get(nxt) == 1:
                    return path[path.index(nxt):] + [nxt]
                if not color.get(nxt):
                    color[nxt] = 1
                    path.append(nxt)
                    stack.append((nxt, iter(sorted(self.deps[nxt]))))
        return []

    def transitive_dependents(self, roots: set[str]) -> set[str]:
        rdeps = self.dependents()
        seen: set[str] = set()
        todo = list(roots)
        while todo:
            n = todo.pop()
            for m in rdeps.get(n, ()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen


class CycleError(Exception):
    def __init__(self, cycle: list[str]):
        super().__init__(" -> ".join(cycle))
        self.cycle = cycle
