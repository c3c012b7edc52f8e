"""Embed image files with a trained checkpoint, index them with faiss and search the index.

The public names of the modules that hold the code: listing image files
(:mod:`daalml.data.listing`), the evaluation preprocessing (:mod:`daalml.data.preprocessing`),
embedding them (:mod:`daalml.engine.inference`), the .npz of embeddings
(:mod:`daalml.workflows.embeddings_file`) and the faiss index (:mod:`daalml.workflows.search_index`,
whose docstring shows the use from Python).
"""

from __future__ import annotations

from daalml.data.listing import ImageList, list_images
from daalml.data.preprocessing import Preprocessing, preprocessing_for
from daalml.engine.inference import default_device, embed_images, preprocessing
from daalml.workflows.embeddings_file import load_embeddings, save_embeddings
from daalml.workflows.search_index import INDEX_KINDS, RetrievalIndex, SearchHit, build_index

__all__ = [
    "INDEX_KINDS",
    "ImageList",
    "Preprocessing",
    "RetrievalIndex",
    "SearchHit",
    "build_index",
    "default_device",
    "embed_images",
    "list_images",
    "load_embeddings",
    "preprocessing",
    "preprocessing_for",
    "save_embeddings",
]
