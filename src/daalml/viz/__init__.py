"""Pictures of a trained run (2-D maps, DAAL segments, retrieval grids, training curves) and
its self-contained HTML report; see docs/visualization.md."""
