"""Send frames to a virtual camera (via pyvirtualcam) that Zoom/Meet/OBS can pick.

The virtual camera has a fixed size (e.g. 1280x720) while avatars are often square;
:func:`layout_frame` fits any image into the camera frame, keeping its aspect ratio,
and fills the bars with a blurred, stretched copy of the image.  The sink converts
the result to the pixel format chosen by the user itself (with OpenCV) so a picky
device can be served without relying on the backend's conversions.

pyvirtualcam is imported lazily: this module imports without it, and
:class:`VirtualCameraSink` raises :class:`~avatar_app.errors.DependencyError` if it
is missing.
"""

from __future__ import annotations

import platform

import cv2
import numpy as np

from avatar_app.errors import DependencyError, OutputError
from avatar_app.sinks.base import Sink

#: Pixel formats the sink can send, as accepted by ``pixel_format``.
PIXEL_FORMATS = ("bgr", "rgb", "i420", "nv12", "yuyv")

#: Width in px of the tiny copy that is stretched to make the blurred bars.
_BACKGROUND_WIDTH = 16


class VirtualCameraUnavailable(OutputError):
    """No virtual camera device could be opened (none installed, busy, bad name)."""


def setup_help(system: str | None = None) -> str:
    """How to get a virtual camera device on an operating system.

    Args:
        system: ``platform.system()`` style name ("Linux", "Windows", "Darwin");
            defaults to the current system.

    Returns:
        One or two sentences of instructions.
    """
    system = platform.system() if system is None else system
    if system == "Linux":
        return (
            "To create one on Linux, install the v4l2loopback kernel module "
            "(Debian/Ubuntu: `sudo apt install v4l2loopback-dkms`; other distributions "
            "have a package of the same name), then load it with "
            '`sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="Avatar Camera"` '
            "and start the app again."
        )
    if system == "Windows":
        return (
            "To create one on Windows, install OBS Studio and start its Virtual Camera once "
            "(Start Virtual Camera, then Stop), or install Unity Capture; "
            "then start the app again."
        )
    if system == "Darwin":
        return (
            "To create one on macOS, install OBS Studio (version 28 or newer) and start its "
            "Virtual Camera once (allow the system extension when asked), "
            "then start the app again."
        )
    return (
        f"Virtual cameras are not supported on {system or 'this system'}; "
        "use Linux (v4l2loopback), Windows or macOS (OBS Studio), or record to a file instead."
    )


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as ``(H, W, 3) uint8`` BGR (gray and BGRA are converted)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] != 3:
        raise ValueError(f"expected 3 colour channels, got shape {image.shape}")
    return image


