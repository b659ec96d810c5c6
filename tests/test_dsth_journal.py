"""Tests of the journal DSTH (hashstudy.dsth_journal): Table I, encoders, heads, eq. 18, paths."""
import types

import numpy as np
import pytest
import torch
from torch import nn

from hashstudy import dsth_journal as dj
from hashstudy import evaluation, synthetic

# ---------------------------------------------------------------------------
# Table I


def test_simplenet_32_follows_table_i_exactly():
    net = dj.SimpleNet(32)
    shapes = net.step_shapes(torch.zeros(2, 3, 32, 32))
    assert shapes == [(32, 32, 32), (32, 16, 16), (32, 16, 16), (32, 8, 8), (64, 8, 8),
                      (64, 4, 4)]
    assert net.out_features == 1024  # the "1024-D vector" the Slice encoder splits
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 1024)
    convs = [m for m in net.layers if isinstance(m, nn.Conv2d)]
    pools = [m for m in net.layers if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert [c.out_channels for c in convs] == [32, 32, 64]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) and c.stride == (1, 1)
               for c in convs)
    assert [type(p) for p in pools] == [nn.MaxPool2d, nn.AvgPool2d, nn.AvgPool2d]
    assert all(p.kernel_size in (3, (3, 3)) and p.stride in (2, (2, 2)) for p in pools)


def test_simplenet_96_follows_table_i_exactly():
    net = dj.SimpleNet(96)
    shapes = net.step_shapes(torch.zeros(1, 3, 96, 96))
    assert shapes == [(32, 96, 96), (32, 48, 48), (32, 48, 48), (32, 24, 24), (64, 24, 24),
                      (64, 12, 12), (64, 12, 12), (64, 6, 6), (128, 6, 6), (128, 3, 3)]
    assert net.out_features == 128 * 3 * 3
    pools = [m for m in net.layers if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert [type(p) for p in pools] == [nn.MaxPool2d] + [nn.AvgPool2d] * 4


def test_simplenet_refuses_sizes_outside_table_i():
    with pytest.raises(ValueError, match="Table I"):
        dj.SimpleNet(64)


# ---------------------------------------------------------------------------
# encoders and heads


def test_mlp_has_two_n_linear_layers_with_relu_and_batchnorm():
    for size, n in ((32, 3), (96, 5)):
        net = dj.HashNet(size, 48, encoder="mlp", head="sigmoid", hidden=32)
        linears = [m for m in net.encoder.layers if isinstance(m, nn.Linear)]
        assert len(linears) == 2 * n
        assert linears[0].in_features == net.simplenet.out_features
        assert linears[-1].out_features == 48
        assert sum(isinstance(m, nn.BatchNorm1d) for m in net.encoder.layers) == n
        assert sum(isinstance(m, nn.ReLU) for m in net.encoder.layers) == n


def test_slice_encoder_maps_each_of_16_groups_to_its_own_q_bits():
    enc = dj.SliceEncoder(1024, 48)
    assert enc.q == 3 and len(enc.groups) == 16
    assert all(g.in_features == 64 and g.out_features == 3 for g in enc.groups)
    assert enc.fc[0].out_features == 1024
    enc.fc = nn.Identity()  # look at the grouped layers alone
    x = torch.randn(4, 1024)
    base = enc(x)
    for g in (0, 7, 15):
        bumped = x.clone()
        bumped[:, 64 * g:64 * g + 64] += 1.0
        changed = (enc(bumped) - base).abs().sum(0) > 0
        expected = torch.zeros(48, dtype=torch.bool)
        expected[3 * g:3 * g + 3] = True
        assert torch.equal(changed, expected)


def test_slice_needs_a_multiple_of_16_bits():
    with pytest.raises(ValueError, match="multiple of 16"):
        dj.SliceEncoder(1024, 40)
    with pytest.raises(ValueError, match="multiple of 16"):
        dj.DSTHJournal(40, 32, config="slice_sigmoid")


def test_heads_sigmoid_and_batchnorm():
    sig = dj.HashNet(32, 16, encoder="slice", head="sigmoid").eval()
    out = sig(torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8))
    assert out.shape == (5, 16) and (out > 0).all() and (out < 1).all()
    bn = dj.HashNet(32, 16, encoder="slice", head="batchnorm").train()
    out = bn(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8))
    assert torch.allclose(out.mean(0), torch.zeros(16), atol=1e-4)  # eq. 19-21, no shift
    assert isinstance(bn.head, nn.BatchNorm1d) and bn.head.weight is None  # no scale


