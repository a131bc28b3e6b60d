"""The README's rtml.rl example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import readme_block


def test_the_rl_example_runs_as_written():
    out = subprocess.run(
        [sys.executable, "-c", readme_block("### Reinforcement learning (`rtml.rl`)")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert re.fullmatch(
        r"PPO: return \d+ after 8192 env steps, \d+ steps/s, learner \d+ ms", lines[0]
    ), lines
    assert lines[1] == "restored at iteration 9"
    assert re.fullmatch(r"ES: eval return \d+ after 5 iterations", lines[2]), lines
    assert re.fullmatch(r"MCTS plays column 3 \(\d+ simulations, \d+ tasks\)", lines[3]), lines
