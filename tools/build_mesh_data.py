"""Build ``avatar_app/face/mesh_data.npz`` (run once by a developer; needs mediapipe).

What it derives, and from what:

* **Triangles** of the 468-point face mesh: mediapipe ships the mesh only as an edge
  list (``FACEMESH_TESSELATION``).  Triangles are the 3-cliques of that graph, less the
  few cliques that are not faces (all three of their edges are shared by three
  cliques).  The count is checked against Euler's formula for a sphere with four
  holes (the outline, the mouth and two eyes).
* **Hole fillers** we add ourselves: the mouth and both eye openings are holes in the
  mesh; each is closed by a strip of triangles between its upper and lower contour,
  so an opening mouth or a closing eye has triangles to stretch or collapse.
* **Ordered contours** (face oval, lips, eyes, brows, irises) from mediapipe's
  connection sets.
* **A neutral frontal face**: mediapipe's landmarks on two public-domain portraits
  (``assets/portraits``), each rotated to frontal, scaled to unit inter-ocular
  distance, mirrored and averaged.  The synthetic driver animates this face.
* **Mirror map** (left/right landmark correspondence) and the **rigid set** (points
  that move with the skull, not with expressions), used by retargeting.

Usage: ``python tools/build_mesh_data.py`` from the repository root.
"""

from __future__ import annotations

import collections
import itertools
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.python.solutions import face_mesh_connections as fmc
from scipy.optimize import linear_sum_assignment

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "avatar_app" / "face" / "mesh_data.npz"
PORTRAITS = [ROOT / "assets" / "portraits" / "astronaut.jpg", ROOT / "assets" / "portraits" / "grace_hopper.jpg"]

# Well-known mediapipe indices (subject's right = image left on a frontal face).
R_EYE_OUTER, R_EYE_INNER, L_EYE_OUTER, L_EYE_INNER = 33, 133, 263, 362
MOUTH_INNER_R, MOUTH_INNER_L = 78, 308
FOREHEAD_TOP, CHIN = 10, 152


def mesh_triangles() -> np.ndarray:
    edges = {tuple(sorted(e)) for e in fmc.FACEMESH_TESSELATION}
    adj = collections.defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    cliques = {tuple(sorted((a, b, c))) for a, b in edges for c in adj[a] & adj[b]}
    use = collections.Counter(e for t in cliques for e in itertools.combinations(t, 2))
    faces = [t for t in cliques if not all(use[e] == 3 for e in itertools.combinations(t, 2))]
    n_vertices = len(adj)
    expected = len(edges) - n_vertices + (2 - 4)  # F = E - V + chi, chi = 2 - holes
    assert len(faces) == expected, (len(faces), expected)
    return np.array(sorted(faces), dtype=np.int32)


def ordered_loop(connections, start: int | None = None) -> list[int]:
    """Walk a closed contour given as an edge set; returns the vertices in order."""
    adj = collections.defaultdict(list)
    for a, b in connections:
        adj[a].append(b)
        adj[b].append(a)
    v0 = start if start is not None else min(adj)
    loop, prev, v = [v0], None, v0
    while True:
        nxt = [u for u in adj[v] if u != prev]
        if not nxt:
            break
        prev, v = v, nxt[0]
        if v == v0:
            break
        loop.append(v)
    return loop


def split_cycles(connections) -> list[set]:
    adj = collections.defaultdict(set)
    for a, b in connections:
        adj[a].add(b)
        adj[b].add(a)
    seen, comps = set(), []
    for s in adj:
        if s in seen:
            continue
        comp, stack = set(), [s]
        while stack:
            v = stack.pop()
            if v not in comp:
                comp.add(v)
                stack.extend(adj[v])
        seen |= comp
        comps.append(comp)
    return comps


def split_upper_lower(loop: list[int], c0: int, c1: int, pts: np.ndarray):
    """Split a closed contour at corners c0, c1 into (upper, lower) paths c0 -> c1."""
    i0 = loop.index(c0)
    loop = loop[i0:] + loop[:i0]
    i1 = loop.index(c1)
    path_a = loop[: i1 + 1]
    path_b = [c0] + loop[i1:][::-1]
    if pts[path_a[1:-1], 1].mean() < pts[path_b[1:-1], 1].mean():
        return path_a, path_b
    return path_b, path_a


