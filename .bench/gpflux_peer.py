# ruff: noqa: E402, NPY002  (TF threading before gpflow's import; np.random seeds GPflow's init)
"""Peer harness: GPflux 2-layer DGP and GPflow SVGP on the benchmark workloads.

Same arrays (ppl_dgp/data/*.npz), settings and JSON fields as `ppl-dgp bench`, so the step-time
ratio can be measured in one run on one machine. Not part of the package or of CI: it needs
TensorFlow, in a separate environment (see .bench/README.md).

Usage: taskset -c 1 VENV/bin/python .bench/gpflux_peer.py [datasets,] [models,] [steps]
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import sys
import time

import numpy as np
import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import gpflow
import gpflux
from gpflow.keras import tf_keras
from gpflux.architectures import Config, build_constant_input_dim_deep_gp

gpflow.config.set_default_float(np.float64)

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ppl_dgp", "data")
BATCH = 256
LR = 0.01
S_PRED = 100


def load(name):
    d = np.load(f"{DATA_DIR}/{name}.npz")
    xm, xs = d["x_mean"], d["x_std"]
    ym, ys = float(np.ravel(d["y_mean"])[0]), float(np.ravel(d["y_std"])[0])
    Xtr = ((d["X_train"] - xm) / xs).astype(np.float64)
    Ytr = ((d["Y_train"] - ym) / ys).astype(np.float64).reshape(-1, 1)
    Xte = ((d["X_test"] - xm) / xs).astype(np.float64)
    Yte_orig = d["Y_test"].astype(np.float64).reshape(-1, 1)
    Z = d["Z_init"].astype(np.float64)
    return Xtr, Ytr, Xte, Yte_orig, ym, ys, Z


def make_batches(X, Y, seed):
    N = X.shape[0]
    ds = tf.data.Dataset.from_tensor_slices((X, Y)).shuffle(N, seed=seed).batch(BATCH).repeat()
    return iter(ds)


def train(step_fn, it, steps):
    x, y = next(it)
    t0 = time.perf_counter()
    loss = step_fn(x, y)
    loss.numpy()
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(steps - 1):
        x, y = next(it)
        loss = step_fn(x, y)
    loss.numpy()
    rest = time.perf_counter() - t1
    return first, rest / max(steps - 1, 1), float(loss.numpy())


def gauss_logpdf(y, m, v):
    return -0.5 * (np.log(2 * np.pi * v) + (y - m) ** 2 / v)


def logsumexp(a, axis):
    mx = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(mx, axis) + np.log(np.sum(np.exp(a - mx), axis=axis))


def run_dgp(name, steps, seed=0):
    tf.random.set_seed(seed)
    np.random.seed(seed)
    Xtr, Ytr, Xte, Yte, ym, ys, Z = load(name)
    N, D = Xtr.shape
    config = Config(
        num_inducing=Z.shape[0],
        inner_layer_qsqrt_factor=1e-5,
        likelihood_noise_variance=1e-2,
        whiten=True,
    )
    dgp = build_constant_input_dim_deep_gp(Xtr, num_layers=2, config=config)
    hidden, out = dgp.f_layers
    # shared Z initialised to Z_init (builder uses k-means centroids; replace them)
    for layer in dgp.f_layers:
        layer.inducing_variable.inducing_variable.Z.assign(Z)
    lik = dgp.likelihood_layer.likelihood

    train_model = dgp.as_training_model()
    opt = tf_keras.optimizers.Adam(LR)

    sig = [tf.TensorSpec([None, D], tf.float64), tf.TensorSpec([None, 1], tf.float64)]

    @tf.function(input_signature=sig)
    def step(x, y):
        with tf.GradientTape() as tape:
            train_model({"inputs": x, "targets": y}, training=True)
            # = mean_b(-log p(y|f)) + sum_layers KL / N  ==  -ELBO_batch / N
            loss = tf.add_n(train_model.losses)
        vars_ = train_model.trainable_variables
        grads = tape.gradient(loss, vars_)
        opt.apply_gradients(zip(grads, vars_, strict=True))
        return loss

    it = make_batches(Xtr, Ytr, seed)
    first, sps, last_loss = train(step, it, steps)

    # full-batch ELBO (one sample per datum through the hidden layer; averaged over 10 draws)
    elbo_fn = tf.function(lambda x, y: dgp.elbo((x, y)))
    elbos = [float(elbo_fn(Xtr, Ytr).numpy()) for _ in range(10)]
    kls = [float(l.prior_kl().numpy()) for l in dgp.f_layers]

    # predictive: Gaussian mixture over S samples through the hidden layer
    hm, hv = hidden.predict(Xte, full_cov=False, full_output_cov=False)
    hm, hv = hm.numpy(), hv.numpy()
    noise = float(lik.variance.numpy())
    rng = np.random.default_rng(seed)
    ms, vs = [], []
    for _ in range(S_PRED):
        h = hm + np.sqrt(hv) * rng.standard_normal(hm.shape)
        m, v = out.predict(h, full_cov=False, full_output_cov=False)
        ms.append(m.numpy())
        vs.append(v.numpy() + noise)
    ms, vs = np.stack(ms), np.stack(vs)  # (S, Nt, 1)
    Yte_s = (Yte - ym) / ys
    lp = logsumexp(gauss_logpdf(Yte_s[None], ms, vs), axis=0) - np.log(S_PRED)
    mean_pred = ms.mean(0) * ys + ym
    rmse = float(np.sqrt(np.mean((mean_pred - Yte) ** 2)))
    mlpd = float(np.mean(lp) - np.log(ys))
    return dict(
        dataset=name,
        model="dgp2",
        N=int(N),
        D=int(D),
        steps=steps,
        first_step_seconds=first,
        seconds_per_step=sps,
        final_elbo=float(np.mean(elbos)),
        final_elbo_std_over_10_draws=float(np.std(elbos)),
        final_elbo_per_N=float(np.mean(elbos)) / N,
        kl_per_layer=kls,
        last_batch_loss=last_loss,
        noise_variance=noise,
        hidden_kernel_variance=float(hidden.kernel.kernel.variance.numpy()),
        test_rmse=rmse,
        test_mlpd=mlpd,
        versions=dict(gpflux=gpflux.__version__, gpflow=gpflow.__version__, tf=tf.__version__),
    )


def run_svgp(name, steps, seed=0):
    tf.random.set_seed(seed)
    np.random.seed(seed)
    Xtr, Ytr, Xte, Yte, ym, ys, Z = load(name)
    N, D = Xtr.shape
    kern = gpflow.kernels.SquaredExponential(lengthscales=[2.0] * D, variance=1.0)
    model = gpflow.models.SVGP(
        kern,
        gpflow.likelihoods.Gaussian(variance=1e-2),
        inducing_variable=Z.copy(),
        whiten=True,
        num_data=N,
    )
    opt = tf_keras.optimizers.Adam(LR)
    sig = [tf.TensorSpec([None, D], tf.float64), tf.TensorSpec([None, 1], tf.float64)]

    @tf.function(input_signature=sig)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = model.training_loss((x, y)) / N  # -ELBO_batch / N
        vars_ = model.trainable_variables
        grads = tape.gradient(loss, vars_)
        opt.apply_gradients(zip(grads, vars_, strict=True))
        return loss

    it = make_batches(Xtr, Ytr, seed)
    first, sps, last_loss = train(step, it, steps)
    elbo = float(model.elbo((Xtr, Ytr)).numpy())
    kl = float(model.prior_kl().numpy())
    m, v = model.predict_y(Xte)
    m, v = m.numpy(), v.numpy()
    Yte_s = (Yte - ym) / ys
    rmse = float(np.sqrt(np.mean((m * ys + ym - Yte) ** 2)))
    mlpd = float(np.mean(gauss_logpdf(Yte_s, m, v)) - np.log(ys))
    return dict(
        dataset=name,
        model="svgp",
        N=int(N),
        D=int(D),
        steps=steps,
        first_step_seconds=first,
        seconds_per_step=sps,
        final_elbo=elbo,
        final_elbo_per_N=elbo / N,
        kl_per_layer=[kl],
        last_batch_loss=last_loss,
        noise_variance=float(model.likelihood.variance.numpy()),
        test_rmse=rmse,
        test_mlpd=mlpd,
        versions=dict(gpflux=gpflux.__version__, gpflow=gpflow.__version__, tf=tf.__version__),
    )


if __name__ == "__main__":
    datasets = (sys.argv[1] if len(sys.argv) > 1 else "step1d,synth10k,diabetes").split(",")
    models = (sys.argv[2] if len(sys.argv) > 2 else "dgp2,svgp").split(",")
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    for ds in datasets:
        for mdl in models:
            r = (run_dgp if mdl == "dgp2" else run_svgp)(ds, steps)
            print(json.dumps(r), flush=True)
