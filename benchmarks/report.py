"""The figures of each run, their medians, the printed table and the failure count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.idle import describe
from benchmarks.run import FULL, Sizes
from benchmarks.stats import median_or_none, ratio

SIDES = ("relay_actors", "floor")
MIB = 1024 * 1024

Figures = dict[str, Any]


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    digits: int
    # Reads the figure from one side's results of one run; None if absent.
    read: Callable[[Figures], float | None]
    # Reads, from relay_actors' own results, the figure the ratio divides by,
    # in place of the floor's; None compares with the floor.
    baseline: Callable[[Figures], float | None] | None = None
    # Reads the floor's figure, where it differs from `read`.
    floor_read: Callable[[Figures], float | None] | None = None


def _path(*keys: str, scale: float = 1.0) -> Callable[[Figures], float | None]:
    def read(figures: Figures) -> float | None:
        value: Any = figures
        for key in keys:
            if not isinstance(value, dict) or value.get(key) is None:
                return None
            value = value[key]
        return float(value) / scale

    return read


def _time_ratio(figures: Figures) -> float | None:
    large = _path("throughput_large", "seconds")(figures)
    small = _path("throughput_small", "seconds")(figures)
    return ratio(large, small)


def _floor_latency(phase: str, description: str, *, wal: bool = False) -> list[Metric]:
    """Return the metrics of relay_actors' latency against the floor's phase `latency_PHASE`."""
    # (figure in the metric's key, path in the phase's results, label)
    figures = [
        ("p50_ms", ("p50_ms",), "latency p50 (ms)"),
        ("p99_ms", ("p99_ms",), "latency p99 (ms)"),
    ]
    if wal:
        figures.append(
            ("wal_syncs_per_job", ("wal", "syncs_per_job"), "latency: WAL syncs per round trip")
        )
    return [
        Metric(
            f"latency_{figure}_{phase}",
            f"{label}, {description}",
            2,
            _path("latency", *keys),
            floor_read=_path(f"latency_{phase}", *keys),
        )
        for figure, keys, label in figures
    ]


def metrics(sizes: Sizes) -> list[Metric]:
    small, large = f"{sizes.small_jobs:,}", f"{sizes.large_jobs:,}"
    # 10 % over linear scaling: 4.4 for 20,000 jobs against 5,000. The target
    # is set for the full sizes; at the --quick sizes start-up costs dominate.
    target = 1.1 * sizes.large_jobs / sizes.small_jobs
    time_ratio_label = f"time {large} / time {small}"
    if sizes == FULL:
        time_ratio_label += f" (target <= {target:.1f})"
    return [
        Metric("latency_p50_ms", "latency p50 (ms)", 2, _path("latency", "p50_ms")),
        Metric("latency_p90_ms", "latency p90 (ms)", 2, _path("latency", "p90_ms")),
        Metric("latency_p99_ms", "latency p99 (ms)", 2, _path("latency", "p99_ms")),
        Metric("latency_max_ms", "latency max (ms)", 2, _path("latency", "max_ms")),
        Metric(
            "latency_wal_syncs_per_job",
            "latency: WAL syncs per round trip",
            2,
            _path("latency", "wal", "syncs_per_job"),
        ),
        *_floor_latency("durable_claims", "floor committing its claims first", wal=True),
        *_floor_latency("relay_statements", "floor with relay_actors' table and statements"),
        Metric(
            "throughput_small_jobs_per_s",
            f"throughput, {small} jobs (jobs/s)",
            0,
            _path("throughput_small", "jobs_per_s"),
        ),
        Metric(
            "throughput_large_jobs_per_s",
            f"throughput, {large} jobs (jobs/s)",
            0,
            _path("throughput_large", "jobs_per_s"),
        ),
        Metric(
            "time_ratio_large_small",
            time_ratio_label,
            2,
            _time_ratio,
        ),
        Metric(
            "wal_syncs_per_job_small",
            f"WAL syncs per job, {small} jobs",
            2,
            _path("throughput_small", "wal", "syncs_per_job"),
        ),
        Metric(
            "wal_syncs_per_job_large",
            f"WAL syncs per job, {large} jobs",
            2,
            _path("throughput_large", "wal", "syncs_per_job"),
        ),
        Metric(
            "wal_bytes_per_job_small",
            f"WAL bytes per job, {small} jobs",
            0,
            _path("throughput_small", "wal", "bytes_per_job"),
        ),
        Metric(
            "bulk_jobs_per_s",
            f"bulk async_many, {small} jobs (jobs/s); floor: its single inserts",
            0,
            _path("bulk", "jobs_per_s"),
            floor_read=_path("throughput_small", "jobs_per_s"),
        ),
        Metric(
            "bulk_wal_syncs_per_job",
            "bulk: WAL syncs per job",
            3,
            _path("bulk", "wal", "syncs_per_job"),
        ),
        Metric(
            "pgbouncer_latency_p50_ms",
            "through PgBouncer: latency p50 (ms); ratio against direct",
            2,
            _path("pgbouncer_latency", "p50_ms"),
            _path("latency", "p50_ms"),
        ),
        Metric(
            "pgbouncer_throughput_small_jobs_per_s",
            f"through PgBouncer: throughput, {small} jobs (jobs/s); ratio against direct",
            0,
            _path("pgbouncer_throughput_small", "jobs_per_s"),
            _path("throughput_small", "jobs_per_s"),
        ),
        Metric(
            "await_many_seconds",
            f"await_many over {sizes.await_many_jobs:,} relays (s)",
            3,
            _path("await_many", "await_many_seconds"),
        ),
        Metric(
            "await_many_total_seconds",
            f"insert + await_many, {sizes.await_many_jobs:,} (s)",
            3,
            _path("await_many", "total_seconds"),
        ),
        Metric(
            "bytes_per_pending_relay",
            "caller memory per pending relay (bytes)",
            0,
            _path("memory", "bytes_per_pending_relay"),
        ),
        Metric(
            "rss_with_pending_mib",
            f"caller RSS with {sizes.pending_relays:,} pending (MiB)",
            1,
            _path("memory", "rss_with_pending_bytes", scale=MIB),
        ),
        Metric(
            "rss_after_completed_mib",
            f"RSS after +{sizes.completed_relays:,} completed (MiB)",
            1,
            _path("memory", "rss_after_completed_bytes", scale=MIB),
        ),
        Metric(
            "rss_after_second_completed_mib",
            f"RSS after +{sizes.completed_relays:,} more (MiB)",
            1,
            _path("memory", "rss_after_second_completed_bytes", scale=MIB),
        ),
        Metric(
            "mailbox_outcomes",
            "results cached by the caller's mailbox at the end",
            0,
            _path("memory", "mailbox", "outcomes"),
        ),
    ]


def summarise(runs: list[dict[str, Figures]], sizes: Sizes) -> list[dict[str, Any]]:
    """Return, per metric, the median of each side over the runs and the median ratio."""
    summary = []
    for metric in metrics(sizes):
        floor_read = metric.floor_read or metric.read
        values = {
            "relay_actors": [metric.read(run["relay_actors"]) for run in runs],
            "floor": [floor_read(run["floor"]) for run in runs],
        }
        baseline = metric.baseline
        divisors = (
            values["floor"] if baseline is None else [baseline(run["relay_actors"]) for run in runs]
        )
        ratios = [
            ratio(relay, divisor)
            for relay, divisor in zip(values["relay_actors"], divisors, strict=True)
        ]
        summary.append(
            {
                "key": metric.key,
                "label": metric.label,
                "digits": metric.digits,
                "relay_actors": median_or_none(values["relay_actors"]),
                "floor": median_or_none(values["floor"]),
                "ratio": median_or_none(ratios),
                "per_run": values,
            }
        )
    return summary


def _seconds(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.2f} s"


def _commit_mode(environment: dict[str, Any]) -> str:
    """Return which of the relay_actors worker's commits wait for the WAL flush."""
    if environment.get("relaxed_outcomes"):
        return "claims and outcomes without the flush (--relaxed-outcomes)"
    if environment.get("relaxed_claims"):
        return "claims without the flush (--relaxed-claims)"
    return "all durable"


