"""`fsd view RUN`: the seeds' Gaussian splats in the browser, served by viser (the viewer of gsplat / nerfstudio).

RUN is a gen-3d run folder (run.json, seed_S/gaussians.ply) or a sweep folder of gen-3d runs written by
`fsd batch` (sweep.json, <run>/<output>/seed_S/gaussians.ply). The page has
    a seed selector, a method selector ("side by side" for a sweep with several methods: FSD beside SDS, same
    seed and same other settings), a settings selector where a sweep varies more than the method,
    the run's evaluation cameras as frustums and its turntable orbit as a line (a sweep's first run's), and a
    button that flies the browser's camera along that orbit.
Conventions: fsd3d.cameras (world +z up, OpenCV world-to-camera viewmats); viser's cameras are OpenCV too, so a
camera-to-world pose is the inverse viewmat as is. Splats: covariance Sigma = R S^2 R^T (fsd3d.renderer, step 1),
colour the degree-0 SH colour clipped to [0, 1] (viser takes no SH), opacity sigmoid(logit).
The server binds 127.0.0.1 unless told otherwise and prints one line with the URL.
"""
from __future__ import annotations

import contextlib
import io
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fsd2d.errors import InputError
from fsd2d.folders import RUN_RECORD, SEEDS, SWEEP_RECORD
from fsd2d.io import read_object
from fsd3d.cameras import Camera
from fsd3d.gen3d import run_config
from fsd3d.gaussians import SH_C0, GaussianScene
from fsd3d.ply import load_ply
from fsd3d.renderer import quat_to_rotmat
from fsdbatch.layout import SweepFolder, is_sweep, seed_dirs  # sweep.json and done.json as `fsd gather` checks them

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "SIDE_BY_SIDE", "SplatEntry", "Viewer", "find_splats", "splat_arrays"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
SIDE_BY_SIDE = "side by side"
ORBIT_FPS = 12.5  # the turntable's frame rate (fsd3d.outputs.TURNTABLE_FPS)
PLY = "gaussians.ply"  # a seed's scene (fsd3d.outputs)
GAP = 0.25  # world units between two scenes shown side by side
VIEW_BACKOFF = 2.0  # the browser's first camera: the run's first orbit camera moved this many times as far out


@dataclass(frozen=True)
class SplatEntry:
    """One seed's scene in a run (or in one run of a sweep)."""

    ply: Path
    seed: int
    method: str  # gen-3d's --method of the run ('?' when its run.json is missing)
    settings: str  # the sweep's other swept settings, 'k=v, ...' ('' for a single run)
    run_dir: Path  # the gen-3d output folder holding run.json and seed_S/


def _run_entries(run_dir: Path, settings: str) -> list[SplatEntry]:
    method = "?"
    if (run_dir / RUN_RECORD).is_file():
        train = read_object(run_dir / RUN_RECORD).get("config", {}).get("train", {})
        method = str(train.get("method", "?")) if isinstance(train, dict) else "?"
    return [SplatEntry(d / PLY, seed, method, settings, run_dir) for seed, d in seed_dirs(run_dir)
            if (d / PLY).is_file()]


