"""Attribute datasets (host only; a device never imports this package).

A dataset is a folder of person crops with one label per attribute of
:mod:`edge.schema` (or unknown), split into train, val and test. It is made by
:mod:`edge.training.collect` from videos and streams, labelled through
:mod:`edge.training.labelstudio` or :mod:`edge.training.cvat`, imported from the public
person-attribute datasets (:mod:`edge.training.public`), described by
:mod:`edge.training.stats` and joined by :mod:`edge.training.merge`; the format and its
checks are :mod:`edge.training.dataset`. The attribute classifier is trained on them by
:mod:`edge.training.train` (``edge train``) and evaluated by :mod:`edge.training.evaluate`
(``edge evaluate``).
"""