def test_sigmoid_thresholds_at_half_and_batchnorm_at_label_thresholds():
    outputs = np.array([[0.5, 0.49, 0.1], [0.51, 0.2, -0.3]])
    assert dj.codes_from_outputs(outputs, "sigmoid").tolist() == [[1, 0, 0], [1, 0, 0]]
    thr = np.array([0.6, 0.2, -0.5])
    assert dj.codes_from_outputs(outputs, "batchnorm", thr).tolist() == [[0, 1, 1], [0, 1, 1]]
    # sigmoid ignores thresholds; batchnorm cannot do without them
    assert dj.codes_from_outputs(outputs, "sigmoid", thr).tolist() == [[1, 0, 0], [1, 0, 0]]
    with pytest.raises(ValueError, match="thresholds"):
        dj.codes_from_outputs(outputs, "batchnorm")


def test_eq18_loss_on_a_hand_made_example():
    x = torch.tensor([[0.2, 0.9], [0.6, 0.1]])
    y = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # (0.2)^2 + (0.1)^2 + (0.4)^2 + (0.1)^2 = 0.22
    assert dj.eq18_loss(x, y, reduction="sum").item() == pytest.approx(0.22)
    assert dj.eq18_loss(x, y).item() == pytest.approx(0.11)  # divided by m = 2 samples
    with pytest.raises(ValueError):
        dj.eq18_loss(x, y[:, :1])


# ---------------------------------------------------------------------------
# label stage


def _two_clusters(n=60, d=8, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)) * 0.05 + np.eye(d)[0]
    b = rng.normal(size=(n, d)) * 0.05 + np.eye(d)[1]
    return np.vstack([a, b]).astype(np.float32), np.r_[np.zeros(n), np.ones(n)].astype(int)


def test_hash_labels_threshold_at_the_per_bit_mean_and_split_clusters():
    X, y = _two_clusters()
    X[:, 2:] += 0.2  # keep every cosine positive so the two clusters stay connected
    hl = dj.hash_labels(X, 4, k=12, seed=0)
    assert hl.bits.shape == (120, 4) and hl.bits.dtype == np.uint8
    np.testing.assert_allclose(hl.thresholds, hl.embedding.mean(axis=0))  # eq. 14
    np.testing.assert_array_equal(hl.bits, (hl.embedding >= hl.thresholds).astype(np.uint8))
    first = hl.bits[:, 0]  # the Fiedler vector separates the two clusters
    assert len(set(first[y == 0])) == 1 and len(set(first[y == 1])) == 1
    assert first[y == 0][0] != first[y == 1][0]
    again = dj.hash_labels(X, 4, k=12, seed=0)  # cached and deterministic
    np.testing.assert_array_equal(again.bits, hl.bits)


def test_finetuned_features_separate_classes():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 100)
    X = (rng.normal(size=(300, 32)) + 1.5 * np.eye(32)[y]).astype(np.float32)  # weak signal
    F = dj.finetuned_features(X, y, hidden=16, epochs=40, lr=1e-2, seed=0)
    assert F.shape == (300, 3) and F.dtype == np.float32  # the class scores

    def nn_accuracy(Z):
        Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        s = Z @ Z.T
        np.fill_diagonal(s, -np.inf)
        return (y[s.argmax(1)] == y).mean()

    assert nn_accuracy(F) > nn_accuracy(X) + 0.2


def test_bn_hasher_encodes_with_the_label_stage_thresholds(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 15)
    images = synthetic.class_images(labels, 4, size=32, seed=0)
    feats = np.eye(4)[labels] + rng.normal(size=(60, 4)) * 0.1 + 0.3
    h = dj.DSTHJournal(16, 32, config="slice_batchnorm", epochs=(1, 0, 0), batch_size=20,
                       n_fit_check=60).fit(images, feats.astype(np.float32))
    np.testing.assert_array_equal(h.thresholds_, h.labels_.thresholds)
    codes = h.encode(images)
    assert codes.shape == (60, 16) and set(np.unique(codes)) <= {0, 1}
    h.thresholds_ = np.full(16, 1e9)  # the BatchNorm head reads these thresholds
    assert h.encode(images).sum() == 0
    h.thresholds_ = np.full(16, -1e9)
    assert h.encode(images).min() == 1


# ---------------------------------------------------------------------------
# whole paths on tiny generated datasets


