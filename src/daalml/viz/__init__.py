"""Drawing: array-level pictures (2-D maps, DAAL segments, margins, retrieval grids, curves).

The functions of a trained run's directory that use them are daalml.workflows.visualize and
daalml.workflows.report; see docs/visualization.md.
"""
