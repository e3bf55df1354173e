"""asv benchmarks of ``kernel(..., depths=...)``: every depth from one tile pass.

``track_ratio_to_deepest`` records the time of ``depths=(1, ..., 5)`` over one plain call at
depth 5, measured in the same process (target: at most 1.2; the recursion itself costs the same,
but five outputs are written instead of one, so a cheap activation on a memory-bound machine
stays above it).  ``track_ratio_to_separate_calls`` is the same over the five separate calls
it replaces (1 + 2 + 3 + 4 + 5 = 15 layer passes instead of 5).  ``track_floor_ratio`` is the
floor under the first: writing the 4 extra outputs alone (both triangles, the kernel's plan and
stores, nothing computed) over the deepest call, so ``ratio_to_deepest - 1 - floor_ratio`` is
what ``depths=`` spends above the memory traffic it cannot avoid.  ``track_ratio_to_target`` is
the first over ``bench.depths_target`` of the floor: 1.2, or 1 + floor where writing the extra
outputs alone costs more than 0.2 of the deepest call (at most 1 when the target is met).
"""

import dataclasses

import numpy as np

import ntkfast as nf
from ntkfast.bench import best_time, depths_write_floor

DEPTHS = (1, 2, 3, 4, 5)


class TimeDepths:
    params = ([2000], ["float64", "float32"], [("ntk",), ("nngp", "ntk")], ["relu", "erf"])
    param_names = ["n", "dtype", "get", "activation"]
    timeout = 120

    def setup(self, n, dtype, get, activation):
        self.X = np.random.default_rng(0).standard_normal((n, 16)).astype(dtype)
        self.arch = nf.MLP(depth=max(DEPTHS), activation=activation, W_std=1.4, b_std=0.1)
        nf.kernel(self.arch, self.X[:64], get=get, depths=DEPTHS)  # compile outside the timing
        nf.kernel(self.arch, self.X[:64], get=get)
        # outputs with their pages faulted in, outside the timing (as in bench_gram): one
        # (depths, n, n) stack per kernel, whose slices the tile kernel writes directly
        self.stacks = [np.ones((len(DEPTHS), n, n), dtype) for _ in get]
        self.outs = tuple(tuple(s[k] for s in self.stacks) for k in range(len(DEPTHS)))

    def _all(self, get):
        nf.kernel(self.arch, self.X, get=get, depths=DEPTHS, out=self.outs)

    def _deepest(self, get):
        nf.kernel(self.arch, self.X, get=get, out=self.outs[-1])

    def _separate(self, get):
        for d, out in zip(DEPTHS, self.outs):
            nf.kernel(dataclasses.replace(self.arch, depth=d), self.X, get=get, out=out)

    def time_all_depths(self, n, dtype, get, activation):
        self._all(get)

    def time_deepest(self, n, dtype, get, activation):
        self._deepest(get)

    def track_ratio_to_deepest(self, n, dtype, get, activation):
        return best_time(lambda: self._all(get)) / best_time(lambda: self._deepest(get))

    track_ratio_to_deepest.unit = "ratio"

    def track_ratio_to_separate_calls(self, n, dtype, get, activation):
        return best_time(lambda: self._all(get)) / best_time(lambda: self._separate(get))

    track_ratio_to_separate_calls.unit = "ratio"

    def track_floor_ratio(self, n, dtype, get, activation):
        return best_time(lambda: depths_write_floor(self.stacks)) / best_time(lambda: self._deepest(get))

    track_floor_ratio.unit = "ratio"

    def track_ratio_to_target(self, n, dtype, get, activation):
        deepest = best_time(lambda: self._deepest(get))
        floor = best_time(lambda: depths_write_floor(self.stacks)) / deepest
        return best_time(lambda: self._all(get)) / deepest / max(1.2, 1.0 + floor)  # bench.depths_target

    track_ratio_to_target.unit = "ratio"
