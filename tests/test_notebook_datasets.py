"""Notebooks 01, 02 and 03 on datasets other than the paper's, executed at profile smoke.

Each test runs one notebook with papermill (one to a few minutes each on two CPU
cores) on a generated data root: a dataset in Fashion-MNIST's file layout
(``FashionMNIST/raw/*-ubyte``, given as ``-p dataset fashion-mnist``) and small
ImageFolders given as ``folder:<path>`` (relative to the data root or absolute).
The metric keys must carry the dataset's key token instead of ``mnist`` /
``cifar10``, and the paper comparisons and claims must pass without numbers to
compare. Marked ``notebook``: ``pytest -m "not notebook"`` leaves them out.
"""
import json
import os

import pytest

from hashstudy import config, synthetic

pytestmark = pytest.mark.notebook
papermill = pytest.importorskip("papermill")

CLASSES = [f"class{i}" for i in range(10)]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """FashionMNIST IDX files and two ImageFolders (grayscale 28x28, RGB 32x32), smoke-sized."""
    root = tmp_path_factory.mktemp("notebook-data")
    synthetic.write_mnist_idx(root, 300, 100, seed=21, folder="FashionMNIST")
    for name, side, channels, seed in (("grayfolder", 28, 1, 22), ("rgbfolder", 32, 3, 24)):
        synthetic.write_imagefolder(root / name / "train", CLASSES, 30, side, channels, seed)
        synthetic.write_imagefolder(root / name / "test", CLASSES, 10, side, channels, seed + 1)
    return root


def run_notebook(name, parameters, data_root, tmp_path, monkeypatch) -> dict:
    """Execute notebooks/<name>.ipynb at profile smoke; returns its metrics.json."""
    monkeypatch.setenv("HASHSTUDY_DATA", str(data_root))
    lib = str(config.repo_root() / "lib")   # the kernel imports this checkout's library
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [lib, os.environ.get("PYTHONPATH")])))
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(str(config.repo_root() / "notebooks" / f"{name}.ipynb"), str(out),
                               parameters={"profile": "smoke", **parameters},
                               progress_bar=False, log_output=False, cwd=str(tmp_path))
    metrics = json.loads((config.reports_dir(name, "smoke") / "metrics.json").read_text())
    return metrics


def prefixes(metrics) -> set:
    return {key.split("/")[0] for key in metrics}


@pytest.mark.parametrize("dataset,token", [("fashion-mnist", "fashion-mnist"),
                                           ("folder:ABSOLUTE", "folder-grayfolder")])
def test_01_dsth_on_another_grayscale_dataset(dataset, token, data_root, tmp_path, monkeypatch):
    dataset = dataset.replace("ABSOLUTE", str(data_root / "grayfolder"))
    metrics = run_notebook("01_dsth_mm2015", {"dataset": dataset}, data_root, tmp_path,
                           monkeypatch)
    assert {token, f"{token}_q1k"} <= prefixes(metrics)
    assert "mnist" not in prefixes(metrics) and "mnist_q1k" not in prefixes(metrics)
    assert f"{token}/dsth/64/map_all" in metrics and f"{token}/dsth/64/label_stage_localised_bits" in metrics
    report = config.reports_dir("01_dsth_mm2015", "smoke")
    assert (report / f"{token}_pr.png").exists()


def test_02_latent_on_fashion_mnist_and_a_relative_folder(data_root, tmp_path, monkeypatch):
    metrics = run_notebook("02_latent_layer_cnn",
                           {"dataset": "fashion-mnist", "rgb_dataset": "folder:rgbfolder"},
                           data_root, tmp_path, monkeypatch)
    assert {"fashion-mnist", "folder-rgbfolder"} <= prefixes(metrics)
    assert not {"mnist", "cifar10"} & prefixes(metrics)
    assert "fashion-mnist/latent/48/test_accuracy" in metrics
    assert "folder-rgbfolder/latent/48/test_accuracy" in metrics


def test_03_autoencoder_on_fashion_mnist_and_a_folder(data_root, tmp_path, monkeypatch):
    metrics = run_notebook("03_tanh_autoencoder",
                           {"dataset": "fashion-mnist", "rgb_dataset": "folder:rgbfolder"},
                           data_root, tmp_path, monkeypatch)
    assert {"fashion-mnist", "folder-rgbfolder"} <= prefixes(metrics)
    assert not {"mnist", "cifar10"} & prefixes(metrics)
    assert "fashion-mnist/tanh_ae/all_bits/above_lsh_precision@90" in metrics
    assert "folder-rgbfolder/tanh_ae/16/precision@90" in metrics


def test_unknown_dataset_is_one_clear_error(data_root, tmp_path, monkeypatch):
    with pytest.raises(papermill.PapermillExecutionError,
                       match=r"unknown dataset 'cifar10'; allowed values: 'mnist', "
                             r"'fashion-mnist', 'kmnist', 'folder:<path>'"):
        run_notebook("01_dsth_mm2015", {"dataset": "cifar10"}, data_root, tmp_path, monkeypatch)
