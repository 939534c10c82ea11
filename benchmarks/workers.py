"""The worker that the relay_actors side of the benchmark runs on its worker node."""

from __future__ import annotations

from relay_actors import Job, Worker

QUEUE = "bench"
# Jobs of this queue are never run: no node runs it (the memory workload).
IDLE_QUEUE = "bench_idle"


class Echo(Worker[int], queue=QUEUE, max_attempts=1):
    """Return args["n"]: a job with no work, whose result still proves it reached its caller."""

    def perform(self, job: Job) -> int:
        return int(job.args["n"])
