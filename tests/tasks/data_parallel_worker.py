"""One process of the data-parallel tests (tests/tasks/test_data_parallel.py), started by a framework's launcher:
`python -m tests.tasks.data_parallel_worker JOB.json`. For each dtype of the job: train the tiny seeded model
with the job's settings in the launcher's process group, gather the predictions, and (main process) write
the final weights and predictions; then resume the job's 1-process checkpoint of that dtype, if any, in the
group and write its final weights too. After closing the group, each process writes its threads' names (Linux)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from backends._fw.parallel import layout, process_group
from backends.tensorfile import save_arrays
from tasks.train.loop import Trainer, TrainArgs, predict_all
from tasks.train.losses import LOSSES

from .test_train_support import make_runner, seeded_data, tiny_config


def train(job: dict, group, dtype: str, output_dir: Path, resume=None):
    config = tiny_config(job["family"], dropout=True)
    data = seeded_data(job["family"], config, "seqcls", rows=job["rows"])
    runner = make_runner(job["backend"], job["family"], config, "seqcls", dtype)
    args = TrainArgs(**job["settings"], progress=False, processes=group.layout.size)
    trainer = Trainer(runner, args, data, LOSSES["classification"], output_dir, group=group)
    trainer.train(resume)
    return runner, data


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    group = process_group(job["backend"], layout(job["backend"]), timeout=job["timeout"])
    out = Path(job["output_dir"])
    for dtype in job["dtypes"]:
        runner, data = train(job, group, dtype, out / dtype)
        predictions = predict_all(runner, data, job["eval_batch_size"], group=group)
        if group.layout.main:
            save_arrays(out / dtype / "final.safetensors", runner.get_params())
            save_arrays(out / dtype / "predictions.safetensors", predictions)
        if dtype in job["resume"]:
            resumed, _ = train(job, group, dtype, out / dtype / "resumed", resume=job["resume"][dtype])
            if group.layout.main:
                save_arrays(out / dtype / "resumed.safetensors", resumed.get_params())
    group.barrier()
    group.close()
    # the threads left once the group is closed: those of the collectives must be gone (not left to interpreter exit)
    (out / f"threads-after-close-{group.layout.rank}.json").write_text(json.dumps(live_thread_names()))


def live_thread_names() -> list[str]:
    """The OS names of this process's threads (Linux /proc: torch's gloo threads have no Python Thread object)."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append((Path("/proc/self/task") / task / "comm").read_text().strip())
        except FileNotFoundError:  # the thread ended between the listing and the read: it is not left over
            continue
    return sorted(names)


if __name__ == "__main__":
    main(sys.argv[1])
