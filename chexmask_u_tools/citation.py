"""How to cite: BibTeX for the CheXmask-U paper, the CheXmask dataset and this toolkit.

The entries say the same as ``CITATION.cff`` at the root of the repository (a
test keeps the two in step).  Dataset cards, Hub folders and ``chexmask-u cite``
embed :func:`cite`.

Examples
--------
>>> text = cite()
>>> text.count("@")
3
>>> "10.13026/dx54-8351" in cite("chexmask")
True
"""

from __future__ import annotations

from chexmask_u_tools.errors import InputError

__all__ = ["CITATIONS", "cite"]

CITATIONS: dict[str, str] = {
    "chexmask-u": """@inproceedings{cosarinsky2026chexmasku,
  title     = {CheXmask-U: Quantifying uncertainty in landmark-based anatomical segmentation for X-ray images},
  author    = {Cosarinsky, Matias and Gaggion, Nicolas and Echeveste, Rodrigo and Ferrante, Enzo},
  booktitle = {Proceedings of Medical Imaging with Deep Learning (MIDL 2026)},
  series    = {Proceedings of Machine Learning Research},
  volume    = {315},
  publisher = {PMLR},
  year      = {2026},
  note      = {arXiv:2512.10715},
  url       = {https://github.com/mcosarinsky/CheXmask-U}
}""",
    "chexmask": """@article{gaggion2024chexmask,
  title     = {CheXmask: a large-scale dataset of anatomical segmentation masks for multi-center chest x-ray images},
  author    = {Gaggion, Nicolas and Mosquera, Candelaria and Mansilla, Lucas and Saidman, Julia Mariel and
               Aineseder, Martina and Milone, Diego H. and Ferrante, Enzo},
  journal   = {Scientific Data},
  year      = {2024},
  publisher = {PhysioNet},
  doi       = {10.13026/dx54-8351},
  url       = {https://physionet.org/content/chexmask-cxr-segmentation-data/}
}""",
    "chexmask-u-tools": """@software{chexmask_u_tools,
  title     = {chexmask-u-tools: a toolkit for the CheXmask-U chest X-ray landmark segmentations with uncertainty},
  author    = {{The chexmask-u-tools developers}},
  version   = {0.1.0},
  license   = {MIT},
  year      = {2026}
}""",
}
"""Key -> BibTeX entry: the CheXmask-U paper, the parent CheXmask dataset, this toolkit."""


def cite(*which: str) -> str:
    """BibTeX entries, separated by blank lines: all three by default, or those named in ``which``.

    Raises
    ------
    InputError
        An unknown key (the message lists the valid ones).

    Examples
    --------
    >>> print(cite("chexmask-u").splitlines()[0])
    @inproceedings{cosarinsky2026chexmasku,
    >>> cite("chexmask", "chexmask-u-tools").count("@")
    2
    """
    keys = which or tuple(CITATIONS)
    unknown = [key for key in keys if key not in CITATIONS]
    if unknown:
        raise InputError(f"unknown citation {unknown[0]!r}; expected one of {list(CITATIONS)}")
    return "\n\n".join(CITATIONS[key] for key in keys) + "\n"
