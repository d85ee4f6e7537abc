"""`MetricsAccumulator` (the seed's name): turns a stream of values of one metric into the aggregates a
plugin asked for — the value itself, its running mean, a sliding mean, the minimum and the maximum."""

from __future__ import annotations

from collections import deque


class MetricsAccumulator:
    """Args:
        name: the metric it accumulates (e.g. "train_loss").
        calc_mean, calc_sliding, calc_min, calc_max: which aggregates to report, as `<name>_mean`,
            `<name>_sliding`, `<name>_min`, `<name>_max`.
        window_size: values in the sliding mean (>= 1; default 10).
    """

    def __init__(self, name: str, calc_mean: bool = False, calc_sliding: bool = False, calc_min: bool = False,
                 calc_max: bool = False, window_size: int = 10) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, not {window_size}")
        self.name = name
        self.calc_mean, self.calc_sliding, self.calc_min, self.calc_max = calc_mean, calc_sliding, calc_min, calc_max
        self._window: deque[float] = deque(maxlen=window_size)
        self._count = 0
        self._sum = 0.0
        self._min = float("inf")
        self._max = float("-inf")

    def accumulate(self, value: float) -> dict[str, float]:
        """Adds a value; returns the metrics to log for it."""
        self._count += 1
        self._sum += value
        self._window.append(value)
        self._min = min(self._min, value)
        self._max = max(self._max, value)
        metrics = {self.name: value}
        if self.calc_mean:
            metrics[f"{self.name}_mean"] = self._sum / self._count
        if self.calc_sliding:
            metrics[f"{self.name}_sliding"] = sum(self._window) / len(self._window)
        if self.calc_min:
            metrics[f"{self.name}_min"] = self._min
        if self.calc_max:
            metrics[f"{self.name}_max"] = self._max
        return metrics

    def reset(self) -> None:
        self._window.clear()
        self._count, self._sum, self._min, self._max = 0, 0.0, float("inf"), float("-inf")
