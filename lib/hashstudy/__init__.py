"""hashstudy: the shared library behind the deep image-hashing study.

Modules, named by what they do:

- ``config``     data root, cache and report folders, profiles, argument checks
- ``cache``      atomic writes and content-keyed on-disk caches
- ``data``       dataset loaders (uint8 NHWC images, int labels, class names)
- ``protocols``  named, seeded, saved query / database / training splits
- ``hamming``    packed binary codes, popcount distances, top-k and radius search
- ``metrics``    mAP, precision@k, PR curves, F-measure, Hamming-radius precision
- ``baselines``  shallow hashing methods (LSH, SH, ITQ, ...)
- ``features``   pretrained backbones and cached embeddings
- ``graph``      kNN graphs, Laplacian eigenmaps, pairwise labels
"""

__version__ = "0.1.0"
