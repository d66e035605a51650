"""Each benchmark still runs (``--quick``) and prints its goal lines; its numbers are not judged.

Timings on a shared machine are noise; the figures are read from ``make bench`` instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run_benchmark(name: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        # bench_economy's --quick is 16 small simulations, two at a time.
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("name", "goals"),
    [
        ("bench_throughput", ["throughput", "throughput_vs_naive", "overhead_vs_raw_http"]),
        ("bench_queries", ["queries_per_quiet_task", "queries_per_transition"]),
        ("bench_memory", ["memory_ratio"]),
        ("bench_cleaning", ["cleaning_wide_vs_json_loads", "cleaning_deep_vs_json_loads"]),
        (
            "bench_scale",
            [
                "claim_ms",
                "claim_database_ms",
                "round_db_share",
                "admin_list_ms",
                "admin_status_ms",
                "admin_stuck_ms",
                "admin_year_ms",
                "admin_search_ms",
                "event_list_ms",
                "status_json_ms",
                "sweep_queries_large_vs_small",
                "idle_prune_ms",
            ],
        ),
        (
            "bench_economy",
            [
                "economy_fine_calls_vs_sdk",
                "economy_fine_p95_delay",
                "economy_coarse_calls_vs_sdk",
                "economy_coarse_p95_delay",
                "economy_history_calls_vs_sdk",
                "economy_history_p95_delay",
                "economy_no_history_calls_vs_today",
                "economy_no_history_p95_delay",
                "economy_misleading_x2_calls_vs_today",
                "economy_misleading_x2_p95_delay",
                "economy_misleading_x05_calls_vs_today",
                "economy_misleading_x05_p95_delay",
                "economy_fine_history_calls_vs_today",
                "economy_callbacks_calls_vs_sdk",
                "economy_callbacks_p95_delay",
                "economy_lost_callbacks_p95_delay",
                "economy_fallback_engaged_after",
                "economy_fallback_p95_delay",
            ],
        ),
        (
            "bench_storm",
            [
                "storm_p95_delay_vs_baseline",
                "storm_max_delay_vs_old_backoff",
                "storm_calls_vs_baseline",
            ],
        ),
    ],
)
def test_benchmark_prints_its_goals(name, goals):
    out = run_benchmark(name)

    printed = [line.split(":")[0] for line in out.splitlines() if line.startswith("goal ")]
    assert printed == [f"goal {goal}" for goal in goals]


@pytest.mark.postgres
def test_benchmark_scaleout_prints_its_goals():
    out = run_benchmark("bench_scaleout")

    printed = [line.split(":")[0] for line in out.splitlines() if line.startswith("goal ")]
    assert printed == ["goal scaleout", "goal scaleout_polled_twice"]