@pytest.fixture
def fake_backbone(monkeypatch):
    """Replace backbone extraction by 4x4 block means of the pixels (fast, deterministic).

    Records which images each call described, to check what load_setting asks for.
    """
    from hashstudy import features

    calls = []

    def dataset_features(ds, split=None, backbone="x", input_size=0, root=None, *,
                         batch_size=None, progress=True):
        calls.append((ds.name, ds.split, len(ds), backbone))
        x = ds.images.astype(np.float32) / 255.0
        n, h, w, c = x.shape
        f = x.reshape(n, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4)).reshape(n, -1)
        return f + 0.01, ds.labels

    monkeypatch.setattr(features, "dataset_features", dataset_features)
    return calls


def _root(tmp_path):
    root = tmp_path / "data"
    synthetic.write_cifar100_batches(root, n_train=200, n_test=200, seed=3)
    synthetic.write_stl10_binary(root, n_train=60, n_test=40, n_unlabeled=0, seed=4)
    return root


FAST = dict(epochs=(1, 0, 0), batch_size=20, hidden=32, progress=False)


@pytest.mark.parametrize("dataset,per_class,size,config", [
    ("cifar100-coarse", 2, 32, "slice_batchnorm"), ("cifar100", 1, 32, "mlp_sigmoid"),
    ("stl10", 2, 96, "mlp_batchnorm")])
def test_cifar100_and_stl10_paths_run(tmp_path, fake_backbone, dataset, per_class, size, config):
    setting = dj.load_setting(dataset, ["b1"], query_per_class=per_class, n_train=40,
                              root=_root(tmp_path))
    assert setting.input_size == size
    n_classes = {"cifar100-coarse": 20, "cifar100": 100, "stl10": 10}[dataset]
    assert setting.split.query.size == per_class * n_classes
    assert np.intersect1d(setting.split.query, setting.split.database).size == 0
    assert np.union1d(setting.split.query, setting.split.database).size == \
        len(setting.labels) - setting.split.train.size  # the test split, all of it
    extra = dj.dsth_factories(setting, "b1", [config], **FAST)
    table, codes = evaluation.compare(list(extra), [16], setting.index, setting.labels,
                                      setting.split, extra=extra,
                                      metric_keys=list(dj.METRIC_KEYS), progress=False)
    assert set(table.metric) >= set(dj.METRIC_KEYS)
    assert codes[(config, 16)].query.shape == (setting.split.query.size, 16)
    net = extra[config].fitted[16].model_
    assert net.simplenet.input_size == size
    if config.startswith("mlp"):
        assert net.encoder.n_blocks == (5 if size == 96 else 3)  # eq. 15: n = 3 or 5


def test_load_setting_features_of_subsets_and_twins(tmp_path, fake_backbone):
    root = _root(tmp_path)
    fine = dj.load_setting("cifar100", ["b1", "b2"], query_per_class=1, n_train=100,
                           whole_split=["b2"], root=root)
    # b1: only the 100 training images used, and the whole test split; b2: whole splits
    assert ("cifar100", "train", 100, "b1") in fake_backbone
    assert ("cifar100", "test", 200, "b1") in fake_backbone
    assert ("cifar100", "train", 200, "b2") in fake_backbone
    assert fine.split.train.size == 100 and len(fine.labels) == 300
    # features are row for row the images' (the fake backbone is a function of the pixels)
    np.testing.assert_allclose(fine.features["b1"], fine.features["b2"], rtol=1e-6)
    fake_backbone.clear()
    coarse = dj.load_setting("cifar100-coarse", ["b1"], query_per_class=2, n_train=100,
                             root=root)
    # coarse labels, fine images: features are asked for under the fine dataset's name
    assert {c[0] for c in fake_backbone} == {"cifar100"}
    np.testing.assert_array_equal(fine.images[fine.split.train],
                                  coarse.images[coarse.split.train])
    np.testing.assert_array_equal(fine.features["b1"][fine.split.train],
                                  coarse.features["b1"][coarse.split.train])
    assert coarse.labels.max() < 20 <= fine.labels.max()