def format_table(summary: list[dict[str, Any]], environment: dict[str, Any], runs: int) -> str:
    """Return the summary as a Markdown table, preceded by the environment."""

    def cell(value: float | None, digits: int) -> str:
        return "—" if value is None else f"{value:,.{digits}f}"

    lines = [
        f"PostgreSQL {environment['postgresql']} ({environment['server']} server), "
        f"synchronous_commit={environment['synchronous_commit']}, fsync={environment['fsync']}, "
        f"wal_sync_method={environment['wal_sync_method']}; "
        f"{environment['cpu_count']} CPUs ({environment.get('cpu_model') or 'model unknown'}); "
        f"Python {environment['python']}, 10 million additions in a loop: "
        f"{_seconds(environment.get('python_loop_seconds'))}; "
        f"{describe(environment.get('idle_costs'))}; "
        f"median of {runs} run{'s' if runs != 1 else ''}; "
        f"relay_actors worker commits: {_commit_mode(environment)}",
        "",
        "| figure | relay_actors | floor | relay_actors/floor |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in summary:
        if row["relay_actors"] is None and row["floor"] is None:
            continue  # a workload that did not run, such as PgBouncer's
        lines.append(
            f"| {row['label']} | {cell(row['relay_actors'], row['digits'])} "
            f"| {cell(row['floor'], row['digits'])} | {cell(row['ratio'], 2)} |"
        )
    return "\n".join(lines)


def count_failures(runs: list[dict[str, Figures]]) -> dict[str, Any]:
    """Return the number of unexpected results per side, with a few examples."""
    counts = dict.fromkeys(SIDES, 0)
    examples: list[str] = []
    for run in runs:
        for side in SIDES:
            for workload in run[side].values():
                failures = workload.get("failures") if isinstance(workload, dict) else None
                if failures:
                    counts[side] += failures["count"]
                    examples.extend(failures["examples"][: 5 - len(examples)])
    return {"total": sum(counts.values()), **counts, "examples": examples}
