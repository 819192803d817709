"""hedgegym.envs: the market simulator, scenario configs and Gymnasium environments."""
