"""What one checkpoint costs in the workflow engine, by itself: a workflow of N no-op steps (our
design: one step per page) against a workflow of N no-op child workflows (a child run per page).

Run by bench/run.py in a process of its own (the engine is one per process), against the bench
database, under an application name of its own so it never touches the app's runs.
Prints one JSON object: {"steps": N, "step_ms": ..., "child_ms": ...}.
"""

from __future__ import annotations

import json
import sys
import time

from dbos import DBOS, DBOSConfig, SetWorkflowID


@DBOS.step()
def nothing(i: int) -> int:
    return i


@DBOS.workflow()
def child(i: int) -> int:
    return i


@DBOS.workflow()
def with_steps(n: int) -> int:
    return sum(nothing(i) for i in range(n))


@DBOS.workflow()
def with_children(n: int) -> int:
    return sum(DBOS.start_workflow(child, i).get_result() for i in range(n))


def main(database_url: str, n: int) -> None:
    config: DBOSConfig = {
        "name": "invoice-export-bench-checkpoint",
        "system_database_url": database_url,
        "executor_id": "bench-checkpoint",
        "application_version": "bench",
        "run_migrations": False,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        timings = {}
        for name, workflow in (("step_ms", with_steps), ("child_ms", with_children)):
            with SetWorkflowID(f"bench-{name}-{time.time_ns()}"):
                started = time.perf_counter()
                assert DBOS.start_workflow(workflow, n).get_result() == n * (n - 1) // 2
                timings[name] = (time.perf_counter() - started) * 1000 / n
        print(json.dumps({"steps": n} | timings))
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