def test_with_labels_baselines_and_tables(tmp_path, fake_backbone):
    setting = dj.load_setting("cifar100-coarse", ["b1"], query_per_class=2, n_train=60,
                              root=_root(tmp_path))
    extra = {**dj.dsth_factories(setting, "b1", ["slice_batchnorm"], with_labels=True,
                                 suffix="_labels", finetune_epochs=2, **FAST),
             **dj.baseline_factories(setting, "b1", ["lsh", "cca_itq"])}
    assert extra["slice_batchnorm_labels"].supervised and extra["cca_itq"].supervised
    assert not extra["lsh"].supervised
    table, _ = dj.evaluate_methods(setting, extra, [16], "c100c/b1", metric_keys=["max_f@0.5"])
    values = evaluation.long_to_metrics(table, "c100c/b1")
    assert set(values) == {f"c100c/b1/{m}/16/max_f@0.5" for m in extra}
    wide = dj.wide_table(values, {("b1", m): f"c100c/b1/{m}/16" for m in extra},
                         columns=["max_f@0.5", "hd3p"])
    assert wide.shape == (3, 2) and wide["hd3p"].isna().all() and wide["max_f@0.5"].notna().all()
    with pytest.raises(ValueError, match="class labels"):
        dj.DSTHJournal(16, 32, with_labels=True, **FAST).fit(
            setting.images[:60], setting.features["b1"][:60])


def test_label_quality_and_table_ii(tmp_path, fake_backbone):
    setting = dj.load_setting("cifar100-coarse", ["b1"], query_per_class=2, n_train=100,
                              root=_root(tmp_path))
    q = dj.label_quality(setting, setting.features["b1"][setting.split.train], 16)
    assert 0 <= q["knn_precision"] <= 1 and 0 < q["ones"] < 1 and "max_f@0.5" in q
    acc = dj.classification_accuracy(setting, ["b1"], epochs=(1, 0, 0), batch_size=100)
    assert set(acc) == {"b1", "simplenet"} and all(0 <= v <= 1 for v in acc.values())
    # the class structure of the synthetic images is visible to a linear classifier
    assert acc["b1"] > 3 / 20


# ---------------------------------------------------------------------------
# the toy cells and the notebook's sections


def test_toy_label_stage_splits_the_two_blobs_at_the_mean():
    toy = dj.toy_label_stage(n_per_blob=6, k=6, n_bits=1)
    assert len(toy) == 12 and list(toy.blob) == ["A"] * 6 + ["B"] * 6
    # eq. 13-14: the bit is the eigenvector at or above its mean
    assert np.isclose(toy["eps 1"].iloc[0], toy["y~1"].mean(), atol=2e-3)
    assert ((toy["y~1"] >= toy["eps 1"]).astype(int) == toy["y 1"]).all()
    # the label is the blob: one value per blob, different between them
    by_blob = toy.groupby("blob")["y 1"].agg(["min", "max"])
    assert (by_blob["min"] == by_blob["max"]).all() and by_blob["min"].nunique() == 2
    # five of each point's six neighbours lie in its own blob
    for i, row in toy.iterrows():
        near = [int(j) for j in row.neighbours.split()]
        assert sum(toy.blob[j] == row.blob for j in near[:5]) == 5


@pytest.mark.parametrize("n_bits,q", [(32, 2), (48, 3)])
def test_toy_slice_groups_lists_each_groups_units_and_bits(n_bits, q):
    groups = dj.toy_slice_groups(n_bits=n_bits)
    assert len(groups) == 16 and (groups["units per bit"] == 64).all()
    for g, row in groups.iterrows():
        assert row["hidden units"] == f"{64 * g}-{64 * g + 63}"
        assert row["bits"] == f"{q * g}-{q * g + q - 1}"


_PLAN = dict(seed=0, backbones=["efficientnet_lite0", "efficientnet_lite0_stage5"],
             configs=["slice_batchnorm", "mlp_sigmoid"], main_config="slice_batchnorm", k=12,
             hidden=512, hidden_activation="relu", lrs=[0.01, 0.001, 0.0001], momentum=0.9,
             weight_decay=0.004, batch_size=100, bits=48, stl10_bits=32,
             sweep_bits=[16, 32, 48, 64, 128], unsupervised=["lsh"], supervised=["cca_itq"],
             extra_datasets=[], input_size=128, fit_bits=[48, 16], heldout=0.1, vote_k=12)


