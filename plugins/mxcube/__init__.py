"""MXCuBE integration: a LIMS hardware object that sends collection metadata to mxcat."""
