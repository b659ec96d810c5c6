"""The two measurements behind notebook 07's settings, on CIFAR-10.

1. Map extraction time: ``finetune.stage_maps`` for the test, train and mirrored train
   splits at 128 and 224 px (a cold cache extracts; a warm one only maps the files).
2. The fine-tuning learning rate, chosen on a validation split carved from the training
   split (never the test split): 15,000 training images (stratified, seed 1), 10,000 to
   fit and 5,000 to validate, 128 px, one top stage, 4 epochs, Adam at 1e-3 and 3e-4.

Run: ``HASHSTUDY_THREADS=1 python benchmarks/finetune_choices.py`` (one thread, as the
weights of the committed choice were trained; a warm cache answers in seconds).
"""
import time

import numpy as np

from hashstudy import data, finetune, training


def main():
    threads = training.set_threads()
    for px in (128, 224):
        for split, mirror in (("test", False), ("train", False), ("train", True)):
            t = time.time()
            m = finetune.stage_maps("cifar10", split, px, mirror=mirror, progress=False)
            print(f"maps {px} px {split}{' mirrored' if mirror else ''}: {m.shape}, "
                  f"{time.time() - t:.0f} s")
    train = data.load("cifar10", "train")
    tr = finetune.stage_maps(train, input_size=128, progress=False)
    trm = finetune.stage_maps(train, input_size=128, mirror=True, progress=False)
    idx = finetune.train_subset(train.labels, 15000, seed=1)
    np.random.default_rng(0).shuffle(idx)
    fit_i, val_i = np.sort(idx[:10000]), np.sort(idx[10000:])
    for lr in (1e-3, 3e-4):
        f = finetune.finetune(np.asarray(tr[fit_i]), train.labels[fit_i], stages=1, epochs=4,
                              lr=lr, mirror_maps=np.asarray(trm[fit_i]),
                              eval_maps=np.asarray(tr[val_i]), eval_labels=train.labels[val_i],
                              progress=False, identity={"pilot": "val", "lr": lr})
        print(f"lr {lr:g} ({threads} thread(s)): validation accuracy per epoch "
              f"{[round(a, 4) for a in f.info['eval_accuracy']]}"
              f"{' (cached weights)' if f.loaded else ''}")


if __name__ == "__main__":
    main()
