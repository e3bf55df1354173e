import os

import numpy as np
import pytest
from hypothesis import settings

# Hypothesis profiles, chosen by $HYPOTHESIS_PROFILE.  "ci": derandomized (a fixed seed, no
# example database), a fixed number of examples and no deadline, so a landing never depends on
# luck; it is the default, under $CI and also for a plain local run (.ci/run does not set $CI).
# "dev": the same counts, randomized.  "explore": ten times the examples, randomized, for bug
# hunting (HYPOTHESIS_PROFILE=explore python -m pytest tests/test_properties.py tests/test_scales.py).
# Property tests read their example counts from the loaded profile (``settings().max_examples``).
settings.register_profile("ci", derandomize=True, database=None, max_examples=60, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=60, deadline=None, print_blob=True)
settings.register_profile("explore", max_examples=600, deadline=None, print_blob=True)
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "").strip() or "ci"
if _PROFILE not in ("ci", "dev", "explore"):
    raise pytest.UsageError(f"HYPOTHESIS_PROFILE: expected 'ci', 'dev' or 'explore', got {_PROFILE!r}")
settings.load_profile(_PROFILE)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module", params=[pytest.param("cudaemu", marks=pytest.mark.cudaemu),
                                        pytest.param("cupy", marks=pytest.mark.gpu)])  # fmt: skip
def cp(request):
    """The CuPy the GPU backend runs on: "cudaemu", the real kernels of gram.cu compiled for the
    host by g++ and served through a fake cupy module (tests/cuda_emu); "cupy", a real GPU."""
    import sys

    from ntkfast.backends import gpu

    if request.param == "cupy":
        cupy = pytest.importorskip("cupy")
        if not gpu.available():
            pytest.skip("no CUDA device")
        yield cupy
        return
    from cuda_emu import fake_cupy, loader

    if not loader.available():
        pytest.skip("the CUDA emulation needs g++")
    modules = fake_cupy.modules()
    with pytest.MonkeyPatch.context() as mp:
        for name, mod in modules.items():
            mp.setitem(sys.modules, name, mod)
        gpu.clear_cache()
        yield modules["cupy"]
        gpu.clear_cache()  # the emulated modules must not outlive the emulation
