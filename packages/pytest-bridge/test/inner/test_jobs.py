import os

import pytest


@pytest.mark.parametrize("i", range(int(os.environ.get("INNER_TESTS", "15"))))
def test_job(i, job):
    job(float(os.environ.get("INNER_SECONDS", "0.2")))
