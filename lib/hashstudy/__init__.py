"""hashstudy: the shared library behind the deep image-hashing study.

The package is flat, one module per job, in layers (:data:`LAYERS`); a module
imports only from its own layer or the layers above it in this list, and
``tests/test_layers.py`` checks it, so the arrows of the architecture stay
one-way:

1. **infrastructure**: ``config`` (folders, profiles, argument checks),
   ``timing`` (seconds per step), ``cache`` (atomic writes, content-keyed
   caches), ``reporting`` (a notebook's report folder)
2. **data and protocols**: ``data`` (dataset loaders), ``synthetic`` (the
   smoke profile's stand-in data), ``protocols`` (named, seeded, saved
   query / database / training splits), ``features`` (pretrained backbones,
   cached embeddings)
3. **codes, search and metrics**: ``hamming`` (packed codes, popcount search),
   ``metrics`` (order-free mAP, precision@k, PR curves), ``graph`` (kNN graphs,
   Laplacian eigenmaps, pairwise labels), ``training`` (the seeded training
   loop, cached weights)
4. **hashers and the experiment shape**: ``baselines`` (the shallow hashers),
   ``evaluation`` (``run``: fit, encode and evaluate methods on a split; its
   ``Result`` is the one shape every experiment returns), ``finetune`` (Lite0
   fine-tuned on cached stage-4 maps: the backbone ``efficientnet_lite0_ft``)
5. **methods, one module per paper**: ``baseline_study`` (00), ``dsth`` and
   ``cnnh`` (01), ``latent`` (02), ``autoencoder`` (03), ``ddh`` (04),
   ``dsth_journal`` (05), ``references`` (06's reference points); notebook 07's
   curve lives with its backbone in ``finetune``
6. **figures**: ``plots`` (shared styles and curves) and one module per paper,
   ``plots.<method module>``
7. **the study**: ``crosspaper`` (06), ``claims`` (the ledger), ``summary``,
   ``regenerate`` (the report command), ``sweep``, ``compare``, ``profiles``,
   ``smoke``, ``scale`` (paper-scale runs that fit the machine)

A new method is one module in layer 5 whose hasher has ``fit``/``encode``;
``evaluation.run`` evaluates it like every other.
"""

__version__ = "0.1.0"

LAYERS = {
    "infrastructure": ["config", "timing", "cache", "reporting"],
    "data and protocols": ["data", "synthetic", "protocols", "features"],
    "codes, search and metrics": ["hamming", "metrics", "graph", "training"],
    "hashers and the experiment shape": ["baselines", "evaluation", "finetune"],
    "methods": ["baseline_study", "dsth", "cnnh", "latent", "autoencoder", "ddh", "dsth_journal",
                "references"],
    "figures": ["plots", "plots.*"],
    "the study": ["crosspaper", "claims", "summary", "regenerate", "sweep", "compare", "profiles",
                  "smoke", "scale"],
}
"""Layer name -> modules, lowest first; ``plots.*`` stands for every module of ``plots``."""
