"""mmCAT, the MX metadata ontology: load the DDL2 dictionaries, look up, resolve and validate keys.

>>> from mxcat import ontology
>>> onto = ontology.load()
>>> onto.resolve("MXAutoprocIntegrationScaling_outer_cc_half")
'reflns_shell.outer.pdbx_CC_half'
>>> onto.validate("reflns.d_resolution_high", 0.18, unit="nm").value
1.8
"""

from mxcat.ontology.core import Ontology, load, normalise_selector
from mxcat.ontology.model import CategoryDef, ItemDef, Mapping, RangeSet
from mxcat.ontology.validate import BatchResult, Normalised

__all__ = [
    "BatchResult",
    "CategoryDef",
    "ItemDef",
    "Mapping",
    "Normalised",
    "Ontology",
    "RangeSet",
    "load",
    "normalise_selector",
]
