"""The cells a snapshot sums: an exact cover of the asked time range (finished stages too)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from model_rollout.gateway.stats import window_ranges


def covered(ranges) -> list[int]:
    seconds = []
    for level, start, end in ranges:
        assert start % level == 0 and end % level == 0 or level == 1, (level, start, end)
        seconds.extend(range(start, end))
    return seconds


@given(st.integers(0, 3 * 86400), st.integers(0, 3 * 86400))
def test_closed_range_is_covered_exactly_once_by_aligned_cells(a, length):
    b = a + length
    cells = window_ranges(a, b + 5, until=b)
    assert covered(cells) == list(range(a, b))  # every second once, in order, nothing else
    assert len(cells) <= 5  # seconds, minutes, hours, minutes, seconds


def test_open_range_reaches_past_now():
    cells = window_ranges(10, 7300)
    assert cells[0] == (1, 10, 60) and cells[1] == (60, 60, 3600)
    assert cells[-1][0] == 3600 and cells[-1][2] > 7300
