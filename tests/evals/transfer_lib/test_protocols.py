"""The linear protocol on synthetic features: selection on validation only, test touched
once, refit on train + validation, the path resumed after a stop; the fine-tune protocol's
paper rules (decay / lr, BN momentum)."""

import numpy as np
import pytest

from simclr_jax.evals import loop
from simclr_jax.evals.transfer_lib import finetune_protocol, linear_protocol, logreg

PATH = linear_protocol.PathConfig(num=6, low=1e-5, high=1e0, max_iter=500, tol=1e-6,
                                  threads=1)


def _split(rng, n, d=10, c=3):
    y = rng.integers(0, c, n)
    centres = np.random.default_rng(42).normal(size=(c, d))
    return (centres[y] + rng.normal(scale=1.5, size=(n, d))).astype(np.float32), y


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    train, val, test = _split(rng, 200), _split(rng, 80), _split(rng, 100)
    calls = []

    def get_test():
        calls.append(1)
        return test

    return linear_protocol.HostSplits(train=train, val=val, test=get_test), calls


def test_selection_uses_validation_and_touches_test_once(data, tmp_path, monkeypatch):
    host, calls = data
    fits = []
    original = logreg.LinearModel.fit

    def spy(self, x, y, lam):
        fits.append((len(x), lam))
        return original(self, x, y, lam)

    monkeypatch.setattr(logreg.LinearModel, "fit", spy)
    out = linear_protocol.run(host, "top1", False, PATH, str(tmp_path), {"id": 1},
                              lambda step: False)
    assert calls == [1]  # test features are read once, after selection
    assert len(out["candidates"]) == 6 and len(fits) == 7
    # The path fits train only; the last fit is the refit on train + val at the choice.
    assert all(n == 200 for n, _ in fits[:6])
    assert fits[-1] == (280, out["chosen"]["lambda"])
    vals = [p["val_score"] for p in out["candidates"]]
    assert out["val_score"] == max(vals)
    assert out["chosen"]["lambda"] == out["candidates"][int(np.argmax(vals))]["lambda"]
    # The reported test accuracy is the refit model's, recomputed independently.
    (x, y), (xv, yv) = host.train, host.val
    from sklearn.linear_model import LogisticRegression

    lam = out["chosen"]["lambda"]
    ref = LogisticRegression(C=1 / (280 * lam), max_iter=500, tol=1e-6).fit(
        np.concatenate([x, xv]), np.concatenate([y, yv]))
    xt, yt = host.test()
    assert out["test_top1"] == pytest.approx(np.mean(ref.predict(xt) == yt), abs=0.011)


def test_a_stopped_path_resumes_where_it_stopped(data, tmp_path):
    host, _ = data
    whole = linear_protocol.regularisation_path(host, "top1", False, PATH, str(tmp_path / "a"),
                                                {"id": 1}, lambda step: False)
    with pytest.raises(loop.Preempted):
        linear_protocol.regularisation_path(host, "top1", False, PATH, str(tmp_path / "b"),
                                            {"id": 1}, lambda step: step >= 2)
    fits = []
    original = logreg.LinearModel.fit
    try:
        logreg.LinearModel.fit = lambda self, x, y, lam: (fits.append(lam),
                                                          original(self, x, y, lam))[1]
        resumed = linear_protocol.regularisation_path(host, "top1", False, PATH,
                                                      str(tmp_path / "b"), {"id": 1},
                                                      lambda step: False)
    finally:
        logreg.LinearModel.fit = original
    assert len(fits) == 4  # the 2 finished points are not refitted
    assert [p["lambda"] for p in resumed] == [p["lambda"] for p in whole]
    np.testing.assert_allclose([p["val_score"] for p in resumed],
                               [p["val_score"] for p in whole], atol=0.02)
    # Another identity (another encoder or path) starts over.
    fits.clear()
    try:
        logreg.LinearModel.fit = lambda self, x, y, lam: (fits.append(lam),
                                                          original(self, x, y, lam))[1]
        linear_protocol.regularisation_path(host, "top1", False, PATH, str(tmp_path / "b"),
                                            {"id": 2}, lambda step: False)
    finally:
        logreg.LinearModel.fit = original
    assert len(fits) == 6


def test_finetune_follows_the_paper_rules():
    assert finetune_protocol.bn_momentum(50000, 256) == pytest.approx(1 - 10 / 195)
    assert finetune_protocol.bn_momentum(2000, 256) == 0.9  # 7 steps per epoch: the floor
    fc = finetune_protocol.FinetuneConfig(learning_rates=(0.01,), weight_decays=(1e-4,),
                                          num_steps=5, batch_size=16, eval_batch_size=32,
                                          crop_area_min=0.08, image_size=8, seed=0,
                                          log_every_steps=1, checkpoint_every_steps=0)
    c = finetune_protocol.classifier_config(fc, 0.01, 1e-4, "run")
    assert c.weight_decay == pytest.approx(1e-2)  # decay divided by lr
    assert c.optimizer == "momentum" and c.momentum == 0.9 and c.fine_tune_after_block == -1
    assert c.num_train_steps == 5 and c.train_augment


def test_finetune_selects_on_validation_refits_on_train_val_tests_once(tmp_path, monkeypatch):
    """The grid trains on train and is scored on validation; the best point is retrained on
    train + validation and scored once on test; a rerun skips the finished grid points."""
    import types

    splits = types.SimpleNamespace(train="TRAIN", val="VAL", test="TEST", train_val="TRAIN+VAL")
    trained, predicted = [], []
    quality = {0.01: 0.5, 0.1: 0.9}  # validation accuracy of each lr (decay ignored)

    def train_one(pre, fc, lr, wd, train, directory, mesh):
        trained.append((train, lr, wd))
        return None, types.SimpleNamespace(step=fc.num_steps, lr=lr)

    def predict(model, state, source, image_size, global_batch, mesh):
        predicted.append(source)
        labels = np.arange(100) % 4
        right = np.arange(100) < 100 * quality[state.lr]
        scores = np.eye(4)[np.where(right, labels, (labels + 1) % 4)]
        return scores, labels

    monkeypatch.setattr(finetune_protocol, "train_one", train_one)
    monkeypatch.setattr(finetune_protocol, "predict", predict)
    fc = finetune_protocol.FinetuneConfig(learning_rates=(0.01, 0.1), weight_decays=(0.0, 1e-4),
                                          num_steps=5, batch_size=4, eval_batch_size=8,
                                          crop_area_min=0.08, image_size=8, seed=0,
                                          log_every_steps=1, checkpoint_every_steps=0)
    out = finetune_protocol.run(None, fc, splits, "top1", str(tmp_path), None, {"id": 1})
    assert trained[:4] == [("TRAIN", 0.01, 0.0), ("TRAIN", 0.01, 1e-4), ("TRAIN", 0.1, 0.0),
                           ("TRAIN", 0.1, 1e-4)]
    assert trained[4] == ("TRAIN+VAL", 0.1, 0.0)  # the best; ties: the first in grid order
    assert predicted == ["VAL"] * 4 + ["TEST"]
    assert out["chosen"] == {"learning_rate": 0.1, "weight_decay": 0.0}
    assert out["val_score"] == pytest.approx(0.9) and out["test_top1"] == pytest.approx(0.9)
    assert len(out["candidates"]) == 4
    trained.clear(), predicted.clear()
    finetune_protocol.run(None, fc, splits, "top1", str(tmp_path), None, {"id": 1})
    assert trained == [("TRAIN+VAL", 0.1, 0.0)] and predicted == ["TEST"]
