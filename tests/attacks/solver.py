"""The attacker's linear algebra, written apart from the view builder's own check: which
withheld cells of a cube the published cells and the cube's sums pin down."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sandbox.views.aggregate import Cell


def determined(cells: Sequence[Cell], withheld: set[int], *, truth: bool = True) -> set[int]:
    """The attacker's side, written apart from the builder: the published cells and the
    cube's sums as equations, solved by least squares twice, from two different starting
    points in the solution set; a cell on which all solutions agree is determined.
    ``truth``: the withheld cells' counts are the true ones, and a determined cell is
    checked to be solved right (the attack is sound)."""
    unknown = sorted(withheld)
    position = {cell: n for n, cell in enumerate(unknown)}
    equations, rhs = [], []
    for i, cell in enumerate(cells):
        for j, value in enumerate(cell.key):
            if value is not None:
                continue
            children = [
                k
                for k, other in enumerate(cells)
                if other.key[j] is not None
                and all(other.key[m] == cell.key[m] for m in range(len(cell.key)) if m != j)
            ]
            if not children:  # no table splits this cell by dimension j: no equation
                continue
            row = np.zeros(len(unknown))
            known = 0.0
            for k, sign in [(i, 1.0)] + [(k, -1.0) for k in children]:
                if k in position:
                    row[position[k]] += sign
                else:
                    known -= sign * cells[k].count
            equations.append(row)
            rhs.append(known)
    if not unknown:
        return set()
    a = np.array(equations) if equations else np.zeros((1, len(unknown)))
    b = np.array(rhs) if rhs else np.zeros(1)
    particular = np.linalg.lstsq(a, b, rcond=None)[0]
    _, singular, vt = np.linalg.svd(a)
    rank = int((singular > 1e-9).sum())
    free = vt[rank:]
    determined = set()
    for n, cell in enumerate(unknown):
        if len(free) == 0 or np.abs(free[:, n]).max() < 1e-9:
            assert not truth or round(particular[n]) == cells[cell].count
            determined.add(cell)
    return determined
