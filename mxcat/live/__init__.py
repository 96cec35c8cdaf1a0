"""The live-analysis engine, in three layers that do not import each other sideways.

* :mod:`mxcat.live.sources`: detector streams (Eiger Stream V1/V2 over ZeroMQ, CrystFEL/OnDA
  msgpack) and file replay (HDF5/NXmx, CBF) yield :class:`~mxcat.live.frames.Frame` objects with
  the series metadata (:class:`~mxcat.live.frames.SeriesInfo`).
* :mod:`mxcat.live.kernels`: pure compiled functions from arrays to typed results (spot finding,
  per-frame statistics, radial profile, ice rings, spot separations), with everything constant
  per series precomputed once.
* the runner (next): workers and a collector joined by ZeroMQ, per-series aggregation, records.

Install with ``pip install 'mxcat[live]'``.
"""
