"""Arrays written as a transformers-layout folder and read back through the checkpoint layer, as a
downloaded checkpoint is read."""
from __future__ import annotations

import json
from pathlib import Path

from backends.checkpoints import open_checkpoint
from backends.tensorfile import save_arrays


def read_back(folder: Path, config, arrays: dict, head: str | None = None, **options) -> dict:
    """canonical name -> array of `arrays` saved as config.json + model.safetensors in `folder` and opened
    with `open_checkpoint("hf", ...)` (every key accounted for, shapes checked)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    save_arrays(folder / "model.safetensors", arrays, {"format": "pt"})
    checkpoint = open_checkpoint("hf", folder, head=head, **options)
    try:
        return {name: checkpoint.load(name) for name in checkpoint.stored}
    finally:
        checkpoint.close()
