"""Reassemble a painting from GCompris's jigsaw activity: how ``assets/portraits/mona_lisa.jpg`` was made.

No portrait painting could be had from PyPI; Debian's ``gcompris-qt-data`` (3.1-2) ships reproductions of
public-domain paintings cut into jigsaw pieces for its "paintings" activity, inside a Qt resource file. Each
board (``board/boardN_0.qml``) lists its pieces with their centres as fractions of a 702 x 515 board; the pieces
are webp images with alpha, so laying each at its place rebuilds the picture.

    apt-get download gcompris-qt-data && dpkg -x gcompris-qt-data_*.deb deb
    python tools/gcompris_painting.py deb/usr/share/gcompris-qt/rcc/paintings.rcc --board 14 --out mona_lisa.jpg

Board 14 is Leonardo da Vinci's Mona Lisa (1503-19). The output is cropped to the pieces' extent.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import cv2
import numpy as np

BOARD = (702, 515)  # the boards' size, px (each board's SHAPE_BACKGROUND_IMAGE)
PIECE = re.compile(r'"pixmapfile"\s*:\s*"(image/[^"]+)",\s*"x"\s*:\s*"([\d.]+)",\s*"y"\s*:\s*"([\d.]+)"')


def _reader(rcc: Path):
    from PySide6.QtCore import QFile, QResource

    if not QResource.registerResource(str(rcc)):
        raise SystemExit(f"{rcc} is not a Qt resource file")

    def read(name: str) -> bytes:
        f = QFile(f":/gcompris/src/activities/paintings/resource/{name}")
        if not f.open(QFile.ReadOnly):
            raise SystemExit(f"{name} is not in {rcc}")
        return bytes(f.readAll())

    return read


def assemble(read, board: int) -> np.ndarray:
    """Board ``board``'s picture (BGR uint8), cropped to where its pieces lie."""
    pieces = PIECE.findall(read(f"board/board{board}_0.qml").decode())
    if not pieces:
        raise SystemExit(f"board {board} lists no pieces")
    w, h = BOARD
    pad = 512  # room for a piece reaching past the board's edge
    cover = np.zeros((h + 2 * pad, w + 2 * pad), np.float32)
    colour = np.zeros(cover.shape + (3,), np.float32)
    for name, fx, fy in pieces:
        im = cv2.imdecode(np.frombuffer(read(name), np.uint8), cv2.IMREAD_UNCHANGED)
        if im is None or im.ndim != 3 or im.shape[2] != 4:
            raise SystemExit(f"{name} is not an image with an alpha channel")
        ph, pw = im.shape[:2]
        x0, y0 = pad + int(round(float(fx) * w - pw / 2)), pad + int(round(float(fy) * h - ph / 2))
        alpha = im[..., 3].astype(np.float32) / 255.0
        region = (slice(y0, y0 + ph), slice(x0, x0 + pw))
        colour[region] = colour[region] * (1 - alpha[..., None]) + im[..., :3] * alpha[..., None]
        cover[region] = np.maximum(cover[region], alpha)
    ys, xs = np.nonzero(cover > 0.5)
    return np.clip(colour[ys.min():ys.max() + 1, xs.min():xs.max() + 1], 0, 255).round().astype(np.uint8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rcc", type=Path, help="gcompris-qt-data's paintings.rcc")
    ap.add_argument("--board", type=int, default=14, help="which board (14: the Mona Lisa)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quality", type=int, default=95, help="JPEG quality")
    args = ap.parse_args()
    picture = assemble(_reader(args.rcc), args.board)
    cv2.imwrite(str(args.out), picture, [cv2.IMWRITE_JPEG_QUALITY, args.quality])
    print(f"{args.out}: {picture.shape[1]} x {picture.shape[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
