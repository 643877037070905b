"""`sweep`: every grid point of a `SweepConfig`, on a process pool or a Ray cluster, resumable."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

from tfxbar.sweep.grid import FINETUNE_FIELDS, SweepConfig, point_id
from tfxbar.sweep.point import calibration_name, evaluate_point
from tfxbar.sweep.table import cell_value, plot_pareto, read_rows, write_rows

__all__ = ["sweep"]


def _worker_init() -> None:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"   # tf_keras in every worker (Keras 3 otherwise)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _local(todo: list[dict[str, Any]], settings: dict[str, Any], workers: int) -> Iterator[dict[str, Any]]:
    # spawn: a forked TensorFlow runtime is not safe to use in the child.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, context, initializer=_worker_init) as pool:
        futures = [pool.submit(evaluate_point, point, settings) for point in todo]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def _ray(todo: list[dict[str, Any]], settings: dict[str, Any], address: str) -> Iterator[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise ImportError("--address needs Ray: pip install 'tfxbar[sweep]'") from None
    env = {"env_vars": {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}}
    started = not ray.is_initialized()
    if started:
        if address == "local":   # a private one-CPU instance (tests, a laptop)
            ray.init(num_cpus=1, include_dashboard=False, runtime_env=env)
        else:
            ray.init(address=address, runtime_env=env)
    try:
        remote = ray.remote(evaluate_point)
        pending = [remote.remote(point, settings) for point in todo]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started:
            ray.shutdown()


def sweep(config: SweepConfig, *, address: str | None = None, workers: int | None = None,
          verbose: int = 1) -> list[dict[str, Any]]:
    """Evaluate every grid point not yet in ``config.table``; rows are written as points finish.

    Points with a ``finetune`` of ``"qat"`` / ``"adc_aware"`` fine-tune a fresh copy of the model
    first (`tfxbar.sweep.point.finetune`).

    Arguments:
        config: the `SweepConfig`.
        address: a Ray cluster address (``"auto"``, ``"ray://host:10001"``) or ``"local"`` for a
            private one-CPU Ray instance; None: a local process pool.
        workers: processes of the local pool (default: the usable CPUs, at most 4).
        verbose: 1 shows a Keras progress bar over the points, 0 is silent.

    Returns:
        Every row of the table (earlier ones included), in table order.

    Raises:
        ValueError: the table holds fine-tuned rows of this grid made with other fine-tune
            settings (the message names the field).
        ImportError: a ``.parquet`` table without pyarrow, or `address` without Ray.

    Example:
        >>> rows = tfxbar.sweep.sweep(SweepConfig.load("docs/sweeps/p4_mnist.json"))
    """
    import tf_keras as keras

    rows = read_rows(config.table)
    axes = config.axes
    keys = [point_id({a: cell_value(row.get(a)) for a in axes}, axes) for row in rows]
    wanted = {point_id(p, axes) for p in config.points()}
    _check_finetunes([r for r, k in zip(rows, keys, strict=True) if k in wanted], config)
    _check_calibration([r for r, k in zip(rows, keys, strict=True) if k in wanted], config)
    done = set(keys)
    todo = [p for p in config.points() if point_id(p, axes) not in done]
    settings = {"model": config.model, "data": config.data, "trials": config.trials, "seed": config.seed,
                "representative": config.representative, "representative_data": config.representative_data,
                "adc_range": config.adc_range,
                **{name: getattr(config, name) for name in FINETUNE_FIELDS if name != "seed"}}
    progbar = keras.utils.Progbar(len(todo), verbose=verbose, unit_name="point")
    if todo:
        if workers is None:
            workers = max(1, min(4, len(os.sched_getaffinity(0))))
        results = _ray(todo, settings, address) if address else _local(todo, settings, workers)
        for i, row in enumerate(results):
            rows.append(row)
            write_rows(config.table, rows)
            progbar.update(i + 1)
    if config.plot and rows:
        plot_pareto(rows, config.plot)
    return rows


def _check_calibration(rows: list[dict[str, Any]], config: SweepConfig) -> None:
    """Refuse to resume over rows whose ADC steps were chosen otherwise than the config says:
    another range policy (when ``adc_range`` is no axis of the grid) or other calibration images
    (they would be skipped as done, and the table would mix two calibrations; rows from before
    the columns existed are not checked)."""
    calibration = calibration_name(config.representative_data)
    for row in rows:
        point = {a: cell_value(row.get(a)) for a in config.axes}
        got = cell_value(row.get("adc_range"))
        uses = config.adc_range if cell_value(row.get("adc_bits")) is not None else "lossless"
        if "adc_range" not in config.axes and got is not None and got != uses:
            raise ValueError(f"sweep table {config.table}: the row {point} was converted with "
                             f"adc_range={got!r} but the config has adc_range={config.adc_range!r}; give "
                             "the sweep a new table, delete those rows or add adc_range to the grid")
        got = cell_value(row.get("calibration"))
        if got is not None and got != calibration:
            raise ValueError(f"sweep table {config.table}: the row {point} was calibrated on {got!r} but "
                             f"the config calibrates on {calibration!r} (representative_data); give the "
                             "sweep a new table or delete those rows")


def _check_finetunes(rows: list[dict[str, Any]], config: SweepConfig) -> None:
    """Refuse to resume over fine-tuned rows made with other fine-tune settings (they would be
    skipped as done, and the table would mix two recipes)."""
    expected = config.finetune_settings()
    defaults = {f.name: f.default for f in dataclasses.fields(SweepConfig)}
    for row in rows:
        if cell_value(row.get("finetune")) in (None, "none"):
            continue
        for field, value in expected.items():
            got = cell_value(row.get(field))
            if got is None and field not in row and value == defaults.get(field):
                continue   # a table from before the field existed: its rows used the default
            if got != value and str(got) != str(value):
                point = {a: cell_value(row.get(a)) for a in config.axes}
                raise ValueError(f"sweep table {config.table}: the row {point} was fine-tuned with "
                                 f"{field}={got!r} but the config has {value!r}; give the sweep a new "
                                 "table or delete those rows")