def fit_rect(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Where an image of ``src_w x src_h`` goes when fitted (aspect kept, centred).

    Returns:
        ``(x, y, w, h)`` of the scaled image inside the ``width x height`` frame.
    """
    scale = min(width / src_w, height / src_h)
    w = min(width, max(1, round(src_w * scale)))
    h = min(height, max(1, round(src_h * scale)))
    return (width - w) // 2, (height - h) // 2, w, h


def _compose(image: np.ndarray, canvas: np.ndarray) -> None:
    """Lay ``image`` (BGR) out into ``canvas`` (``(H, W, 3)`` uint8, written in place)."""
    height, width = canvas.shape[:2]
    src_h, src_w = image.shape[:2]
    x, y, w, h = fit_rect(src_w, src_h, width, height)
    if (w, h) != (width, height):
        # Bars: a tiny stretched copy of the image, blown up to the full frame.
        small_h = max(1, round(_BACKGROUND_WIDTH * height / width))
        small = image
        if src_w > 8 * _BACKGROUND_WIDTH and src_h > 8 * small_h:
            # A cheap bilinear step first: INTER_AREA is slow for odd ratios (1 ms at 512 px).
            mid = (4 * _BACKGROUND_WIDTH, 4 * small_h)
            small = cv2.resize(small, mid, interpolation=cv2.INTER_LINEAR)
        small = cv2.resize(small, (_BACKGROUND_WIDTH, small_h), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (3, 3), 0)
        cv2.resize(small, (width, height), dst=canvas, interpolation=cv2.INTER_LINEAR)
    if (w, h) == (src_w, src_h):
        canvas[y : y + h, x : x + w] = image
    else:
        # INTER_AREA only where bilinear would alias (it is slow for ratios like 1.5).
        interp = cv2.INTER_AREA if 2 * w <= src_w else cv2.INTER_LINEAR
        # cv2 writes straight into the (row-strided) view of the canvas.
        cv2.resize(image, (w, h), dst=canvas[y : y + h, x : x + w], interpolation=interp)


def layout_frame(
    image: np.ndarray,
    width: int,
    height: int,
    mirror: bool = False,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Fit an image into a ``width x height`` frame, as the virtual camera shows it.

    The image is scaled to fit (aspect ratio kept) and centred; the bars left over
    are filled with a heavily blurred copy of the image stretched to the whole frame.

    Args:
        image: ``(h, w, 3) uint8`` BGR of any size (gray and BGRA are accepted too).
        width: output width in px.
        height: output height in px.
        mirror: flip the result horizontally (a selfie view).
        out: optional ``(height, width, 3) uint8`` array to write into.

    Returns:
        The ``(height, width, 3) uint8`` BGR frame (``out`` if given).
    """
    image = _as_bgr(image)
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    if out is None:
        out = np.empty((height, width, 3), np.uint8)
    elif out.shape != (height, width, 3) or out.dtype != np.uint8:
        raise ValueError(f"out must be ({height}, {width}, 3) uint8, got {out.dtype} {out.shape}")
    if mirror:
        tmp = np.empty_like(out)
        _compose(image, tmp)
        cv2.flip(tmp, 1, dst=out)
    else:
        _compose(image, out)
    return out


class VirtualCameraSink(Sink):
    """Stream frames to a virtual camera device through pyvirtualcam.

    The device is opened right away, so a missing virtual camera raises
    :class:`VirtualCameraUnavailable` (with setup instructions for this OS) at
    construction.  :meth:`send` does not pace: call it at the rate you produce frames.

    Args:
        width: frame width of the virtual camera in px.
        height: frame height in px.
        fps: frame rate announced to the device.
        device: device to use (Linux: ``/dev/video<n>``; Windows/macOS: the camera
            name), or ``None`` for the first available one.
        pixel_format: format sent to the device, one of :data:`PIXEL_FORMATS`
            (case-insensitive).  The YUV formats need an even width and height.
        mirror: flip frames horizontally.
        backend: pyvirtualcam backend name (``v4l2loopback``, ``obs``,
            ``unitycapture`` or a registered one), or ``None`` to try all.

    Raises:
        ValueError: bad size, fps or pixel format (a programming/config error).
        DependencyError: pyvirtualcam is not installed.
        VirtualCameraUnavailable: no virtual camera could be opened.
    """

    name = "virtual camera"

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        fps: float = 30.0,
        device: str | None = None,
        pixel_format: str = "bgr",
        mirror: bool = False,
        backend: str | None = None,
    ) -> None:
        fmt = str(pixel_format).lower()
        if fmt not in PIXEL_FORMATS:
            raise ValueError(
                f"unknown pixel format {pixel_format!r}; choose one of {', '.join(PIXEL_FORMATS)}"
            )
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        if fmt in ("i420", "nv12", "yuyv") and (width % 2 or height % 2):
            raise ValueError(
                f"pixel format {fmt} needs an even width and height, got {width}x{height}"
            )
        if not float(fps) > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.width, self.height, self.fps = width, height, float(fps)
        self.pixel_format = fmt
        self.mirror = bool(mirror)
        self._frames_sent = 0
        self._camera = None

        try:
            import pyvirtualcam
        except ImportError as exc:
            raise DependencyError(
                "The virtual camera needs the pyvirtualcam package; "
                "install it with `pip install pyvirtualcam`."
            ) from exc

        pv_fmt = {
            "bgr": pyvirtualcam.PixelFormat.BGR,
            "rgb": pyvirtualcam.PixelFormat.RGB,
            "i420": pyvirtualcam.PixelFormat.I420,
            "nv12": pyvirtualcam.PixelFormat.NV12,
            "yuyv": pyvirtualcam.PixelFormat.YUYV,
        }[fmt]
        known = getattr(getattr(pyvirtualcam, "camera", None), "BACKENDS", None)
        try:
            if backend and known is not None and backend not in known:
                raise RuntimeError(
                    f"no backend named '{backend}'; available here: "
                    f"{', '.join(known) or 'none'}"
                )
            camera = pyvirtualcam.Camera(
                width, height, self.fps, fmt=pv_fmt, device=device, backend=backend
            )
        except Exception as exc:  # pyvirtualcam raises RuntimeError / backend errors
            lines = str(exc).strip().splitlines()
            reason = (lines[0] if lines else type(exc).__name__).strip().rstrip(".")
            hint = (
                f" Check that '{device}' exists and that no other program is sending to it."
                if device
                else ""
            )
            raise VirtualCameraUnavailable(
                f"No virtual camera is available ({reason}).{hint} {setup_help()}"
            ) from exc
        self._camera = camera
        self._device: str = camera.device
        self._backend: str = camera.backend

        # Buffers reused for every frame (no per-frame allocation at full size).
        self._canvas = np.empty((height, width, 3), np.uint8)
        self._unmirrored = np.empty_like(self._canvas) if self.mirror else None
        self._payload: np.ndarray | None = None
        self._chroma: np.ndarray | None = None
        if fmt == "rgb":
            self._payload = np.empty_like(self._canvas)
        elif fmt in ("i420", "nv12"):
            self._payload = np.empty((height * 3 // 2, width), np.uint8)
            if fmt == "nv12":
                self._chroma = np.empty((2, height // 2, width // 2), np.uint8)
        elif fmt == "yuyv":
            self._payload = np.empty((height, width, 2), np.uint8)

    @property
    def device(self) -> str:
        """The device pyvirtualcam opened (e.g. ``/dev/video2``, ``OBS Virtual Camera``)."""
        return self._device

    @property
    def backend(self) -> str:
        """The pyvirtualcam backend in use (e.g. ``v4l2loopback``)."""
        return self._backend

    @property
    def frames_sent(self) -> int:
        """Number of frames sent so far."""
        return self._frames_sent

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._camera is None

    def _convert(self, bgr: np.ndarray) -> np.ndarray:
        """Convert the laid-out BGR frame to the payload in ``pixel_format``."""
        fmt, out = self.pixel_format, self._payload
        if fmt == "bgr":
            return bgr
        if fmt == "rgb":
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out)
        if fmt == "yuyv":
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_YUY2, dst=out)
        cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420, dst=out)
        if fmt == "nv12":
            # I420 and NV12 share the Y plane; interleave the U and V planes.
            h, w = self.height, self.width
            chroma = self._chroma
            chroma.reshape(-1)[:] = out[h:].reshape(-1)
            uv = out[h:].reshape(h // 2, w // 2, 2)
            uv[..., 0] = chroma[0]
            uv[..., 1] = chroma[1]
        return out

    def send(self, image: np.ndarray) -> None:
        """Lay the frame out (see :func:`layout_frame`), convert it and send it.

        Args:
            image: ``(H, W, 3) uint8`` BGR of any size.

        Raises:
            RuntimeError: the sink is already closed (a programming error).
            ValueError: the array is not an 8-bit image.
        """
        if self._camera is None:
            raise RuntimeError("VirtualCameraSink is already closed")
        image = _as_bgr(image)
        if self._unmirrored is not None:
            _compose(image, self._unmirrored)
            cv2.flip(self._unmirrored, 1, dst=self._canvas)
        else:
            _compose(image, self._canvas)
        self._camera.send(self._convert(self._canvas))
        self._frames_sent += 1

    def close(self) -> None:
        """Release the device.  Idempotent."""
        camera, self._camera = self._camera, None
        if camera is not None:
            camera.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"device={self._device!r}"
        return (
            f"VirtualCameraSink({self.width}x{self.height}@{self.fps:g}, "
            f"{self.pixel_format}, {state}, frames_sent={self._frames_sent})"
        )
