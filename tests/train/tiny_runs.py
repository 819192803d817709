"""The tiny training runs that the recovery and Ray tests share (imported by name, as ``tests/envs/ledger.py``):
one-day episodes (24 steps) of a one-call book, 4 envs, 4 held-out evaluation episodes, and PPO's
rollout and batch at that size."""

ONE_DAY_RUN = {
    "env.n_envs": 4,
    "evaluation.episodes": 4,
    "scenario.overrides.episode.horizon_days": 1.0,
    "scenario.overrides.agent.lines": [{"strike": 100_000.0, "expiry_days": 1.0, "kind": "call", "quantity": -20.0}],
}
PPO_SIZES = {"algorithm.hyperparameters.n_steps": 32, "algorithm.hyperparameters.batch_size": 64}