def strip_triangles(upper: list[int], lower: list[int]) -> list[tuple[int, int, int]]:
    """Triangles closing the hole between two paths sharing their end points."""
    assert upper[0] == lower[0] and upper[-1] == lower[-1] and len(upper) == len(lower)
    u, lo = upper, lower
    tris = [(u[0], u[1], lo[1])]
    for i in range(1, len(u) - 2):
        tris += [(u[i], u[i + 1], lo[i + 1]), (u[i], lo[i + 1], lo[i])]
    tris.append((u[-2], u[-1], lo[-2]))
    return tris


def detect(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    h, w = img.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as fm:
        res = fm.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    lm = res.multi_face_landmarks[0].landmark
    return np.array([[p.x * w, p.y * h, p.z * w] for p in lm], dtype=np.float64)


def frontalize(p: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Rotate/scale points so the face is frontal, eyes level, unit inter-ocular distance."""
    x_axis = np.mean([p[b] - p[a] for a, b in pairs], axis=0)
    x_axis /= np.linalg.norm(x_axis)
    up = p[CHIN] - p[FOREHEAD_TOP]  # points down the face (image y)
    y_axis = up - x_axis * (up @ x_axis)
    y_axis /= np.linalg.norm(y_axis)
    z_axis = np.cross(x_axis, y_axis)
    rot = np.stack([x_axis, y_axis, z_axis])
    eye_r = p[[R_EYE_OUTER, R_EYE_INNER]].mean(0)
    eye_l = p[[L_EYE_OUTER, L_EYE_INNER]].mean(0)
    q = (p - (eye_r + eye_l) / 2) @ rot.T
    return q / np.linalg.norm(eye_l - eye_r)


def mirror_map(q: np.ndarray) -> np.ndarray:
    """mirror[i] = the index whose position is i's reflection (a one-to-one assignment)."""
    m = q.copy()
    m[:, 0] *= -1
    cost = np.linalg.norm(q[:, None, :] - m[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    mirror = np.empty(len(q), dtype=np.int64)
    mirror[cols] = rows
    return mirror


def main() -> None:
    tris = mesh_triangles()
    oval = ordered_loop(fmc.FACEMESH_FACE_OVAL, start=FOREHEAD_TOP)
    eye_r = ordered_loop(fmc.FACEMESH_RIGHT_EYE, start=R_EYE_OUTER)
    eye_l = ordered_loop(fmc.FACEMESH_LEFT_EYE, start=L_EYE_OUTER)
    brow_r = sorted({v for e in fmc.FACEMESH_RIGHT_EYEBROW for v in e})
    brow_l = sorted({v for e in fmc.FACEMESH_LEFT_EYEBROW for v in e})
    iris_r = sorted({v for e in fmc.FACEMESH_RIGHT_IRIS for v in e})
    iris_l = sorted({v for e in fmc.FACEMESH_LEFT_IRIS for v in e})
    lip_cycles = split_cycles(fmc.FACEMESH_LIPS)
    inner = next(c for c in lip_cycles if MOUTH_INNER_R in c)
    outer = next(c for c in lip_cycles if MOUTH_INNER_R not in c)
    lips_inner = ordered_loop([e for e in fmc.FACEMESH_LIPS if e[0] in inner], start=MOUTH_INNER_R)
    lips_outer = ordered_loop([e for e in fmc.FACEMESH_LIPS if e[0] in outer], start=61)

    faces = [frontalize(detect(p), [(R_EYE_OUTER, L_EYE_OUTER), (R_EYE_INNER, L_EYE_INNER)]) for p in PORTRAITS]
    mirror = mirror_map(np.mean(faces, axis=0)[:468])
    mirror = np.concatenate([mirror, [473, 474, 475, 476, 477, 468, 469, 470, 471, 472]])  # irises swap sides
    # Iris ring order: mediapipe's 469..472 ring is mirrored left-right by 474..477 in the same order
    # except that 'right of centre' becomes 'left of centre'; keep the ring points by nearest match.
    for c_src, c_dst in ((468, 473), (473, 468)):
        ring_src = list(range(c_src + 1, c_src + 5))
        ring_dst = list(range(c_dst + 1, c_dst + 5))
        for i in ring_src:
            rel = faces[0][i] - faces[0][c_src]
            rel_m = rel * np.array([-1, 1, 1])
            best = min(ring_dst, key=lambda j: np.linalg.norm(faces[0][j] - faces[0][c_dst] - rel_m))
            mirror[i] = best
    assert np.array_equal(mirror[mirror], np.arange(478)), "mirror map is not an involution"

    sym = []
    for q in faces:
        pairs = [(i, int(mirror[i])) for i in range(468) if mirror[i] != i and q[i, 0] < 0]
        q = frontalize(q * 1.0, pairs)  # refine the frame with all symmetric pairs
        m = q[mirror].copy()
        m[:, 0] *= -1
        sym.append((q + m) / 2)
    neutral = np.mean(sym, axis=0)
    # Close the mouth and keep the eyes as detected: upper and lower inner lips meet.
    up_in, lo_in = split_upper_lower(lips_inner, MOUTH_INNER_R, MOUTH_INNER_L, neutral)
    mid = (neutral[up_in] + neutral[lo_in]) / 2
    neutral[up_in[1:-1]] = mid[1:-1]
    neutral[lo_in[1:-1]] = mid[1:-1]

    up_r, lo_r = split_upper_lower(eye_r, R_EYE_OUTER, R_EYE_INNER, neutral)
    up_l, lo_l = split_upper_lower(eye_l, L_EYE_OUTER, L_EYE_INNER, neutral)
    mouth_fill = strip_triangles(up_in, lo_in)
    eye_fill = strip_triangles(up_r, lo_r) + strip_triangles(up_l, lo_l)
    all_tris = np.concatenate([tris, np.array(mouth_fill), np.array(eye_fill)]).astype(np.int32)
    region = np.concatenate([np.zeros(len(tris)), np.ones(len(mouth_fill)), np.full(len(eye_fill), 2)]).astype(np.int8)

    eye_c_r, eye_c_l = neutral[eye_r].mean(0), neutral[eye_l].mean(0)
    nose_bottom_y = neutral[2, 1]
    brows = set(brow_r) | set(brow_l)
    rigid = [
        i for i in range(468)
        if neutral[i, 1] < nose_bottom_y
        and min(np.linalg.norm(neutral[i, :2] - eye_c_r[:2]), np.linalg.norm(neutral[i, :2] - eye_c_l[:2])) > 0.42
        and i not in brows
    ]

    np.savez_compressed(
        OUT,
        triangles=all_tris,
        triangle_region=region,
        face_oval=np.array(oval, np.int32),
        lips_outer=np.array(lips_outer, np.int32),
        lips_inner_upper=np.array(up_in, np.int32),
        lips_inner_lower=np.array(lo_in, np.int32),
        right_eye_upper=np.array(up_r, np.int32),
        right_eye_lower=np.array(lo_r, np.int32),
        left_eye_upper=np.array(up_l, np.int32),
        left_eye_lower=np.array(lo_l, np.int32),
        right_brow=np.array(brow_r, np.int32),
        left_brow=np.array(brow_l, np.int32),
        right_iris=np.array([468] + [i for i in iris_r if i != 468], np.int32),
        left_iris=np.array([473] + [i for i in iris_l if i != 473], np.int32),
        mirror=mirror.astype(np.int32),
        rigid=np.array(rigid, np.int32),
        neutral=neutral.astype(np.float32),
    )
    print(f"wrote {OUT}: {len(tris)} mesh + {len(mouth_fill)} mouth + {len(eye_fill)} eye triangles, "
          f"{len(rigid)} rigid points")


if __name__ == "__main__":
    main()
