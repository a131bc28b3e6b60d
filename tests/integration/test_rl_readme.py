"""The README's rtml.rl example runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def _block(heading: str) -> str:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_rl_example_runs_as_written():
    out = subprocess.run([sys.executable, "-c", _block("### Reinforcement learning (`rtml.rl`)")],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert re.fullmatch(r"PPO: return \d+ after 8192 env steps, \d+ steps/s, learner \d+ ms",
                        lines[0]), lines
    assert lines[1] == "restored at iteration 9"
    assert re.fullmatch(r"ES: eval return \d+ after 5 iterations", lines[2]), lines
    assert re.fullmatch(r"MCTS plays column 3 \(\d+ simulations, \d+ tasks\)", lines[3]), lines
