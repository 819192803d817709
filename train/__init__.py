"""hedgegym.train: evaluation, metrics, training and the `hedgegym` command.

``evaluate`` and ``EvaluationResult`` are imported here eagerly, not lazily: the submodule is also
named ``evaluate``, and importing a submodule binds its name on the package, which would shadow a
lazily provided function; importing it here first and rebinding leaves ``hedgegym.train.evaluate``
the function for good.

``train`` and ``RunResult`` (:mod:`hedgegym.train.training`) are provided lazily, so importing this
package loads neither torch nor stable-baselines3; their module's name differs, so nothing shadows them.
"""

from hedgegym.train.evaluate import EvaluationResult, evaluate

__all__ = ["EvaluationResult", "RunResult", "evaluate", "train"]


def __getattr__(name: str):
    if name in ("train", "RunResult"):
        from hedgegym.train import training

        return getattr(training, name)
    raise AttributeError(f"module 'hedgegym.train' has no attribute {name!r}")
