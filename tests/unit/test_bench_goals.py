"""bench/run.py's goal lines: the ratios of issue #7, judged the right way round."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_run():
    sys.path.insert(0, str(BENCH))
    try:
        import run  # bench/run.py (imports bench/common.py and the test harness)
    finally:
        sys.path.remove(str(BENCH))
    return run


def cell(per_s: float, p50: float, fails: int = 0) -> dict:
    return {"per_s": per_s, "p50": p50, "fails": fails}


def test_goals_met_and_not_met():
    run = load_run()
    results = {
        run.PEER: {1: cell(100, 10.0), 8: cell(130, 60.0)},
        "lua→authd": {1: cell(90, 11.0), 8: cell(125, 65.0)},  # p50 1.08x: met; throughput 0.96x: not
        "checkpassword --socket": {1: cell(45, 21.0), 8: cell(80, 110.0)},  # 2.1x: not; 1.83x: met
    }
    lines = run.goal_lines(results, [1, 8])
    assert lines == [
        "goal: lua→authd at 8 clients: p50 1.08x the peer's (goal <= 1.1x): met",
        "goal: lua→authd at 8 clients: throughput 0.96x the peer's (goal >= 1x): NOT met",
        "goal: checkpassword --socket at 1 clients: p50 2.10x the peer's (goal <= 2x): NOT met",
        "goal: checkpassword --socket at 8 clients: p50 1.83x the peer's (goal <= 2x): met",
    ]


def test_unmeasured_cells_are_left_out():
    run = load_run()
    results = {run.PEER: {1: cell(100, 10.0)}, "lua→authd": {1: cell(90, 11.0)}}
    assert run.goal_lines(results, [1]) == []


def test_no_ratio_when_either_side_failed_logins():
    """A peer whose logins all failed (a broken config) answers fast: its ratio would read "met"."""
    run = load_run()
    results = {run.PEER: {8: cell(3, 2500.0, fails=16)}, "lua→authd": {8: cell(120, 65.0)}}
    lines = run.goal_lines(results, [8])
    assert len(lines) == 2
    assert all("NOT measured (0 failed logins, the peer 16" in line for line in lines), lines
