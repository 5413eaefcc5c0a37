"""3D lifting of FSD (Gaussian Splatting, world-map noise). Not built yet: see the 3D issue."""
