"""Planning and training anywhere: a profile's plan with its cost (calibration), jobs (a run alone or seeds
fused), the local and Ray passes, and the GPU self-test."""
