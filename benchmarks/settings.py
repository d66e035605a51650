"""Django settings of the benchmarks: the tests' settings on a throwaway database.

:func:`benchmarks.common.bench_database` creates that database and names it in
``RUNWAY_BENCH_DATABASE`` before Django is set up, so subprocesses find it too.
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

DATABASES["default"]["NAME"] = os.environ["RUNWAY_BENCH_DATABASE"]
DATABASES["default"].pop("TEST", None)
LOGGING_CONFIG = None
