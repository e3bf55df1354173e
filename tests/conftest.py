import os

import numpy as np
import pytest
from hypothesis import settings

# Hypothesis profiles.  "ci" (the default when $CI is set): derandomized, a fixed number of
# examples and no deadline, so a landing never depends on luck.  "explore": ten times the
# examples, randomized, for local bug hunting (HYPOTHESIS_PROFILE=explore).  "dev" (the local
# default): randomized at the CI counts.  Property tests read their example counts from the
# loaded profile (``settings().max_examples``) instead of fixing them.
settings.register_profile("ci", derandomize=True, database=None, max_examples=60, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=60, deadline=None, print_blob=True)
settings.register_profile("explore", max_examples=600, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)
