"""Pairwise covering arrays: few rows in which every pair of values of any two factors appears at least once.

Built with IPOG (Lei et al., "IPOG: A General Strategy for T-Way Software Testing", 2007) for t = 2: start from every
combination of the two largest factors, then add one factor at a time, first choosing its value in the existing rows
(horizontal growth), then adding rows for the pairs still missing (vertical growth). Every tie is broken by the order
the values are given in, so the same factors always give the same rows.
"""

from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations, product


def pairwise_covering_array(
    factors: Mapping[str, Sequence[Hashable]], required: Sequence[Mapping[str, Hashable]] = ()
) -> list[dict[str, Hashable]]:
    """
    Rows (one value per factor) in which every pair of values of any two factors appears at least once.

    Args:
        factors (`Mapping[str, Sequence[Hashable]]`):
            Factor name to its values (at least one each, no repeats).
        required (`Sequence[Mapping[str, Hashable]]`, *optional*):
            Rows that must be among the result (a combination that must run as a whole, such as a past failure).
            Each is placed in the row that starts with its values of the two largest factors.

    Returns:
        `list[dict[str, Hashable]]`: the rows, each keyed like `factors`. At least `len(a) * len(b)` rows for the two
        largest factors `a`, `b`; often exactly that many.
    """
    for name, values in factors.items():
        if len(values) == 0 or len(set(values)) != len(values):
            raise ValueError(f"Factor {name!r} needs at least one value and no repeats, got {list(values)}.")
    for row in required:
        if set(row) != set(factors) or any(row[name] not in factors[name] for name in factors):
            raise ValueError(f"Required row {dict(row)} must give one of the listed values for every factor.")
    # Largest factors first (stable for equal sizes): fewer rows
    names = sorted(factors, key=lambda name: -len(factors[name]))
    if len(names) < 2:
        return [{name: value for name in names} for value in (factors[names[0]] if names else [])]
    rows: list[list] = [list(pair) for pair in product(factors[names[0]], factors[names[1]])]
    # Each required row claims the first unclaimed row with its values of the first two factors (a repeat gets a row
    # of its own)
    claimed: dict[int, Mapping[str, Hashable]] = {}
    for row in required:
        start = [row[names[0]], row[names[1]]]
        index = next((i for i, r in enumerate(rows) if r == start and i not in claimed), None)
        if index is None:
            rows.append(start)
            index = len(rows) - 1
        claimed[index] = row
    for k in range(2, len(names)):
        values = factors[names[k]]
        missing = {(j, a, b) for j in range(k) for a in factors[names[j]] for b in values}
        # Horizontal growth: each existing row takes the value that covers the most missing pairs (on a tie, the one
        # used least so far, which leaves the others for later rows)
        used = dict.fromkeys(values, 0)
        for i, row in enumerate(rows):
            gains = [(sum((j, row[j], value) in missing for j in range(k)), -used[value]) for value in values]
            value = claimed[i][names[k]] if i in claimed else values[gains.index(max(gains))]
            used[value] += 1
            row.append(value)
            missing -= {(j, row[j], value) for j in range(k)}
        # Vertical growth: a missing pair goes into a new row that can still take it, or starts one
        added: list[list] = []
        for j, a, b in sorted(missing, key=lambda p: (p[0], factors[names[p[0]]].index(p[1]), values.index(p[2]))):
            for row in added:
                if row[k] == b and row[j] in (None, a):
                    row[j] = a
                    break
            else:
                row = [None] * (k + 1)
                row[j], row[k] = a, b
                added.append(row)
        # A free slot takes the value that occurs least in the rows so far (the first of those on a tie)
        for row in added:
            for j in range(k):
                if row[j] is None:
                    counts = [sum(r[j] == value for r in rows) for value in factors[names[j]]]
                    row[j] = factors[names[j]][counts.index(min(counts))]
            rows.append(row)
    return [{name: row[names.index(name)] for name in factors} for row in rows]


def uncovered_pairs(
    factors: Mapping[str, Sequence[Hashable]], rows: Sequence[Mapping[str, Hashable]]
) -> list[tuple[str, Hashable, str, Hashable]]:
    """Every `(factor, value, other factor, other value)` pair that no row holds (empty when `rows` covers them all)."""
    seen = {(a, row[a], b, row[b]) for row in rows for a, b in combinations(factors, 2)}
    return [
        (a, x, b, y)
        for a, b in combinations(factors, 2)
        for x in factors[a]
        for y in factors[b]
        if (a, x, b, y) not in seen
    ]
