"""3D lifting of FSD (paper Section 4): one Gaussian scene per seed, optimised with FSD / SDS through a renderer
(gsplat on CUDA, a PyTorch reference on the CPU) under a text-to-image prior with the world-map noise eps(c).

The public API (everything else may change):

    >>> from fsd3d import Gen3DConfig, Train3DConfig, run_3d, save_run
    >>> run = run_3d(Gen3DConfig(prompt="mushroom", seeds=(0, 1, 2, 3)))    # embedded prior, in memory, CPU
    >>> run.summary["diversity"], run.summary["references_reached"]          # = gen-3d's metrics.json
    >>> run.scenes[0]                                                         # GaussianScene of seed 0
    >>> run.renders[0].rgb.shape                                              # [V, 3, R, R] in [0, 1]
    >>> sds = run_3d(Gen3DConfig(seeds=(0, 1, 2, 3), train=Train3DConfig(method=NoiseKind.SDS_ANNEALED)))
    >>> save_run(run, "outputs/mushroom")                                     # what `fsd gen-3d` writes

    Gen3DConfig, Train3DConfig   a run's settings (fsd3d.config); from_flags (the CLI's options), from_record
                                 (run.json back into the config), validate (the CLI's one-line InputError)
    NoiseKind                    the method: fsd, sds, sds-annealed, the noise functions, the family
    run_3d -> Run3D              train and score in memory (fsd3d.run); `prior`: a loaded ScenePrior to reuse
    save_run, gen_3d             write a run as gen-3d's folder; the command itself, with checkpoints (fsd3d.gen3d)
    load_scene_prior             the scene prior of a config (embedded references, Stable Diffusion, MVDream)
    resolve, Resolved3D          the one resolver of a run's settings (fsd3d.settings): profile, trained world,
                                 the prior's own, the user's values
    render, render_scene         gsplat-shaped rasterisation: means [N, 3], quats [N, 4] (wxyz), scales [N, 3],
                                 opacities [N], colors [N, 3]; viewmats [C, 4, 4] world-to-camera (OpenCV axes),
                                 Ks [C, 3, 3] -> rgb [C, 3, H, W] in [0, 1], alpha [C, 1, H, W], depth [C, 1, H, W]
    GaussianScene                the optimised parameters of one scene
    orbit_camera, CameraRanges   cameras at (elevation, azimuth, radius, fov) in degrees; the ranges they are drawn
                                 from and the evaluation views (CameraRanges.evaluation_cameras)
"""
from fsd3d.cameras import Camera, CameraRanges, orbit_camera
from fsd3d.config import Gen3DConfig, NoiseKind, Train3DConfig
from fsd3d.gaussians import GaussianScene
from fsd3d.gen3d import gen_3d, save_run
from fsd3d.renderer import RenderOutput, render, render_scene
from fsd3d.run import Run3D, load_scene_prior, run_3d
from fsd3d.settings import Resolved3D, resolve

__all__ = [
    "Camera", "CameraRanges", "GaussianScene", "Gen3DConfig", "NoiseKind", "RenderOutput", "Resolved3D", "Run3D",
    "Train3DConfig", "gen_3d", "load_scene_prior", "orbit_camera", "render", "render_scene", "resolve", "run_3d",
    "save_run",
]
