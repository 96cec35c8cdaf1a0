"""mxcat: key-value metadata for macromolecular crystallography.

The mmCAT ontology (:mod:`mxcat.ontology`), ingest adapters, a durable outbox with catalogue sinks,
and a live-analysis engine for detector streams. The public Python API for pipelines and beamline
control is :mod:`mxcat.client`.
"""

__version__ = "0.1.0"
