"""Gaussian scenes <-> the standard 3D Gaussian Splatting .ply (binary little-endian, float32).

Vertex properties, in the order the 3DGS code writes them (scene/gaussian_model.py, save_ply):
    x y z                 means
    nx ny nz              normals, always 0
    f_dc_0..2             sh0, RGB
    f_rest_0..3K-1        sh_rest channel-major: K coefficients of R, then of G, then of B (K = 3
                          for degree 1; absent for degree 0)
    opacity               logit of opacity
    scale_0..2            log of the scales
    rot_0..3              quaternion (w, x, y, z), unnormalised
Values are the raw GaussianScene parameters, so save -> load is exact.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from fsd2d.errors import InputError
from fsd2d.io import atomic_path
from fsd3d.gaussians import SH_REST, GaussianScene

# PLY scalar type names (both spellings) -> little-endian numpy dtypes.
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
    "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}
_MAX_HEADER = 1 << 16


def property_names(sh_degree: int) -> list[str]:
    """The vertex property names of a standard 3DGS .ply, in file order."""
    rest = [f"f_rest_{i}" for i in range(3 * SH_REST[sh_degree])]
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + rest
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def save_ply(path: str | os.PathLike, scene: GaussianScene) -> None:
    """Write `scene` as a standard 3DGS .ply; atomic (temporary sibling file, then one rename)."""
    path = Path(path)
    names = property_names(scene.sh_degree)
    n = len(scene)
    to_np = lambda t: t.detach().to("cpu", torch.float32).numpy()  # noqa: E731
    cols = [to_np(scene.means), np.zeros((n, 3), np.float32), to_np(scene.sh0)]
    if scene.sh_degree > 0:
        cols.append(to_np(scene.sh_rest.transpose(1, 2).reshape(n, -1)))  # [N, K, 3] -> [N, 3, K] -> [N, 3K]
    cols += [to_np(scene.opacity_logits)[:, None], to_np(scene.log_scales), to_np(scene.quats)]
    flat = np.concatenate(cols, axis=1)  # [N, P] float32, columns in `names` order
    assert flat.shape == (n, len(names))
    data = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        data[name] = flat[:, i]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names] + ["end_header"]

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # the usual file mode (0666 less the umask)
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())
        f.flush()
        os.fsync(f.fileno())


def load_ply(path: str | os.PathLike) -> GaussianScene:
    """Read a standard 3DGS .ply (SH degree 0 or 1). A broken file raises InputError with one line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    n, fields, offset = _parse_header(raw, path)
    if n == 0:
        raise InputError(f"{path}: the PLY holds no Gaussians (0 vertices); give a scene with at least one")

    dtype = np.dtype([(name, _PLY_TYPES[t]) for t, name in fields])
    need, have = n * dtype.itemsize, len(raw) - offset
    if have < need:
        raise InputError(f"{path}: truncated: header declares {n} vertices ({need} bytes) but only {have} bytes of data follow")
    if have > need:
        raise InputError(f"{path}: {have} bytes of vertex data but the header's {n} vertices need {need}: wrong vertex count")
    data = np.frombuffer(raw, dtype=dtype, count=n, offset=offset)

    types = {name: t for t, name in fields}
    k3 = sum(1 for name in types if name.startswith("f_rest_"))
    degree = {3 * k: d for d, k in SH_REST.items()}.get(k3)
    if degree is None:
        raise InputError(f"{path}: {k3} f_rest_* properties; only SH degree 0 (none) or 1 (9) is supported")
    required = [name for name in property_names(degree) if name not in ("nx", "ny", "nz")]
    for name in required:
        if name not in types:
            raise InputError(f"{path}: missing vertex property '{name}' (not a 3D Gaussian Splatting .ply?)")
        if _PLY_TYPES[types[name]] != "<f4":
            raise InputError(f"{path}: vertex property '{name}' is {types[name]}; the 3DGS format needs float32")

    def cols(*names: str) -> torch.Tensor:
        a = np.stack([data[name] for name in names], axis=1).astype(np.float32)  # [N, len(names)]
        bad = ~np.isfinite(a)
        if bad.any():
            raise InputError(f"{path}: non-finite value in '{names[int(np.argwhere(bad)[0, 1])]}'")
        return torch.from_numpy(a)

    sh_rest = None
    if degree > 0:
        k = SH_REST[degree]
        sh_rest = cols(*[f"f_rest_{i}" for i in range(3 * k)]).reshape(n, 3, k).transpose(1, 2)  # [N, K, 3]
    return GaussianScene.from_tensors(
        means=cols("x", "y", "z"),
        log_scales=cols("scale_0", "scale_1", "scale_2"),
        quats=cols("rot_0", "rot_1", "rot_2", "rot_3"),
        opacity_logits=cols("opacity")[:, 0],
        sh0=cols("f_dc_0", "f_dc_1", "f_dc_2"),
        sh_rest=sh_rest,
    )


def _parse_header(raw: bytes, path: Path) -> tuple[int, list[tuple[str, str]], int]:
    """-> (vertex count, [(ply type, name)] in file order, byte offset of the vertex data)."""
    if not raw.startswith(b"ply\n") and not raw.startswith(b"ply\r\n"):
        raise InputError(f"{path}: not a PLY file (it does not start with 'ply')")
    end = re.search(rb"\nend_header\r?\n", raw[:_MAX_HEADER])
    if end is None:
        raise InputError(f"{path}: PLY header has no end_header line (truncated or not a PLY file)")
    try:
        lines = raw[: end.start()].decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: PLY header is not ASCII text") from None

    fmt, n, fields, element = None, None, [], None
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info", "end_header"):
            continue
        if words[0] == "format":
            fmt = " ".join(words[1:])
        elif words[0] == "element" and len(words) == 3:
            element = words[1]
            if element != "vertex":
                raise InputError(f"{path}: unsupported PLY element '{element}'; a 3DGS .ply has only 'vertex'")
            if n is not None:
                raise InputError(f"{path}: PLY header declares the vertex element twice")
            try:
                n = int(words[2])
            except ValueError:
                n = -1
            if n < 0:
                raise InputError(f"{path}: bad vertex count '{words[2]}' in the PLY header")
        elif words[0] == "property" and element == "vertex":
            if len(words) != 3 or words[1] not in _PLY_TYPES:
                raise InputError(f"{path}: unsupported PLY property line '{line.strip()}' (3DGS uses 'property float NAME')")
            if any(name == words[2] for _, name in fields):
                raise InputError(f"{path}: vertex property '{words[2]}' is declared twice")
            fields.append((words[1], words[2]))
        else:
            raise InputError(f"{path}: unexpected PLY header line '{line.strip()}'")
    if fmt != "binary_little_endian 1.0":
        raise InputError(f"{path}: PLY format '{fmt}' is not supported; the 3DGS format is binary_little_endian 1.0")
    if n is None:
        raise InputError(f"{path}: PLY header has no vertex element")
    return n, fields, end.end()
