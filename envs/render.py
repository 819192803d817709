"""Frames of :class:`~hedgegym.envs.hedging_env.HedgingEnv` for ``render_mode="rgb_array"`` and ``"human"``.

An :class:`EpisodeTrail` keeps the episode so far (preallocated, one row per step: spot, exogenous
price, hedge positions, cumulative P&L); the env fills it only when it renders frames, so the
training path pays nothing. :class:`FrameRenderer` draws it with matplotlib's Agg canvas (no
pyplot, no window) into an ``(H, W, 3)`` ``uint8`` array of three panels over the whole episode's
time axis: price with and without the dealers' feedback, the hedge by venue, the cumulative P&L.
The figure is built once and its lines updated per frame (about 0.08 s a frame on one core).

Example:
    >>> import numpy as np
    >>> trail = EpisodeTrail(steps=4)
    >>> trail.start(100.0, 100.0, np.zeros(3), 0.0)
    >>> trail.add(101.0, 100.5, np.array([1.0, 0.0, 0.0]), -3.0)
    >>> trail.n, trail.spot[:trail.n].tolist()
    (2, [100.0, 101.0])
"""

from __future__ import annotations

import numpy as np

FRAME_SIZE = (640, 480)
"""Width and height of a frame in pixels (multiples of 16, as video encoders want)."""
_DPI = 80


class EpisodeTrail:
    """The current episode's path, one row per step (row 0: the reset)."""

    def __init__(self, steps: int):
        self.spot = np.empty(steps + 1)
        self.exo_spot = np.empty(steps + 1)
        self.hedge = np.empty((steps + 1, 3))
        self.pnl = np.empty(steps + 1)
        self.n = 0

    def start(self, spot: float, exo_spot: float, hedge: np.ndarray, pnl: float) -> None:
        """Forget the previous episode; record the reset state."""
        self.n = 0
        self.add(spot, exo_spot, hedge, pnl)

    def add(self, spot: float, exo_spot: float, hedge: np.ndarray, pnl: float) -> None:
        """Record the state after a step."""
        k = self.n
        self.spot[k], self.exo_spot[k], self.hedge[k], self.pnl[k] = spot, exo_spot, hedge, pnl
        self.n = k + 1


class FrameRenderer:
    """Draws an :class:`EpisodeTrail` as an RGB frame; ``venues``: the enabled venues' names."""

    def __init__(self, steps: int, dt_hours: float, venues: tuple[str, ...], title: str):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from hedgegym.envs.config import VENUE_NAMES

        width, height = FRAME_SIZE
        self.fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
        self.canvas = FigureCanvasAgg(self.fig)
        self.hours = np.arange(steps + 1) * dt_hours
        ax_price, ax_hedge, ax_pnl = self.fig.subplots(3, 1, sharex=True)
        self.axes = (ax_price, ax_hedge, ax_pnl)
        (self.spot_line,) = ax_price.plot([], [], lw=1.3, color="C0", label="spot (with feedback)")
        (self.exo_line,) = ax_price.plot([], [], lw=1.0, ls="--", color="C7", label="exogenous (no feedback)")
        ax_price.legend(fontsize=7, loc="upper left")
        ax_price.set_ylabel("price (USD)", fontsize=8)
        self.venue_columns = [VENUE_NAMES.index(v) for v in venues]
        self.hedge_lines = [
            ax_hedge.plot(
                [], [], lw=1.2, color=f"C{c + 1}", label=f"{VENUE_NAMES[c]} ({'contracts' if c == 2 else 'coins'})"
            )[0]
            for c in self.venue_columns
        ]
        ax_hedge.axhline(0.0, color="grey", lw=0.6)
        ax_hedge.legend(fontsize=7, loc="upper left")
        ax_hedge.set_ylabel("hedge", fontsize=8)
        (self.pnl_line,) = ax_pnl.plot([], [], lw=1.3, color="C3")
        ax_pnl.axhline(0.0, color="grey", lw=0.6)
        ax_pnl.set_ylabel("cumulative P&L (USD)", fontsize=8)
        ax_pnl.set_xlabel("hours", fontsize=8)
        ax_pnl.set_xlim(0.0, self.hours[-1] if len(self.hours) > 1 else 1.0)
        for ax in self.axes:
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        self.title = self.fig.suptitle(title, fontsize=9)
        self.name = title
        self.fig.tight_layout(rect=(0, 0, 1, 0.96))

    def draw(self, trail: EpisodeTrail) -> np.ndarray:
        """The frame of ``trail`` so far: ``uint8 [H, W, 3]``."""
        n = trail.n
        t = self.hours[:n]
        self.spot_line.set_data(t, trail.spot[:n])
        self.exo_line.set_data(t, trail.exo_spot[:n])
        for line, c in zip(self.hedge_lines, self.venue_columns, strict=True):
            line.set_data(t, trail.hedge[:n, c])
        self.pnl_line.set_data(t, trail.pnl[:n])
        _fit(self.axes[0], np.concatenate([trail.spot[:n], trail.exo_spot[:n]]))
        _fit(self.axes[1], np.concatenate([trail.hedge[:n, self.venue_columns].ravel(), [0.0]]))
        _fit(self.axes[2], np.concatenate([trail.pnl[:n], [0.0]]))
        self.title.set_text(f"{self.name}   step {n - 1}   P&L {trail.pnl[n - 1]:+,.0f} USD")
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[:, :, :3].copy()


def _fit(ax, values: np.ndarray) -> None:
    lo, hi = float(values.min()), float(values.max())
    pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi) * 1e-3, 1.0)
    ax.set_ylim(lo - pad, hi + pad)


class FrameWindow:
    """Shows frames in a matplotlib window (``render_mode="human"``); under a non-interactive
    backend (Agg, headless) it warns once and shows nothing."""

    def __init__(self, fps: float):
        self.fps = fps
        self.image = None
        self.warned = False

    def show(self, frame: np.ndarray) -> None:
        import matplotlib
        from matplotlib.backends import BackendFilter, backend_registry

        if matplotlib.get_backend().lower() in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE):
            if not self.warned:
                import gymnasium as gym

                gym.logger.warn(
                    f"render_mode='human': matplotlib's backend {matplotlib.get_backend()!r} cannot "
                    "show a window (no display); nothing is shown. Use render_mode='rgb_array' "
                    "to get the frames."
                )
                self.warned = True
            return
        import matplotlib.pyplot as plt

        if self.image is None or not plt.fignum_exists(self.image.figure.number):
            fig = plt.figure(figsize=(FRAME_SIZE[0] / _DPI, FRAME_SIZE[1] / _DPI), dpi=_DPI)
            ax = fig.add_axes((0, 0, 1, 1))
            ax.set_axis_off()
            self.image = ax.imshow(frame)
        else:
            self.image.set_data(frame)
        plt.pause(1.0 / self.fps)

    def close(self) -> None:
        if self.image is not None:
            import matplotlib.pyplot as plt

            plt.close(self.image.figure)
            self.image = None
