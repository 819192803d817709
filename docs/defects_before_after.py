"""Before/after figures of the four model defects fixed in env v1 (issue 9), through `Market` only.

It uses nothing but the public `Market` API and the `O_*` output columns, which both versions have,
so it runs unchanged on the old kernel too:

    python docs/defects_before_after.py                    # this version
    git worktree add /tmp/v0 128f34d                       # the last v0 commit, then make a package
    mkdir -p /tmp/v0pkg/hedgegym && touch /tmp/v0pkg/hedgegym/__init__.py
    for d in envs agents train; do ln -s /tmp/v0/$d /tmp/v0pkg/hedgegym/$d; done
    cp -r envs/scenarios /tmp/v0/configs/   # only if /tmp/v0 lacks configs/scenarios
    PYTHONPATH=/tmp/v0pkg python docs/defects_before_after.py

1. a book with a 1-day and a 2-day line settled the 1-day line twice (step 25's book P&L);
2. a frictionless BS-delta hedge of a 1-month ATM put at r = 5 % (Derman-Kamal: std 0.443 / 0.222);
3. the stressed clearing of seed 4250, step 20 (a root at +0.1775 exists);
4. pinning at expiry on long-gamma-pin, and zero-dte's spurious pin.
"""

from __future__ import annotations

import numpy as np

from hedgegym.envs import layout as L
from hedgegym.envs.config import load_scenario, validate_config
from hedgegym.envs.market import Market


def scenario(name: str, edit) -> object:
    data = load_scenario(name).model_dump()
    edit(data)
    return validate_config(data)


def two_expiries(c: dict) -> None:
    c["agent"]["lines"] = [
        {"strike": 5e4, "expiry_days": 1.0, "kind": "call", "quantity": 1.0},
        {"strike": 1e5, "expiry_days": 2.0, "kind": "call", "quantity": 1.0},
    ]
    c["episode"]["horizon_days"] = 3.0


def defect_1() -> None:
    market = Market(scenario("frictionless", two_expiries), 1)
    market.reset(seeds=np.array([0]))
    book_pnl = [market.step()[0, L.O_BOOK_PNL] for _ in range(72)]
    print(
        f"defect 1: book P&L at steps 24, 25, 26: {np.round(book_pnl[23:26], 0)}; episode book P&L {sum(book_pnl):.0f}"
    )


def defect_2(n_rebalances: int, n_paths: int = 20000) -> None:
    def edit(c: dict) -> None:
        c["market"].update(rate=0.05, sigma=0.2, spot0=100.0, mu=0.0)
        c["agent"]["lines"] = [{"strike": 100.0, "expiry_days": 365 / 12, "kind": "put", "quantity": -1.0}]
        c["agent"]["venues"] = ["spot"]
        c["episode"]["horizon_days"] = 365 / 12
        c["episode"]["dt_hours"] = 8760 / 12 / n_rebalances

    market = Market(scenario("frictionless", edit), n_paths)
    market.reset(seeds=np.arange(n_paths))
    total = np.zeros(n_paths)
    for _ in range(market.episode_steps):
        trade = -market.net_delta()
        total += market.step(np.stack([trade, 0 * trade, 0 * trade], axis=1))[:, L.O_PNL]
    print(f"defect 2: {n_rebalances} rebalances: mean {total.mean():.4f} std {total.std():.4f}")


def defect_3() -> None:
    def straddle(quantity: float):
        def edit(c: dict) -> None:
            c["market"]["impact"]["permanent_share"] = 1.0
            c["market"]["smile"].update(skew=0.0, smile=0.0, vol_premium=0.0)
            spot0 = c["market"]["spot0"]
            c["dealers"]["lines"] = [
                {"strike": spot0, "expiry_days": 365.0, "kind": kind, "quantity": quantity} for kind in ("call", "put")
            ]

        return edit

    unit = Market(scenario("default", straddle(-1.0)), 1)
    unit.reset(seeds=np.array([4250]))
    phi_per_unit = abs(float(unit.observe()[0, L.OBS_NAMES.index("phi")]))
    market = Market(scenario("default", straddle(-0.8 / phi_per_unit)), 1)
    market.reset(seeds=np.array([4250]))
    for _ in range(20):
        out = market.step()
    print(
        f"defect 3: seed 4250 step 20: log-move {out[0, L.O_RETURN]:+.4f}, crisis flag {out[0, L.O_CRISIS]:.0f}, "
        f"phi {out[0, L.O_PHI]:.3f}"
    )


def defect_4(name: str, n_paths: int = 4000) -> None:
    market = Market(load_scenario(name), n_paths)
    market.reset(seeds=np.arange(n_paths))
    n = market.episode_steps
    for k in range(n):
        market.step()
        if k == n - 2:
            before = market.episode_metrics()
    after = market.episode_metrics()
    paired = after["pin_distance"] - after["pin_distance_exo"]
    print(
        f"defect 4: {name}: one step before expiry {100 * before['pin_distance'].mean():.2f}% vs exogenous "
        f"{100 * before['pin_distance_exo'].mean():.2f}%; at expiry {100 * after['pin_distance'].mean():.2f}% vs "
        f"{100 * after['pin_distance_exo'].mean():.2f}%, paired {100 * paired.mean():+.3f}% "
        f"+- {196 * paired.std() / np.sqrt(n_paths):.3f}%"
    )


if __name__ == "__main__":
    defect_1()
    defect_2(21)
    defect_2(84)
    defect_3()
    defect_4("long-gamma-pin")
    defect_4("zero-dte")
