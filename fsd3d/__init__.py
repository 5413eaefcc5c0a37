"""3D lifting of FSD (paper Section 4): Gaussian scenes, orbit cameras, the renderer (gsplat on CUDA, a
PyTorch reference on the CPU), noise functions eps(c) (world map, constant, random), the embedded
reference-object prior, the optimisation loop and the `gen-3d` runner."""
