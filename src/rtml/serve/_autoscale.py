"""Ray Serve's request-based autoscaling policy, as a pure state machine.

::

    (now, replicas, ongoing requests summed over replicas and routers' queues) every tick
        ──▶ average over look_back_period_s ──▶ desired = ceil(replicas x (1 + (ratio - 1)
            x factor)), ratio = average / (target_ongoing_requests x replicas)
        ──▶ clipped to [min_replicas, max_replicas] ──▶ applied once the wish to go up
            (down) has held for upscale_delay_s (downscale_delay_s)
"""

from __future__ import annotations

import math
from collections import deque

from rtml.serve._config import AutoscalingConfig


class Autoscaler:
    """Decides a deployment's replica count from its ongoing requests."""

    def __init__(self, cfg: AutoscalingConfig) -> None:
        self.cfg = cfg
        self.samples: deque[tuple[float, float]] = deque()
        self.wish_since: float | None = None
        self.wish_up: bool | None = None

    def desired(self, replicas: int) -> int:
        """The replica count the recent load asks for (before the delays)."""
        c = self.cfg
        if not self.samples:
            return max(c.min_replicas, min(c.max_replicas, replicas))
        avg = sum(v for _, v in self.samples) / len(self.samples)
        if replicas == 0:
            want = 1 if avg > 0 else 0
        else:
            ratio = avg / (c.target_ongoing_requests * replicas)
            up = ratio > 1
            factor = (c.upscaling_factor if up else c.downscaling_factor) or c.smoothing_factor
            want = math.ceil(replicas * (1 + (ratio - 1) * factor) - 1e-9)
        return max(c.min_replicas, min(c.max_replicas, want))

    def observe(self, now: float, replicas: int, ongoing: float) -> int:
        """Record one sample; the replica count to run from now on."""
        c = self.cfg
        self.samples.append((now, ongoing))
        while self.samples and now - self.samples[0][0] > c.look_back_period_s:
            self.samples.popleft()
        want = self.desired(replicas)
        if want == replicas:
            self.wish_since = self.wish_up = None
            return replicas
        up = want > replicas
        if self.wish_up is not up:
            self.wish_up, self.wish_since = up, now
        delay = c.upscale_delay_s if up else c.downscale_delay_s
        if not up and want == 0 and c.downscale_to_zero_delay_s is not None:
            delay = c.downscale_to_zero_delay_s
        if replicas == 0 and up:
            delay = 0.0  # a request waits for the first replica: start it at once
        assert self.wish_since is not None
        if now - self.wish_since >= delay:
            self.wish_since = self.wish_up = None
            return want
        return replicas