def find_splats(folder: Path) -> list[SplatEntry]:
    """Every seed_S/gaussians.ply of a gen-3d run folder, or of every finished-or-not run of a sweep folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give a gen-3d run folder or a sweep folder")
    if is_sweep(folder):
        sweep = SweepFolder.open(folder)
        if sweep.command != "gen-3d":
            raise InputError(f"{sweep.path / SWEEP_RECORD}: not a sweep of gen-3d runs (command {sweep.command!r}); "
                             "only 3D runs have splats to view")
        others = [k for k in sweep.snapshot["swept"] if k != "method"]
        entries = []
        for run in sweep.runs:
            settings = ", ".join(f"{k}={run.params.get(k)}" for k in others)
            entries += _run_entries(run.outputs(), settings)  # a run not finished yet: what it has written so far
    else:
        entries = _run_entries(folder, "")
    if not entries:
        raise InputError(f"{folder} holds no {SEEDS}/{PLY}: give a gen-3d run folder (--out of gen-3d) "
                         "or a sweep folder of gen-3d runs")
    return entries


def splat_arrays(scene: GaussianScene) -> dict[str, np.ndarray]:
    """viser's add_gaussian_splats arguments: centers [N, 3], covariances [N, 3, 3] = R S^2 R^T,
    rgbs [N, 3] in [0, 1] (degree-0 colour), opacities [N, 1] in (0, 1); float32."""
    with torch.no_grad():
        rot = quat_to_rotmat(scene.quats.detach().double())  # [N, 3, 3]
        s2 = scene.scales().detach().double() ** 2  # [N, 3]
        cov = rot @ torch.diag_embed(s2) @ rot.transpose(-1, -2)  # [N, 3, 3]
        rgb = (SH_C0 * scene.sh0.detach().double() + 0.5).clamp(0.0, 1.0)  # [N, 3]
        opacity = scene.opacities().detach().float().cpu()[:, None]  # [N, 1]
        return {"centers": scene.means.detach().float().cpu().numpy(), "covariances": cov.float().cpu().numpy(),
                "rgbs": rgb.float().cpu().numpy(), "opacities": opacity.numpy()}


def _c2w(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """(wxyz [4], position [3]) of the camera-to-world pose (OpenCV axes) of one of our cameras."""
    import viser.transforms as vtf

    vm = camera.viewmat.detach().double().cpu().numpy()  # [4, 4] world-to-camera
    rot = vm[:3, :3].T  # camera-to-world rotation
    return vtf.SO3.from_matrix(rot).wxyz, -rot @ vm[:3, 3]


class Viewer:
    """A viser server showing `entries` (find_splats); `show` picks what is on screen."""

    def __init__(self, entries: list[SplatEntry], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 label: str = "fsd"):
        import viser

        self.entries = entries
        self._cache: dict[Path, dict[str, np.ndarray]] = {}
        self._nodes: list = []
        self._lock = threading.Lock()
        self.seeds = sorted({e.seed for e in entries})
        self.methods = list(dict.fromkeys(e.method for e in entries))
        self.settings = list(dict.fromkeys(e.settings for e in entries))
        config, res = run_config(entries[0].run_dir / RUN_RECORD)
        self.eval_cameras = config.train.cameras.evaluation_cameras(res, config.eval_views)
        self.orbit = config.train.cameras.evaluation_cameras(res, config.turntable_frames)
        with contextlib.redirect_stdout(io.StringIO()):  # viser prints a panel of its own; serve() prints one line
            self.server = viser.ViserServer(host=host, port=port, label=label, verbose=False)
        self.host = host
        self.server.scene.set_up_direction("+z")
        # the browser starts on the ray of the orbit camera halfway between the first two evaluation views (no
        # frustum in front of the object), VIEW_BACKOFF times as far out: the whole orbit is in sight
        self.start = self.orbit[len(self.orbit) // (2 * len(self.eval_cameras))]
        self.server.initial_camera.position = tuple((VIEW_BACKOFF * self.start.position.double()).tolist())
        self.server.initial_camera.look_at = (0.0, 0.0, 0.0)
        self.server.initial_camera.fov = math.radians(self.start.fov)
        self._add_orbit()
        gui = self.server.gui
        method_options = self.methods + ([SIDE_BY_SIDE] if len(self.methods) > 1 else [])
        self.seed_box = gui.add_dropdown("seed", [str(s) for s in self.seeds], initial_value=str(self.seeds[0]))
        self.method_box = gui.add_dropdown("method", method_options, initial_value=method_options[-1])
        self.settings_box = gui.add_dropdown("settings", self.settings, initial_value=self.settings[0],
                                             visible=len(self.settings) > 1)
        self.orbit_box = gui.add_checkbox("show cameras", True)
        self.fly_button = gui.add_button("fly the orbit")
        for box in (self.seed_box, self.method_box, self.settings_box):
            box.on_update(lambda _: self._refresh())
        self.orbit_box.on_update(lambda _: self._show_orbit(self.orbit_box.value))
        self.fly_button.on_click(lambda event: self.fly(event.client))
        self._refresh()

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "localhost"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.server.get_port()}"

    def _add_orbit(self) -> None:
        cam = self.eval_cameras[0]
        self._orbit_nodes = []
        for i, c in enumerate(self.eval_cameras):
            wxyz, pos = _c2w(c)
            self._orbit_nodes.append(self.server.scene.add_camera_frustum(
                f"/orbit/view_{i}", fov=math.radians(c.fov), aspect=cam.width / cam.height, scale=0.1,
                thickness=0.005, color=(90, 90, 200), wxyz=wxyz, position=pos))
        path = np.stack([c.position.double().cpu().numpy() for c in self.orbit])  # [T, 3]
        segments = np.stack([path, np.roll(path, -1, axis=0)], axis=1)  # [T, 2, 3] closed loop
        self._orbit_nodes.append(self.server.scene.add_line_segments(
            "/orbit/path", segments.astype(np.float32), colors=(90, 90, 200), thickness=0.005))

    def _show_orbit(self, visible: bool) -> None:
        for node in self._orbit_nodes:
            node.visible = visible

    def _arrays(self, entry: SplatEntry) -> dict[str, np.ndarray]:
        if entry.ply not in self._cache:
            self._cache[entry.ply] = splat_arrays(load_ply(entry.ply))
        return self._cache[entry.ply]

    def _refresh(self) -> None:
        self.show(int(self.seed_box.value), self.method_box.value, self.settings_box.value)

    def show(self, seed: int, method: str, settings: str = "") -> list[SplatEntry]:
        """Put the scenes of (seed, method or SIDE_BY_SIDE, settings) on screen; returns them, left to right.
        Side by side, the scenes sit along the starting camera's right vector, GAP apart."""
        methods = self.methods if method == SIDE_BY_SIDE else [method]
        picked = [e for m in methods for e in self.entries if (e.seed, e.method, e.settings) == (seed, m, settings)]
        with self._lock:
            for node in self._nodes:
                node.remove()
            self._nodes = []
            arrays = [self._arrays(e) for e in picked]
            widths = [2 * float(np.abs(a["centers"]).max(initial=0.0)) + 0.1 for a in arrays]
            right = self.start.viewmat[0, :3].double().cpu().numpy()  # [3] camera x axis in world (row 0 of R)
            offsets = np.cumsum([0.0] + [0.5 * (a + b) + GAP for a, b in zip(widths, widths[1:])])
            offsets -= offsets.mean() if len(offsets) else 0.0
            for i, (entry, a, off) in enumerate(zip(picked, arrays, offsets)):
                pos = off * right
                self._nodes.append(self.server.scene.add_gaussian_splats(f"/splats/{i}", position=pos, **a))
                if len(picked) > 1:
                    self._nodes.append(self.server.scene.add_label(
                        f"/labels/{i}", entry.method, position=pos + (0.0, 0.0, 0.5 * widths[i] + 0.05)))
        return picked

    def fly(self, client) -> None:
        """Move a browser's camera once along the turntable orbit, at the turntable's frame rate."""
        if client is None:
            return
        for c in self.orbit + self.orbit[:1]:
            client.camera.position = tuple(c.position.double().tolist())
            client.camera.look_at = (0.0, 0.0, 0.0)
            time.sleep(1.0 / ORBIT_FPS)

    def stop(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.server.stop()


def check_host(host: str) -> None:
    """InputError unless a server can listen on `host` (viser would retry port after port on it forever)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            sock.bind(infos[0][4])
    except OSError as e:
        raise InputError(f"cannot listen on --host {host!r} ({e.strerror or e}); use 127.0.0.1, 0.0.0.0 or an "
                         "address of this machine") from None


def serve(folder: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve `folder`'s splats until Ctrl-C; one line on stdout says where. A bad port or host: InputError."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be in [0, 65535], got {port}")
    entries = find_splats(folder)
    check_host(host)
    viewer = Viewer(entries, host, port, label=f"fsd: {Path(folder).name}")
    print(f"viewing {len(entries)} splat(s) of {folder} at {viewer.url}  (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()
