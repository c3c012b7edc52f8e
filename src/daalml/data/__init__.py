"""Datasets in official layouts, class-disjoint splits, m-per-class sampling and transforms."""
