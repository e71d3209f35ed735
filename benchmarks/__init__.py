"""`make bench`: side-by-side measurements of heterogeneous models against stock homogeneous ones.

Run `python -m benchmarks.run --help`. Every figure is a ratio of two things measured in the same process (or in
alternating fresh processes), interleaved round by round, because the machines these run on are shared and noisy.
"""