def test_plan_derives_the_profile_values_and_refuses_bad_parameters():
    p = dj.plan("smoke", **_PLAN)
    assert p.sweep_bits == [16, 48] and p.label_bits == [48]  # the profile overrides
    assert p.fit_bits == [16, 48] and p.input_size == 48 and p.main == "efficientnet_lite0"
    assert p.other_activation == "sigmoid" and p.probe["heldout"] == 0.1
    assert p.dsth["epochs"] == [1, 1, 0] and p.dsth["hidden_activation"] == "relu"
    assert p.name("efficientnet_lite0_stage5") == "Lite0 stage 5 (AlexNet's role)"
    assert p.dataset_bits("stl10") == 32 and p.dataset_bits("cifar100") == 48
    assert p.parameters(2)["sizes"] is dj.PROFILE_SIZES["smoke"]
    assert dj.plan("quick", **_PLAN).sweep_bits == [16, 32, 48, 64, 128]
    with pytest.raises(ValueError, match="fit_bits"):
        dj.plan("smoke", **{**_PLAN, "fit_bits": [32, 48]})
    with pytest.raises(ValueError, match="heldout"):
        dj.plan("smoke", **{**_PLAN, "heldout": 1.0})
    with pytest.raises(ValueError, match="main_config"):
        dj.plan("smoke", **{**_PLAN, "main_config": "mlp_batchnorm"})


def test_sections_are_checked_and_a_run_without_some_still_closes(capsys):
    p = dj.plan("smoke", **_PLAN)
    assert p.sections == list(dj.SECTIONS) and all(p.runs(n) for n in dj.SECTIONS)
    some = dj.plan("smoke", **_PLAN, sections=["without_labels", "table3"])
    assert some.sections == ["table3", "without_labels"]  # notebook order
    assert some.parameters(1)["sections"] == ["table3", "without_labels"]
    assert some.runs("table3") and not some.runs("with_labels")
    assert "section 'with_labels' skipped" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown section 'table_2'.*'table2'"):
        dj.plan("smoke", **_PLAN, sections=["table_2"])
    with pytest.raises(TypeError, match="list of section names"):
        dj.plan("smoke", **_PLAN, sections="table3")
    with pytest.raises(ValueError, match="'references' compares"):
        dj.plan("smoke", **_PLAN, sections=["references"])
    with pytest.raises(ValueError, match="unknown section"):
        some.runs("table4")
    # STH's training subsample: the profile's unless set
    assert p.baseline_params == {"sth": {"max_train": dj.PROFILE_SIZES["smoke"]["sth_train"]}}
    assert dj.plan("quick", **_PLAN).baseline_params == {"sth": {"max_train": 2000}}
    assert dj.plan("quick", **_PLAN, sth_train=500).baseline_params == {"sth": {"max_train": 500}}
    with pytest.raises(ValueError, match="sth_train"):
        dj.plan("smoke", **_PLAN, sth_train=-1)
    # the closing comparisons keep the rows whose sections ran and drop the others
    d, main = "cifar10", some.main
    metrics = {f"{d}/{b}/hash_labels/48/{m}": v for b, v in
               (("efficientnet_lite0", 0.5), ("efficientnet_lite0_stage5", 0.4))
               for m in ("knn_precision", "max_f@0.5", "map@1000")}
    metrics.update({f"{d}/{main}/{c}/48/max_f@0.5": 0.3 for c in some.configs})
    checks = dj.checks_table(metrics, some, dataset=d)
    assert not checks.empty and checks[["value a", "value b"]].notna().any(axis=1).all()
    assert not checks["comparison"].str.startswith("Table II:").any()  # table2 did not run
    assert checks["comparison"].str.startswith("hash labels").sum() == 3
    assert len(dj.checks_table({**metrics, f"{d}/classification/{main}/accuracy": 0.7,
                                f"{d}/classification/efficientnet_lite0_stage5/accuracy": 0.6},
                               some, dataset=d)) == len(checks) + 1
    # the summary names a section that did not run instead of printing its number as nan

    class _Report:
        def __init__(self):
            self.metrics, self.texts = metrics, {}

        def text(self, name, body):
            self.texts[name] = body

    for plan_, expected in ((some, "with class labels not run"), (p, "with class labels nan")):
        text = dj.write_summary(_Report(), plan_, types.SimpleNamespace(dataset=d), 1.0, 1)
        assert expected in text and "DSTH slice_batchnorm 0.300" in text


def test_paper_differences_summarise_ours_minus_the_papers():
    import pandas as pd

    comparison = pd.DataFrame({
        "key": ["c/b/x/48/precision@recall0.1", "c/b/x/48/precision@recall0.2",
                "c/b/x/48/max_f@0.5", "c/classification/b/accuracy", "d/b/x/48/max_f@0.5"],
        "table": ["Table III"] * 3 + ["Table II", "Table III"],
        "difference": [0.1, -0.3, 0.05, -0.2, np.nan]})
    out = dj.paper_differences(comparison)
    row = out.loc[("Table III", "c", "b", "precision at recall")]
    assert (row["numbers"], row["measured"]) == (2, 2)
    assert np.isclose(row["min"], -0.3) and np.isclose(row["max"], 0.1)
    assert np.isclose(row["mean"], -0.1)
    assert out.loc[("Table II", "c", "b", "accuracy"), "measured"] == 1
    not_run = out.loc[("Table III", "d", "b", "max F-measure")]
    assert not_run["numbers"] == 1 and not_run["measured"] == 0 and np.isnan(not_run["mean"])


