"""``python -m ntkfast``: the NTK of a small MLP on scikit-learn's bundled digits data, with kernel
regression accuracy; ``python -m ntkfast bench`` prints the speed ratios."""

from __future__ import annotations

import argparse
import sys
import time


def demo() -> None:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from . import MLP, kernel, kernel_diag

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    arch = MLP(depth=3, activation="relu", W_std=1.4, b_std=0.1)
    print(f"ntkfast demo: {arch}")
    print(f"digits: {X_train.shape[0]} train / {X_test.shape[0]} test points, {X.shape[1]} features")

    t0 = time.perf_counter()
    K_train = kernel(arch, X_train)
    K_test = kernel(arch, X_test, X_train)
    elapsed = time.perf_counter() - t0
    print(f"NTK Gram {K_train.shape} + {K_test.shape} in {elapsed:.3f} s")
    diag = kernel_diag(arch, X_train)
    print(
        f"diag exact: {np.array_equal(np.diag(K_train), diag)}, symmetric: {np.array_equal(K_train, K_train.T)}"
    )
    eig = np.linalg.eigvalsh(K_train)
    print(
        f"spectrum: lambda_max {eig[-1]:.4g}, lambda_min {eig[0]:.4g}, condition number {eig[-1] / eig[0]:.3g}"
    )

    # kernel regression on centred one-hot targets (t = inf of a wide network trained by gradient flow)
    Y = np.eye(10)[y_train] - 0.1
    reg = 1e-4 * np.mean(diag)
    alpha = np.linalg.solve(K_train + reg * np.eye(len(K_train)), Y)
    accuracy = np.mean(np.argmax(K_test @ alpha, axis=1) == y_test)
    print(f"NTK kernel regression test accuracy: {accuracy:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ntkfast", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="the default: NTK kernel regression on the bundled digits data")
    bench = sub.add_parser("bench", help="time the kernel against a bare X @ X.T in this process")
    bench.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    bench.add_argument("--spectrum", action="store_true", help="top-50 eigenpairs: matrix-free eigsh vs dense eigh")
    args = parser.parse_args(argv)
    if args.command == "bench":
        from .bench import main as bench_main

        bench_main(quick=args.quick, spectrum=args.spectrum)
    else:
        demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
