"""INT8 calibration sets and ONNX Runtime static quantization.

A calibration set is one ``.npz`` under ``calibration/``: a source portrait (its
crop, landmarks and identity embedding) and a few dozen target landmark sets —
the motions the avatar will make.  From it any model's per-network inputs are
recomputed by running the fp32 chain (so one set serves every model and
personalization), and INT8 builds read those inputs: ONNX Runtime's static
quantization here, TensorRT's calibrator in :mod:`avatar_app.inference.trt_build`.

``avatar-app engines calibrate`` records a set from the synthetic driver or a video.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputFileError, OutputError
from ..types import Landmarks, SourcePortrait

log = logging.getLogger(__name__)

FORMAT = "avatar-app-calibration"
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "calibration"


@dataclass
class CalibrationSet:
    """A source and target landmark sets (source crop px), for calibrating INT8 builds."""

    crop: np.ndarray  # (S, S, 3) uint8 BGR
    points: np.ndarray  # (478, 3) source landmarks, crop px
    identity: np.ndarray  # (128,)
    targets: np.ndarray  # (N, 478, 3) target landmarks, crop px
    description: str = ""
    _inputs: dict = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.crop, self.points, self.identity, self.targets):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.targets)

    def split(self, held_out: int) -> tuple[CalibrationSet, CalibrationSet]:
        """(calibration frames, the last ``held_out`` frames) — judge quality on frames not calibrated on."""
        if not 0 < held_out < len(self):
            raise ValueError(f"cannot hold out {held_out} of {len(self)} frames")
        cut = len(self) - held_out
        part = lambda t: CalibrationSet(self.crop, self.points, self.identity, t, self.description)  # noqa: E731
        return part(self.targets[:cut]), part(self.targets[cut:])

    def source(self) -> SourcePortrait:
        s = self.size
        return SourcePortrait(crop=self.crop, landmarks=Landmarks(self.points, (s, s)), size=s, image=self.crop,
                              crop_to_image=np.eye(2, 3))

    def inputs_for(self, model, size: int, network: str) -> list[dict[str, np.ndarray]]:
        """Network ``network``'s full inputs for every target, from ``model``'s fp32 torch chain."""
        from .networks import model_hash

        if size != self.size:
            raise ValueError(f"this calibration set is for {self.size}px avatars, not {size}px")
        key = model_hash(model)
        if key not in self._inputs:
            from .chain import NetworkChain
            from .chain_inputs import ChainInputs

            record: dict = {}
            chain = NetworkChain(model, size, "torch-cpu", "fp32", record=record)
            inputs = ChainInputs(self.source(), self.identity)
            chain.set_source(*inputs.source)
            chain.frame_numpy(*inputs.frame(Landmarks(self.points, (size, size))))  # as the animator's warm-up
            chain.reset()
            for pts in self.targets:  # in order: the enhancer's history carries from frame to frame, as live
                chain.frame_numpy(*inputs.frame(Landmarks(pts, (size, size))))
            self._inputs = {key: record}
        return self._inputs[key][network]

    # ---------------------------------------------------------------- files

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp.npz")
            np.savez_compressed(tmp, format=FORMAT, crop=self.crop, points=self.points, identity=self.identity,
                                targets=self.targets, description=self.description)
            tmp.replace(path)
        except OSError as exc:
            raise OutputError(f"Cannot write the calibration set '{path}' ({exc.strerror or exc}).") from exc
        return path

    @classmethod
    def load(cls, path: str | Path) -> CalibrationSet:
        path = Path(path)
        if not path.is_file():
            raise InputFileError(f"Calibration set '{path}' does not exist; make one with 'avatar-app engines calibrate'.")
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["format"]) != FORMAT:
                    raise KeyError("format")
                s = cls(z["crop"], z["points"].astype(np.float32), z["identity"].astype(np.float32),
                        z["targets"].astype(np.float32), str(z["description"]))
        except (OSError, KeyError, ValueError) as exc:
            raise InputFileError(f"'{path}' is not a readable avatar-app calibration set ({exc}).") from exc
        if s.crop.ndim != 3 or s.crop.shape[0] != s.crop.shape[1] or s.targets.ndim != 3 or not len(s.targets):
            raise InputFileError(f"Calibration set '{path}' is damaged (crop {s.crop.shape}, targets {s.targets.shape}).")
        return s


def record_calibration(source: SourcePortrait, drivers, identity: np.ndarray, frames: int = 48,
                       description: str = "") -> CalibrationSet:
    """A calibration set: ``source`` driven by the first ``frames`` landmark sets of ``drivers``
    (an iterable of driver :class:`~avatar_app.types.Landmarks`; the first is the neutral face)."""
    from ..face.retarget import NEURAL_MOTION_LIMITS, Retargeter, RetargetOptions

    rt = Retargeter(source.landmarks, RetargetOptions(limits=NEURAL_MOTION_LIMITS))  # the poses the networks get
    targets = []
    for lm in drivers:
        if lm is None:
            continue
        if not rt.calibrated:
            rt.calibrate(lm)
        targets.append(rt(lm).points)
        if len(targets) >= frames:
            break
    if len(targets) < 2:
        raise InputFileError(f"Only {len(targets)} frame(s) with a face were found; a calibration set needs at least 2.")
    return CalibrationSet(source.crop, source.landmarks.points, np.asarray(identity, np.float32),
                          np.stack(targets).astype(np.float32), description)
