"""Games with a simulator for MCTS: Connect Four on bitboards.

A game state is immutable and small (it travels to tasks). The protocol MCTS uses:
``to_play`` (0 or 1), ``legal_moves()``, ``play(move) -> state``, ``is_terminal()``,
``winner()`` (0, 1, or None for a draw / unfinished).
"""

from __future__ import annotations

import random

__all__ = ["ConnectFour"]

_W, _H = 7, 6
_BOTTOM = [1 << (c * (_H + 1)) for c in range(_W)]
_TOP = [1 << (_H - 1 + c * (_H + 1)) for c in range(_W)]


def _aligned(m: int) -> bool:
    for shift in (1, _H + 1, _H, _H + 2):  # vertical, horizontal, the two diagonals
        y = m & (m >> shift)
        if y & (y >> (2 * shift)):
            return True
    return False


class ConnectFour:
    """Connect Four (7 columns x 6 rows); moves are column numbers 0-6.

    Bitboards after John Tromp / Pascal Pons: column c uses bits ``c*7 .. c*7+5`` (a spare
    bit on top keeps alignments from wrapping); ``mine`` holds the stones of the player to
    move, ``mask`` all stones.
    """

    __slots__ = ("mask", "mine", "moves", "won")

    def __init__(self, mine: int = 0, mask: int = 0, moves: int = 0, won: bool = False) -> None:
        self.mine, self.mask, self.moves, self.won = mine, mask, moves, won

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (ConnectFour, (self.mine, self.mask, self.moves, self.won))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConnectFour) and (self.mine, self.mask) == (other.mine, other.mask)

    def __hash__(self) -> int:
        return hash((self.mine, self.mask))

    @property
    def to_play(self) -> int:
        """0 for the first player, 1 for the second."""
        return self.moves & 1

    def legal_moves(self) -> list[int]:
        """Columns that are not full (none once the game is over)."""
        if self.won:
            return []
        return [c for c in range(_W) if not self.mask & _TOP[c]]

    def play(self, col: int) -> ConnectFour:
        """The state after the player to move drops a stone in ``col``.

        Raises:
            ValueError: the column is full, out of range, or the game is over.
        """
        if self.won or not 0 <= col < _W or self.mask & _TOP[col]:
            raise ValueError(
                f"illegal Connect Four move {col!r}: legal moves are {self.legal_moves()}"
            )
        mask = self.mask | (self.mask + _BOTTOM[col])
        mover = self.mine | (mask ^ self.mask)
        return ConnectFour(mover ^ mask, mask, self.moves + 1, _aligned(mover))

    def is_terminal(self) -> bool:
        """Someone has four in a row, or the board is full."""
        return self.won or self.moves == _W * _H

    def winner(self) -> int | None:
        """The player who made four in a row (None: nobody, so far or a draw)."""
        return (self.moves - 1) & 1 if self.won else None

    def rollout(self, rng: random.Random) -> int | None:
        """The winner of a uniformly random playout from here (None: a draw)."""
        mine, mask, moves = self.mine, self.mask, self.moves
        if self.won:
            return (moves - 1) & 1
        full = _W * _H
        while moves < full:
            cols = [c for c in range(_W) if not mask & _TOP[c]]
            c = cols[rng.randrange(len(cols))]
            new = mask | (mask + _BOTTOM[c])
            mover = mine | (new ^ mask)
            moves += 1
            if _aligned(mover):
                return (moves - 1) & 1
            mine, mask = mover ^ new, new
        return None

    def __str__(self) -> str:
        first = self.mine if self.to_play == 0 else self.mine ^ self.mask
        rows = []
        for r in range(_H - 1, -1, -1):
            row = ""
            for c in range(_W):
                bit = 1 << (r + c * (_H + 1))
                row += "." if not self.mask & bit else ("X" if first & bit else "O")
            rows.append(row)
        return "\n".join(rows)
