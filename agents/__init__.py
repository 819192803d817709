"""hedgegym.agents: the classical baseline hedgers, cheapest-venue routing and stable-baselines3 glue.

Imports :mod:`hedgegym.envs` only. See :mod:`hedgegym.agents.baselines` (``make_baseline``,
``BASELINES``), :mod:`hedgegym.agents.routing` and :mod:`hedgegym.agents.sb3`.
"""
