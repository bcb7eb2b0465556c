"""A training run's scalars: appended to ``metrics.jsonl`` in the run folder, and to TensorBoard when it is installed.

Only the writing rank logs (rank 0 under torchrun); a run without a folder (personalization's in-memory
trainer) logs nothing.  TensorBoard is optional: without it a single warning says where the scalars went.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class RunLog:
    def __init__(self, run_dir: Path | None, rank: int = 0):
        self.path = run_dir / "metrics.jsonl" if run_dir is not None and rank == 0 else None
        self._writer = None  # None: not tried yet; False: TensorBoard is not installed

    def write(self, step: int, values: dict) -> None:
        """Append ``values`` (name -> number) at ``step``."""
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.path.parent / "tensorboard"))
            except ImportError:
                self._writer = False
                log.warning("tensorboard is not installed, so scalars go to %s only; install it with "
                            "pip install 'avatar-app[train]' to see them in TensorBoard", self.path)
        if self._writer:
            for k, v in values.items():
                self._writer.add_scalar(k, v, step)
