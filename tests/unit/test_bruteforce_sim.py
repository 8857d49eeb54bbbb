"""The issue's two throttle targets, checked by running bench/bruteforce_sim.py (injected clock)."""

import importlib.util
import json
from pathlib import Path

SIM = Path(__file__).resolve().parents[2] / "bench" / "bruteforce_sim.py"


def test_simulation_meets_the_targets(capsys):
    spec = importlib.util.spec_from_file_location("bruteforce_sim", SIM)
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    assert sim.main(["--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["attacker"]["success_probability"] < 1e-3
    assert figures["attacker"]["checked_guesses"] < 100  # NIST SP 800-63B: at most 100
    assert figures["typists"][0]["typos"] == 5 and figures["typists"][0]["wait_after_last_typo_s"] <= 60
    assert figures["lockout_days"] > 30
