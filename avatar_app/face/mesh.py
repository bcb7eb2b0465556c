"""Face mesh topology: the one place that knows mediapipe's 478-point layout.

Loaded from ``mesh_data.npz`` (built by ``tools/build_mesh_data.py`` from mediapipe's
connection lists and two public-domain portraits), so nothing here imports mediapipe:
the GPU and training paths use it without the tracker installed.

Sides are the **subject's**: ``left_eye`` is the person's left eye, which is on the
image's right in a frontal, non-mirrored photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

_DATA = Path(__file__).with_name("mesh_data.npz")

REGION_SKIN, REGION_MOUTH, REGION_EYE = 0, 1, 2


@dataclass(frozen=True)
class MeshTopology:
    """Index arrays into the 478 landmarks.

    Attributes:
        triangles: ``(F, 3) int32`` mesh triangles, including our mouth/eye hole fillers.
        triangle_region: ``(F,) int8``: REGION_SKIN, REGION_MOUTH (inside the inner lips)
            or REGION_EYE (inside an eye opening).
        face_oval: ordered outline of the face, starting at the forehead top.
        lips_outer: ordered outer lip contour.
        lips_inner_upper / lips_inner_lower: inner lip paths from the subject's right
            mouth corner to the left one (same length, same end points).
        right_eye_upper / right_eye_lower, left_eye_upper / left_eye_lower: eyelid
            paths from the outer to the inner eye corner.
        right_brow, left_brow: eyebrow points.
        right_iris, left_iris: iris centre first, then the 4 ring points.
        mirror: ``(478,)`` index of each point's left/right counterpart.
        rigid: points that move with the skull, not with expressions.
        neutral: ``(478, 3) float32`` a frontal neutral face in units of the
            inter-ocular distance, origin between the eyes, y down, z towards the
            back of the head (mediapipe's sign: smaller = closer to the camera).
    """

    triangles: np.ndarray
    triangle_region: np.ndarray
    face_oval: np.ndarray
    lips_outer: np.ndarray
    lips_inner_upper: np.ndarray
    lips_inner_lower: np.ndarray
    right_eye_upper: np.ndarray
    right_eye_lower: np.ndarray
    left_eye_upper: np.ndarray
    left_eye_lower: np.ndarray
    right_brow: np.ndarray
    left_brow: np.ndarray
    right_iris: np.ndarray
    left_iris: np.ndarray
    mirror: np.ndarray
    rigid: np.ndarray
    neutral: np.ndarray

    @property
    def right_eye(self) -> np.ndarray:
        """Closed right-eye contour (upper path then lower path back)."""
        return np.concatenate([self.right_eye_upper, self.right_eye_lower[-2:0:-1]])

    @property
    def left_eye(self) -> np.ndarray:
        return np.concatenate([self.left_eye_upper, self.left_eye_lower[-2:0:-1]])

    @property
    def lips_inner(self) -> np.ndarray:
        return np.concatenate([self.lips_inner_upper, self.lips_inner_lower[-2:0:-1]])

    @property
    def edges(self) -> np.ndarray:
        """``(E, 2)`` unique undirected edges of the skin triangles (for drawing)."""
        tri = self.triangles[self.triangle_region == REGION_SKIN]
        e = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
        return np.unique(np.sort(e, axis=1), axis=0)


@lru_cache(maxsize=1)
def topology() -> MeshTopology:
    """The mesh topology (loaded once, immutable)."""
    with np.load(_DATA) as data:
        fields = {name: data[name] for name in MeshTopology.__dataclass_fields__}
    for arr in fields.values():
        arr.setflags(write=False)
    return MeshTopology(**fields)


# Single points used by several modules (mediapipe's indices).
NOSE_TIP = 1
CHIN = 152
FOREHEAD_TOP = 10
NOSE_BRIDGE = 6  # on the midline, just below the eye line
UPPER_LIP_CENTER_INNER = 13
LOWER_LIP_CENTER_INNER = 14
# the brows' two rows (mediapipe indices, outer end to inner; the topology file holds each brow as a set)
RIGHT_BROW_LOWER = (46, 53, 52, 65, 55)
RIGHT_BROW_UPPER = (70, 63, 105, 66, 107)
LEFT_BROW_LOWER = (276, 283, 282, 295, 285)
LEFT_BROW_UPPER = (300, 293, 334, 296, 336)


EYE_CURVES = ("upper", "lower", "ring_up", "ring_low")


def eye_paths(topo: MeshTopology | None = None) -> dict[str, list[list[int]]]:
    """Landmark indices per eye (rows: subject's right, left), each path ordered from the image-left to the
    image-right end on an upright face: ``corners`` (2 each), ``iris`` (5, centre first), the ``upper`` /
    ``lower`` lid paths (corners included), and the next ring of mesh points above (``ring_up``) and below
    (``ring_low``) the opening.  The eye flow's :func:`~avatar_app.models.eye_flow.eye_parts` packs them."""
    topo = topo or topology()
    n = topo.neutral[:, :2]
    out: dict[str, list] = {k: [] for k in ("corners", "iris", *EYE_CURVES)}
    for upper, lower, iris in ((topo.right_eye_upper, topo.right_eye_lower, topo.right_iris),
                               (topo.left_eye_upper, topo.left_eye_lower, topo.left_iris)):
        if n[upper[0], 0] > n[upper[-1], 0]:
            upper, lower = upper[::-1], lower[::-1]
        out["corners"].append([int(upper[0]), int(upper[-1])])
        out["iris"].append([int(i) for i in iris])
        out["upper"].append([int(i) for i in upper])
        out["lower"].append([int(i) for i in lower])
        for name, path in (("ring_up", upper), ("ring_low", lower)):
            out[name].append(_ring(topo, path, set(upper) | set(lower)))
    return out


def _ring(topo: MeshTopology, path: np.ndarray, contour: set) -> list[int]:
    """The skin points that share a triangle with ``path``'s inner points, on the far side of
    the opening from the other lid, ordered along the eye (image left to right)."""
    n = topo.neutral[:, :2]
    a, b = n[path[0]], n[path[-1]]
    axis = b - a
    perp = np.array([-axis[1], axis[0]])
    side = np.sign((n[path[1:-1]] - a) @ perp).sum()  # which side of the corner line this lid is on
    tris = topo.triangles[topo.triangle_region == REGION_SKIN]
    near = tris[np.isin(tris, path[1:-1]).any(axis=1)]
    ring = {int(i) for i in near.ravel()} - contour
    ring = [i for i in ring if np.sign((n[i] - a) @ perp) == np.sign(side)]
    return sorted(ring, key=lambda i: float((n[i] - a) @ axis))


def eye_region_triangles(topo: MeshTopology | None = None) -> np.ndarray:
    """``(F, 2) float32``: 1 where a triangle lies in the subject's right / left eye region
    (the opening and the lid bands out to the rings of :func:`eye_paths`)."""
    topo = topo or topology()
    paths = eye_paths(topo)
    cols = []
    for e in range(2):
        region = np.concatenate([paths[k][e] for k in EYE_CURVES])
        cols.append(np.isin(topo.triangles, region).all(axis=1))
    return np.stack(cols, 1).astype(np.float32)


def eye_centers(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the (subject's) right and left eye contours: ``(D,)`` each."""
    topo = topology()
    return points[topo.right_eye].mean(axis=0), points[topo.left_eye].mean(axis=0)


def face_size(points: np.ndarray, dims: int = 2) -> float:
    """A face's size: RMS distance of the rigid points from their centroid (same units as
    ``points``; in 2-D about 0.68 inter-ocular distances on a frontal face). In 2-D (``dims=2``) a
    turned head reads smaller; in 3-D (``dims=3``, mesh points with depth) the size does not change
    with the head's rotation, so the ratio of two faces' 3-D sizes is how much nearer one is."""
    points = np.asarray(points)
    if points.shape[-1] < dims:
        raise ValueError(f"face_size in {dims}-D needs points with {dims} columns, got {points.shape}")
    xy = points[topology().rigid, :dims].astype(np.float64)
    return float(np.sqrt(((xy - xy.mean(0)) ** 2).sum(1).mean()))


def face_motion(a: np.ndarray, b: np.ndarray) -> float:
    """How far a face moved from ``a`` to ``b`` (``(478, 2|3)`` points): the median point's 2-D displacement in
    :func:`face_size` s of ``a`` (the guard's pace and speed limit, and the stress checks' jump measure)."""
    return float(np.median(np.linalg.norm(b[:, :2] - a[:, :2], axis=1))) / max(face_size(a), 1e-6)


def mouth_center(points: np.ndarray) -> np.ndarray:
    return points[topology().lips_outer].mean(axis=0)


def mouth_opening(points: np.ndarray) -> float:
    """Mean gap between the inner lips (same units as ``points``)."""
    topo = topology()
    up, lo = points[topo.lips_inner_upper[1:-1], :2], points[topo.lips_inner_lower[1:-1], :2]
    return float(np.linalg.norm(up - lo, axis=1).mean())


def mouth_fill_amount(source_gap: float, target_gap: float, size: int) -> float:
    """How much of the target's mouth opening to paint (0..1).

    Nothing while the mouth is no more open than the source's; fully painted once it
    is 3 px (at 256) wider — a source's own teeth, stretched over a wider opening,
    look worse than a painted interior.  Gaps in crop px, the source's at the target's scale
    (:class:`MouthFill`), or a head that only comes nearer reads as a mouth that opens.
    """
    excess = target_gap - source_gap
    return float(np.clip(excess / (3.0 * size / 256.0), 0.0, 1.0))


class MouthFill:
    """:func:`mouth_fill_amount` for one source and any target (points in the same crop px). When the
    target's head is nearer than the source's (the ratio of their 3-D :func:`face_size`), the source's
    lip gap is taken at the target's scale, so leaning in keeps the source's own teeth (at 1.3x the
    astronaut's smile was painted dark) and only a mouth that opens wider relative to the face is
    painted. A head further away keeps the plain comparison: scaled there too, it paints more of a
    talking mouth, and on the synthetic shot cuts the output's largest landmark jump rose from 0.072
    to 0.075 face sizes, past the stress check's 0.072 (the driver's 0.067 + detector noise).

    The resident training pairs (``train/resident.py``: GPU training and personalization, the large-zoom
    pairs among them) use the same rule; the loader's pairs (``train/inputs.py``) and the CPU
    personalization cache (``train/adapt_cached.py``) still compare unscaled gaps. ``points`` need
    their depth column (mediapipe's, scaled with x and y as :func:`~.align.rescale_points` does)."""

    def __init__(self, source_points: np.ndarray, size: int):
        self.gap = mouth_opening(source_points)
        self.face = max(face_size(source_points, dims=3), 1e-6)
        self.size = size

    def __call__(self, target_points: np.ndarray) -> float:
        nearer = max(1.0, face_size(target_points, dims=3) / self.face)  # (NaN -> 1)
        return mouth_fill_amount(self.gap * nearer, mouth_opening(target_points), self.size)