def _small_plan(**changes):
    import dataclasses

    size = {"split": {"cifar100-coarse": {"query_per_class": 2, "n_train": 80}},
            "epochs": [1, 0, 0], "finetune_epochs": 2, "sth_train": None, "input_size": 48,
            "whole_split": [], "rip_max": 20, "cnnh": {"n_train": 40, "epochs": 1}}
    p = dj.plan("smoke", **{**_PLAN, "hidden": 32, "batch_size": 20, "k": 5, "vote_k": 3,
                            "heldout": 0.2})
    return dataclasses.replace(p, size=size, bits=16, sweep_bits=[16], label_bits=[16],
                               fit_bits=[16], **changes)


def test_notebook_sections_record_their_keys_tables_and_summary(tmp_path, fake_backbone):
    from hashstudy.plots import dsth_journal as figures
    from hashstudy.reporting import Report

    _root(tmp_path)
    p, d = _small_plan(), "cifar100-coarse"
    report = Report("05_test", "smoke")
    s = dj.load_for_report(report, p, d)
    assert report.meta["sources"]["efficientnet_lite0"].startswith("efficientnet_lite0: ")
    t2 = dj.table_ii(report, s, p)
    assert list(t2.index) == [p.name(b) for b in p.backbones] + ["simplenet"]
    quality, _ = dj.hash_label_tables(report, s, p)
    t3, label_fit = dj.table_iii(report, s, p)
    assert t3.shape == (4, 16) and ("ours", "P@R 0.1") in t3.columns
    assert 0 <= label_fit.to_numpy().min() <= label_fit.to_numpy().max() <= 1
    without, result = dj.without_labels(report, s, p)
    assert list(without.columns) == list(dj.METRIC_KEYS) and set(without.index) == {
        "slice_batchnorm", "lsh"}
    assert set(result.codes) == {("slice_batchnorm", 16), ("lsh", 16)}
    on_pixels = dj.pixel_baselines(report, s, p, without)
    assert set(on_pixels.index) == {"lsh", "DSTH slice_batchnorm"}
    supervised, table_iv, _, quality2 = dj.with_labels(report, s, p)
    # the quality table gains a "with labels" row; the backbones' rows are section 3's
    assert list(quality2.index) == p.backbones + ["with labels"]
    np.testing.assert_allclose(quality2.iloc[:2].to_numpy(), quality.to_numpy())
    assert table_iv.loc["with labels", ("ours", "max_f@0.5")] == report.metrics[
        f"{d}/efficientnet_lite0/slice_batchnorm_labels/16/max_f@0.5"]
    refs = dj.references(report, s, p)
    assert refs.loc[(16, "(a) kNN label copy"), "label_fit/heldout"] == report.metrics[
        f"{d}/efficientnet_lite0/knn_copy/16/label_fit/heldout"]
    checks = dj.checks_table(report.metrics, p, dataset=d)
    assert np.allclose(checks["a - b"], checks["value a"] - checks["value b"], equal_nan=True)
    first = checks.iloc[0]
    assert first["value a"] == report.metrics[f"{d}/classification/efficientnet_lite0/accuracy"]
    for fig in (figures.fig3b(t3, p), figures.fig3c(t3, p), figures.fig2_fig7(result, s, p),
                figures.fig8(supervised, s, p), figures.references(report.metrics, p, d)):
        assert fig.axes
    text = dj.write_summary(report, p, s.split, 12.3, 1)
    assert f"Protocol: {s.split}" in text and "Wall time of this run: 12 s" in text
    assert (report.dir / "summary.md").read_text() == text + "\n"
    written = {f.name for f in report.dir.iterdir()}
    assert {f"table_ii_{d}.csv", f"hash_label_quality_{d}.csv", f"table_iii_{d}.csv",
            f"without_labels_{d}.csv", f"without_labels_pixel_baselines_{d}.csv",
            f"table_iv_{d}.csv", f"with_labels_{d}.csv",
            f"label_fit_and_references_{d}.csv", "summary.md"} <= written
