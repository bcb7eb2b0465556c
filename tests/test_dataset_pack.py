"""tools/dataset_pack.py: a prepared dataset carried as its videos plus what tracking found, whole or one side of
the split (``--split val``: the validation people's clips only, and a manifest that names only those)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from avatar_app.train.split import split_clips

ROOT = Path(__file__).resolve().parents[1]
CLIPS = Path(os.environ.get("AVATAR_APP_REAL_CLIPS", ROOT.parent / "shared" / "data" / "real_clips"))
# three people, one clip each (the corpus's file names)
NAMES = ("FuxiVirtualHuman__styletalk__KristiNoem.mp4", "FuxiVirtualHuman__styletalk__Obama_clip2.mp4",
         "FuxiVirtualHuman__styletalk__feifeili_clip1.mp4")

pytestmark = pytest.mark.skipif(not all((CLIPS / n).is_file() for n in NAMES),
                                reason="the real clips (../shared/data/real_clips) are not here")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from avatar_app.train.prepare import prepare_dataset

    base = tmp_path_factory.mktemp("pack")
    src = base / "src"
    for k, name in enumerate(NAMES):  # identity/clip layout: each clip its own person
        (src / f"person{k}").mkdir(parents=True)
        shutil.copyfile(CLIPS / name, src / f"person{k}" / name)
    prepare_dataset(src, base / "prepared", workers=1, max_frames=10, progress=False)
    return base


def test_a_validation_pack_holds_the_validation_people_only_and_unpacks_to_the_same_landmarks(prepared):
    sys.path.insert(0, str(ROOT / "tools"))
    from dataset_pack import pack, unpack

    manifest = json.loads((prepared / "prepared" / "manifest.json").read_text())
    train, val = split_clips(manifest["clips"], 0.34)
    assert val and train  # both sides hold a person, so the filter has something to leave out
    pack(prepared / "prepared", prepared / "src", prepared / "pk", split="val", val_fraction=0.34)
    unpack(prepared / "pk", prepared / "out", workers=1)
    back = json.loads((prepared / "out" / "manifest.json").read_text())
    assert sorted(c["key"] for c in back["clips"]) == val
    assert sorted(p.name for p in (prepared / "out" / "clips").iterdir()) == val
    for key in val:
        a = np.load(prepared / "prepared" / "clips" / key / "landmarks.npy")
        b = np.load(prepared / "out" / "clips" / key / "landmarks.npy")
        assert a.shape == b.shape and np.abs(a[..., :2] - b[..., :2]).max() <= 0.125 + 1e-4  # 1/4 px steps, rounded
    pack(prepared / "prepared", prepared / "src", prepared / "pk_all")
    whole = json.loads((prepared / "pk_all" / "pack.json").read_text())
    assert len(whole["clips"]) == len(manifest["clips"]) and whole["split"] == "all"
    pack(prepared / "prepared", prepared / "src", prepared / "pk_one", keys=train[:1])
    one = json.loads((prepared / "pk_one" / "pack.json").read_text())["manifest"]["clips"]
    assert [c["key"] for c in one] == train[:1]
    with pytest.raises(SystemExit, match="not among"):  # a training clip asked of the validation side
        pack(prepared / "prepared", prepared / "src", prepared / "pk_bad", split="val", val_fraction=0.34,
             keys=train[:1])
