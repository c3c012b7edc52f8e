"""The evaluation layer: retrieval and clustering metrics over embeddings, and exact k-NN search.

Its public names are those of :mod:`daalml.metrics`, which re-exports them. The modules:
:mod:`~daalml.evaluation.inputs` (checks and conversions of the arguments),
:mod:`~daalml.evaluation.search` (:func:`~daalml.evaluation.search.knn` and the pluggable
search), :mod:`~daalml.evaluation.ranking` (per-query AP@R, R-precision, Recall@k and their
averages), :mod:`~daalml.evaluation.clustering` (NMI of a seeded k-means, Lloyd's iterations in
:mod:`~daalml.evaluation.kmeans`), :mod:`~daalml.evaluation.retrieval` (the leave-one-out and
query-gallery protocols), :mod:`~daalml.evaluation.query_options` (ignore rules and query
categories), and the k-NN backends (:mod:`~daalml.evaluation.knn_backends`, with the tiled fp32
search in :mod:`~daalml.evaluation.knn_tiles`). Nothing here imports daalml but ``errors``.
"""
