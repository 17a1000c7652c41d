"""Reverse diffusion along a class hierarchy, with shared prefixes (docs/concepts.md: "Branches").

Going from t = 1 down to 0, a class follows the branches root -> ... -> its leaf. States of a
branch serve every class below it: each branch segment is integrated once, and its children
start from the parent's final states (the first n_child rows). The flat (class-conditional)
model has one branch whose dynamics differ by class; its rows carry their class instead.

Random numbers come from :class:`NoiseStreams`, keyed by (seed, chunk, branch key, step) where
the branch key is the first class of the branch in hierarchy order. Classes added later (continual learning) come last in
that order, so adding a class leaves the random numbers, and thus the samples, of the old
classes unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ..hierarchy import Hierarchy
from ._noise import NoiseStreams
from ._samplers import (
    EpsFn,
    Memory,
    ancestral,
    denoise,
    dpm_solver_2m,
    euler_maruyama,
    probability_flow_heun,
    time_grid,
)
from ._sde import VPSDE
from ._transport import noised_gaussian_map

# eps_model(x, t, branch, cell_type) -> predicted noise; t is 0-d: one time for every row
EpsModel = Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor | None], torch.Tensor]

SAMPLERS = ("sde", "ode", "ancestral", "dpm++")
# the time grid each sampler steps on
GRID_SPACING = {"sde": "linear", "ode": "linear", "ancestral": "edm", "dpm++": "edm"}


@dataclass(frozen=True)
class BranchState:
    """States stopped inside a branch: `x` at time `t`, held by `branch` (and `memory`, what a
    multistep sampler needs to continue them).

    Returned by :meth:`TreeSampler.descend_to`.

    Examples
    --------
    >>> import torch
    >>> from scbranchdiff.diffusion import BranchState
    >>> state = BranchState(torch.zeros(4, 2), branch=0, t=0.5)
    >>> state.x.shape, state.t
    (torch.Size([4, 2]), 0.5)
    """

    x: torch.Tensor
    branch: int
    t: float
    memory: Memory | None = None  # a multistep sampler's last x0_hat and step, for the same rows


@dataclass
class TreeSampler:
    """Integrates the reverse process of a branched (or flat) score model over a hierarchy.

    Parameters
    ----------
    eps_model
        Noise prediction of the network, called once per step of a segment.
    hierarchy
        The branches.
    sde
        The forward SDE used in training.
    n_steps
        Number of steps of a full path from t = 1 to `sde.t_min`.
    method
        "sde" (Euler-Maruyama on the reverse SDE), "ode" (Heun on the probability-flow ODE),
        "ancestral" (the Gaussian posterior at each step, on an EDM time grid) or "dpm++"
        (stochastic DPM-Solver++(2M): ancestral with a second-order estimate of x_0, same grid).
    seed
        Seed of every random number drawn.
    class_conditional
        Whether the network takes the class as input (the flat model); then rows are not
        shared between classes.
    n_latent
        Dimension of the states.
    device, dtype
        Where the states live.
    progress
        Called with the number of cells each time a leaf's cells are finished (e.g. a
        progress bar's ``update``).

    Examples
    --------
    With ``model`` a trained :class:`~scbranchdiff.model.BranchedDiffusion` on pbmc68k (see
    its example):

    >>> tree = model._sampler("ode", n_steps=50, seed=0)  # the model builds its TreeSampler
    >>> latents = tree.generate({0: 10, 1: 5})  # class index -> cells
    >>> latents[0].shape[0], latents[1].shape[0]
    (10, 5)
    """

    eps_model: EpsModel
    hierarchy: Hierarchy
    sde: VPSDE
    n_steps: int
    method: str
    seed: int
    class_conditional: bool
    n_latent: int
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    progress: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        if self.method not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {SAMPLERS}, got {self.method!r}.")
        self.grid = np.asarray(time_grid(self.n_steps, self.sde, spacing=GRID_SPACING[self.method]))
        self.noise = NoiseStreams(self.seed, self.n_latent, self.device, self.dtype)

    # --- random numbers -------------------------------------------------------------------
    def _key(self, branch: int) -> int:
        return int(self.hierarchy.class_index(self.hierarchy.branches[branch].classes).min())

    def prior(self, counts: Mapping[int, int], chunk: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x_1 ~ N(0, I) for the root: one row set shared by all classes, or one per class."""
        if self.class_conditional:
            classes = sorted(c for c, n in counts.items() if n > 0)
            x = self.noise.normal([(c, counts[c]) for c in classes], -1, chunk)
            labels = torch.cat([torch.full((counts[c],), c, dtype=torch.long) for c in classes])
            return x, labels.to(self.device)
        n = max(counts.values())
        return self.noise.normal([(0, n)], -1, chunk), None

    # --- one segment ----------------------------------------------------------------------
    def _segment_times(self, branch: int, t_from: float) -> tuple[list[float], int]:
        """Times of the steps taken in `branch` from `t_from`, and the index of the first step.

        Every step starts at a time the branch holds; the last one ends at the first grid point
        below the branch (the children's start) or at t_min for a leaf.
        """
        b = self.hierarchy.branches[branch]
        if t_from < b.t_start - 1e-12:
            # the states are already below this branch (it is shorter than a grid step): a
            # step belongs to the branch holding its start time, so this one takes none
            return [t_from], len(self.grid) - 1
        below = np.nonzero(self.grid < t_from - 1e-12)[0]
        if len(below) == 0:
            return [t_from], len(self.grid) - 1
        first = int(below[0])
        times = [t_from]
        for i in range(first, len(self.grid)):
            times.append(float(self.grid[i]))
            if self.grid[i] < b.t_start:
                break
        return times, first - 1

    def _run(
        self,
        branch: int,
        x: torch.Tensor,
        labels: torch.Tensor | None,
        times: list[float],
        first_step: int,
        chunk: int,
        memory: Memory | None = None,
    ) -> tuple[torch.Tensor, Memory | None]:
        """Steps `times` in `branch`; returns the states and the multistep memory ("dpm++")."""
        if len(times) < 2:
            return x, memory
        eps_fn = self._eps_fn(branch, labels)
        if self.method == "ode":
            return probability_flow_heun(eps_fn, x, times, self.sde), None
        if labels is None:
            chunks = [(self._key(branch), x.shape[0])]
        else:
            values, n = torch.unique_consecutive(labels.cpu(), return_counts=True)
            chunks = list(zip(values.tolist(), n.tolist(), strict=True))
        noise_fn = lambda step: self.noise.normal(chunks, step, chunk)  # noqa: E731
        if self.method == "dpm++":
            return dpm_solver_2m(eps_fn, x, times, self.sde, noise_fn, first_step=first_step, memory=memory)
        step_fn = ancestral if self.method == "ancestral" else euler_maruyama
        return step_fn(eps_fn, x, times, self.sde, noise_fn, first_step=first_step), None

    def _finish(self, branch: int, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return denoise(self._eps_fn(branch, labels), x, self.sde.t_min, self.sde)

    def _eps_fn(self, branch: int, labels: torch.Tensor | None) -> EpsFn:
        """The network's noise prediction with one branch's head, as a function of (x, t)."""

        def eps_fn(x: torch.Tensor, t: float) -> torch.Tensor:
            # one 0-d time for all rows: the network embeds it once (not once per row)
            return self.eps_model(x, torch.tensor(t, dtype=x.dtype, device=x.device), branch, labels)

        return eps_fn

    # --- the tree -------------------------------------------------------------------------
    @torch.no_grad()
    def descend(
        self,
        branch: int,
        x: torch.Tensor,
        t_from: float,
        counts: Mapping[int, int],
        *,
        labels: torch.Tensor | None = None,
        chunk: int = 0,
        memory: Memory | None = None,
    ) -> dict[int, torch.Tensor]:
        """Integrate states `x` (at time `t_from`, held by `branch`) down to the leaves.

        Parameters
        ----------
        branch
            The branch that holds the states at `t_from`.
        x
            States at `t_from`.
        t_from
            Their time.
        counts
            Rows wanted per class index; only branches leading to these classes are visited.
        labels
            Class of each row (class-conditional network only).
        chunk
            Stream id of these states (a chunk of a streamed generation, or a group of a
            transmutation): changes the random numbers.
        memory
            The multistep sampler's memory for these rows (:attr:`BranchState.memory`), to
            continue states stopped by :meth:`descend_to` exactly as :meth:`generate` would.

        Returns
        -------
        Latent samples per class index (denoised at t_min).
        """
        times, first = self._segment_times(branch, t_from)
        x, memory = self._run(branch, x, labels, times, first, chunk, memory)
        children = self._children_towards(branch, counts)
        if not children:
            x = self._finish(branch, x, labels)
            if self.progress is not None:
                self.progress(sum(counts[k] for k in self._wanted(branch, counts)))
            if labels is None:
                return {int(k): x[: counts[k]] for k in self._wanted(branch, counts)}
            return {int(k): x[labels == k] for k in self._wanted(branch, counts)}
        out: dict[int, torch.Tensor] = {}
        for child in children:
            wanted = self._wanted(child, counts)
            n = max(counts[k] for k in wanted)
            out.update(self.descend(
                child, x[:n], times[-1], {k: counts[k] for k in wanted}, chunk=chunk, memory=_rows(memory, n)
            ))
        return out

    @torch.no_grad()
    def descend_to(
        self,
        t_stop: float,
        x: torch.Tensor,
        counts: Mapping[int, int],
        *,
        branch: int | None = None,
        t_from: float = 1.0,
        chunk: int = 0,
        memory: Memory | None = None,
    ) -> BranchState:
        """Integrate states down to the first grid time at or below `t_stop` (intermediates).

        Parameters
        ----------
        t_stop
            Where to stop; it must lie above the lowest split of the classes in `counts`.
        x
            States at `t_from`, held by `branch` (default: the root at t = 1).
        counts
            Rows wanted per class index: the stop must lie on the one path they share.
        branch, t_from, chunk, memory
            As in :meth:`descend`.

        Returns
        -------
        The states there, the branch that holds them and their time.
        """
        branch = self.hierarchy.root if branch is None else branch
        times, first = self._segment_times(branch, t_from)
        keep = [t for t in times if t >= t_stop - 1e-12]
        if len(keep) < len(times):
            stop_times = keep + [times[len(keep)]]
            x, memory = self._run(branch, x, None, stop_times, first, chunk, memory)
            return BranchState(x, branch, stop_times[-1], memory)
        x, memory = self._run(branch, x, None, times, first, chunk, memory)
        children = self._children_towards(branch, counts)
        if len(children) != 1:
            raise ValueError("`t_stop` must lie above the lowest split of the requested types.")
        n = max(counts[k] for k in self._wanted(children[0], counts))
        return self.descend_to(
            t_stop, x[:n], counts, branch=children[0], t_from=times[-1], chunk=chunk, memory=_rows(memory, n)
        )

    def _children_towards(self, branch: int, counts: Mapping[int, int]) -> list[int]:
        """Children of `branch` that lead to a class with rows wanted."""
        return [c for c in self.hierarchy.children(branch) if self._wanted(c, counts)]

    def _wanted(self, branch: int, counts: Mapping[int, int]) -> list[int]:
        idx = self.hierarchy.class_index(self.hierarchy.branches[branch].classes)
        return [int(k) for k in idx if counts.get(int(k), 0) > 0]

    def generate(self, counts: Mapping[int, int], chunk: int = 0) -> dict[int, torch.Tensor]:
        """Sample `counts[k]` latents of each class index k from the prior at t = 1."""
        x, labels = self.prior(counts, chunk)
        return self.descend(self.hierarchy.root, x, 1.0, counts, labels=labels, chunk=chunk)

    @torch.no_grad()
    def transmute(
        self,
        x0: torch.Tensor,
        source: int,
        target: int,
        t_split: float,
        chunk: int = 0,
        moments: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> torch.Tensor:
        """States of class `source` taken up to `t_split`, then down the path of class `target`.

        Up: the probability-flow ODE along the source's path ("ode", deterministic) or the
        forward kernel x_t = a(t) x_0 + s(t) z ("sde"). With `moments` (mean and covariance of
        the source class, then of the target class, in the latent the network sees), the states
        are then moved onto the target's noised distribution with :func:`noised_gaussian_map`.
        Down: :meth:`descend` from the branch of `target` at `t_split`. The noise stream is
        keyed by the source class and `chunk`, so groups of cells of different types draw
        independent numbers.
        """
        n = x0.shape[0]
        stream = (source + 1) * 1_000_003 + chunk
        if self.method == "ode":
            x_t = self.encode(x0, source, t_split)
        else:
            t = torch.full((n,), t_split, dtype=x0.dtype, device=x0.device)
            x_t = self.sde.marginal_sample(x0, t, self.noise.normal([(source, n)], -1, stream))
        if moments is not None:
            alpha = float(self.sde.alpha(np.float64(t_split)))
            sigma = float(self.sde.sigma(np.float64(t_split)))
            A, b = noised_gaussian_map(*moments, alpha=alpha, sigma=sigma)
            x_t = x_t @ torch.as_tensor(A.T, dtype=x_t.dtype, device=x_t.device) + torch.as_tensor(
                b, dtype=x_t.dtype, device=x_t.device
            )
        labels = None
        if self.class_conditional:
            labels = torch.full((n,), target, dtype=torch.long, device=x0.device)
        branch = int(self.hierarchy.branch_index(np.array([target]), t_split)[0])
        return self.descend(branch, x_t, t_split, {target: n}, labels=labels, chunk=stream)[target]

    @torch.no_grad()
    def denoise(self, state: BranchState) -> torch.Tensor:
        """Tweedie's estimate of x_0 from states stopped in a branch, with that branch's head."""
        return denoise(self._eps_fn(state.branch, None), state.x, state.t, self.sde)

    @torch.no_grad()
    def encode(self, x0: torch.Tensor, cell_type: int, t_to: float) -> torch.Tensor:
        """Run the probability-flow ODE up from t_min to `t_to` along the path of `cell_type`."""
        ts = np.linspace(self.sde.t_min, t_to, max(2, int(round(self.n_steps * t_to)) + 1))
        labels = None
        if self.class_conditional:
            labels = torch.full((x0.shape[0],), cell_type, dtype=torch.long, device=x0.device)
        branch_of = self.hierarchy.branch_index(np.full(len(ts), cell_type), ts)
        x = x0
        start = 0
        for i in range(1, len(ts)):
            if i == len(ts) - 1 or branch_of[i] != branch_of[start]:
                seg = [float(t) for t in ts[start : i + 1]]
                eps_fn = self._eps_fn(int(branch_of[start]), labels)
                x = probability_flow_heun(eps_fn, x, seg, self.sde)
                start = i
        return x


def _rows(memory: Memory | None, n: int) -> Memory | None:
    """The memory of the first `n` rows (the rows a child branch continues)."""
    return None if memory is None else (memory[0][:n], memory[1])
