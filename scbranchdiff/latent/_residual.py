"""Residual latents: room for cell types the frozen latent model never saw.

A latent model fitted without a cell type cannot express what only that type does: its cells
encode near their nearest old relative and decode like it. `add_cell_types` therefore gives each
new type a *residual*: a few latent dimensions u of its own, with decoder weights of its own,
fitted on the new type's cells while every old weight stays frozen. A cell of a new type is the
diffusion's latent z (in the frozen latent, like every other type) plus a residual code u drawn
from the distribution of the type's encoded codes; it is decoded by the frozen decoder corrected
by the type's residual. Old types never pass through a residual: they are decoded by the old
code path with the old weights, so their cells cannot change.

- PCA (`PCAResidual`): the type's mean offset in the space the frozen components leave, plus
  (with codes) the principal components of what remains there, codes drawn from
  N(0, diag(variance of each component)).
- scVI, offset (`CountOffset`, the default of `add_cell_types`): no codes. Given the frozen
  decoder's output for z, per-gene offsets are added to the log expression frequencies
  (renormalised to sum to one again) and to the zero-inflation logits (ZINB), and the inverse
  dispersion is multiplied by exp(per-gene offset); fitted by maximum likelihood on the new
  cells (the frozen scVI supplies z and the library size). The type's variety comes from z.
- scVI, codes (`CountResidual`): a small VAE stacked on the frozen scVI decoder: the offsets
  become functions r(u) of codes u. Its encoder q(u | counts) trains with the ELBO on the new
  cells only and is dropped afterwards: codes are drawn from the Gaussian with the mean and
  covariance of the aggregate posterior. Measured: codes drawn independently of z make the
  type's cells easier to tell from real cells than the offset alone (docs: benchmarks).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

# Residual decoders learn with Adam (3x scVI's learning rate: measured better for types of ~30
# cells at the same 500 steps), on batches of this size.
RESIDUAL_LR = 3e-3
RESIDUAL_BATCH_SIZE = 128
# Optimiser steps of one residual: 100 passes over the type's cells, within these bounds.
RESIDUAL_EPOCHS = 100
RESIDUAL_STEPS = (500, 2000)
# Width of the hidden layer of a count residual's decoder and encoder.
RESIDUAL_HIDDEN = 128


class PCAResidual:
    """Principal components of a new type's cells beyond a frozen PCA.

    Parameters
    ----------
    offset
        The type's mean in the space the frozen components leave (genes).
    components
        Orthonormal residual directions (n_dims x genes), orthogonal to the frozen components.
    std
        Standard deviation of the type's cells along each residual direction.

    Examples
    --------
    >>> import numpy as np
    >>> from scbranchdiff.latent import PCAResidual
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(50, 6)) + [0, 0, 0, 0, 0, 3]  # a new type, off in gene 6
    >>> frozen = np.eye(6)[:2]  # a PCA that only knows genes 1 and 2
    >>> z = x @ frozen.T
    >>> residual = PCAResidual.fit(x, z, np.zeros(6), frozen, n_dims=3, seed=0)
    >>> round(float(residual.offset[5])), residual.components.shape  # the offset is found
    (3, (3, 6))
    """

    def __init__(self, offset: np.ndarray, components: np.ndarray, std: np.ndarray) -> None:
        self.offset = np.asarray(offset, dtype=np.float32)
        self.components = np.asarray(components, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    @property
    def n_dims(self) -> int:
        """Number of residual dimensions."""
        return int(self.components.shape[0])

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        z: np.ndarray,
        mean: np.ndarray,
        components: np.ndarray,
        *,
        n_dims: int,
        seed: int = 0,
    ) -> PCAResidual:
        """Fit the residual of one type from its cells `x` and their frozen PCA coordinates `z`.

        Parameters
        ----------
        x
            Expression of the type's cells (cells x genes, dense).
        z
            Their coordinates in the frozen PCA (``(x - mean) @ components.T``).
        mean, components
            The frozen PCA.
        n_dims
            Residual dimensions wanted; fewer when the cells or genes do not allow them.
        seed
            Seed of the randomised SVD.

        Returns
        -------
        The fitted residual.
        """
        from sklearn.decomposition import PCA

        rest = x - mean - z @ components
        n_dims = int(min(n_dims, len(x) - 1, x.shape[1] - components.shape[0]))
        if n_dims < 1:
            return cls(rest.mean(0), np.zeros((0, x.shape[1])), np.zeros(0))
        pca = PCA(n_components=n_dims, random_state=seed).fit(rest)
        return cls(pca.mean_, pca.components_, np.sqrt(pca.explained_variance_))

    def decode(self, decoded: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`decoded` (the frozen PCA's decoding of the type's latents) plus drawn residuals."""
        codes = rng.standard_normal((len(decoded), self.n_dims)).astype(np.float32) * self.std
        return decoded + self.offset + codes @ self.components

    def tensors(self) -> dict[str, np.ndarray]:
        """The residual's arrays, by name (restored by ``PCAResidual(**tensors)``)."""
        return {"offset": self.offset, "components": self.components, "std": self.std}


def _corrected(px: Any, log_frequency_shift: torch.Tensor, zi_shift: torch.Tensor | None,
               log_theta: torch.Tensor) -> Any:
    """The frozen decoder's distribution `px` with shifted log frequencies, zero-inflation logits
    and inverse dispersion; the same scvi-tools class as `px` (NB, ZINB or Poisson)."""
    from scvi.distributions import NegativeBinomial, Poisson, ZeroInflatedNegativeBinomial

    kind = _likelihood(px)
    scale = px.scale
    frequencies = torch.softmax(torch.log(scale.clamp_min(1e-30)) + log_frequency_shift, dim=-1)
    mean = px.rate if kind == "poisson" else px.mu
    # the frozen decoder's size factor, kept: mean = size * frequencies
    size = mean.sum(-1, keepdim=True) / scale.sum(-1, keepdim=True)
    mu = size * frequencies
    if kind == "poisson":
        return Poisson(rate=mu, scale=frequencies, validate_args=False)
    theta = px.theta * torch.exp(log_theta)
    if kind == "zinb":
        return ZeroInflatedNegativeBinomial(
            mu=mu, theta=theta, zi_logits=px.zi_logits + zi_shift, scale=frequencies, validate_args=False
        )
    return NegativeBinomial(mu=mu, theta=theta, scale=frequencies, validate_args=False)


class CountOffset(nn.Module):
    """A new type's per-gene correction of a frozen scVI decoder (no codes).

    Parameters
    ----------
    n_genes
        Number of genes.
    zero_inflated
        Whether the frozen decoder is zero-inflated (ZINB): then the zero-inflation logits get an
        offset too.

    Notes
    -----
    Offsets start at zero, so an unfitted offset decodes exactly like the frozen decoder. The
    type's cells vary through their latents z only, like the cells of every old type.

    Examples
    --------
    >>> from scbranchdiff.latent import CountOffset
    >>> offset = CountOffset(n_genes=100, zero_inflated=True)
    >>> offset.n_dims, offset.sample_codes(3).shape
    (0, torch.Size([3, 0]))
    """

    def __init__(self, n_genes: int, zero_inflated: bool) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(n_genes))
        self.zi = nn.Parameter(torch.zeros(n_genes)) if zero_inflated else None
        self.log_theta = nn.Parameter(torch.zeros(n_genes))

    n_dims = 0

    def sample_codes(self, n: int) -> torch.Tensor:
        """No codes: an empty (n, 0) tensor."""
        return torch.zeros(n, 0, device=self.scale.device)

    def forward(self, px: Any, codes: torch.Tensor | None = None) -> Any:
        """The frozen decoder's distribution `px` corrected by the offsets (`codes` unused)."""
        return _corrected(px, self.scale, self.zi, self.log_theta)

    @classmethod
    def shapes(cls, n_genes: int, zero_inflated: bool) -> dict[str, tuple[int, ...]]:
        """Shape of every tensor of an offset, by ``state_dict`` name."""
        return {"scale": (n_genes,), "log_theta": (n_genes,), **({"zi": (n_genes,)} if zero_inflated else {})}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> CountOffset:
        """An offset rebuilt from its ``state_dict`` arrays."""
        offset = cls(len(tensors["log_theta"]), zero_inflated="zi" in tensors)
        offset.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in tensors.items()})
        offset.requires_grad_(False)
        return offset.eval()


def count_residual_from_tensors(tensors: dict[str, np.ndarray]) -> CountResidual | CountOffset:
    """A saved scVI residual: with codes (`CountResidual`) or an offset (`CountOffset`)."""
    return (CountResidual if "hidden.weight" in tensors else CountOffset).from_tensors(tensors)


class CountResidual(nn.Module):
    """A new type's correction of a frozen scVI decoder, driven by residual codes u.

    Parameters
    ----------
    n_genes
        Number of genes.
    n_dims
        Dimension of the residual codes u.
    n_hidden
        Width of the hidden layer between u and the corrections.
    zero_inflated
        Whether the frozen decoder is zero-inflated (ZINB): then u also corrects the
        zero-inflation logits.

    Notes
    -----
    The output layers start at zero, so an untrained residual decodes exactly like the frozen
    decoder. ``code_mean`` and ``code_chol`` (buffers) hold the Gaussian that codes are drawn
    from when cells of the type are generated.

    Examples
    --------
    >>> import torch
    >>> from scbranchdiff.latent import CountResidual
    >>> residual = CountResidual(n_genes=100, n_dims=4, n_hidden=16, zero_inflated=False)
    >>> residual.sample_codes(3).shape
    torch.Size([3, 4])
    """

    def __init__(self, n_genes: int, n_dims: int, n_hidden: int, zero_inflated: bool) -> None:
        super().__init__()
        self.hidden = nn.Linear(n_dims, n_hidden)
        self.scale = nn.Linear(n_hidden, n_genes)
        self.zi = nn.Linear(n_hidden, n_genes) if zero_inflated else None
        self.log_theta = nn.Parameter(torch.zeros(n_genes))
        self.register_buffer("code_mean", torch.zeros(n_dims))
        self.register_buffer("code_chol", torch.eye(n_dims))
        for layer in (self.scale, self.zi):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    @property
    def n_dims(self) -> int:
        """Dimension of the residual codes."""
        return int(self.code_mean.shape[0])

    def sample_codes(self, n: int) -> torch.Tensor:
        """`n` residual codes from the type's code distribution (torch's global generator)."""
        eps = torch.randn(n, self.n_dims, device=self.code_mean.device)
        return self.code_mean + eps @ self.code_chol.T

    def forward(self, px: Any, codes: torch.Tensor) -> Any:
        """The frozen decoder's distribution `px` corrected by the residual at `codes`.

        Returns a distribution of the same scvi-tools class as `px` (NB, ZINB or Poisson).
        """
        h = torch.relu(self.hidden(codes))
        return _corrected(px, self.scale(h), None if self.zi is None else self.zi(h), self.log_theta)

    @classmethod
    def shapes(cls, n_genes: int, n_dims: int, n_hidden: int, zero_inflated: bool) -> dict[str, tuple[int, ...]]:
        """Shape of every tensor of a residual of these sizes, by ``state_dict`` name."""
        shapes = {
            "hidden.weight": (n_hidden, n_dims), "hidden.bias": (n_hidden,),
            "scale.weight": (n_genes, n_hidden), "scale.bias": (n_genes,),
            "log_theta": (n_genes,), "code_mean": (n_dims,), "code_chol": (n_dims, n_dims),
        }
        if zero_inflated:
            shapes.update({"zi.weight": (n_genes, n_hidden), "zi.bias": (n_genes,)})
        return shapes

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> CountResidual:
        """A residual rebuilt from its ``state_dict`` arrays (sizes read from their shapes)."""
        n_hidden, n_dims = np.shape(tensors["hidden.weight"])
        n_genes = len(tensors["log_theta"])
        residual = cls(n_genes, n_dims, n_hidden, zero_inflated="zi.weight" in tensors)
        residual.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in tensors.items()})
        residual.requires_grad_(False)
        return residual.eval()


class _CodeEncoder(nn.Module):
    """q(u | counts) of a count residual: used while fitting only."""

    def __init__(self, n_genes: int, n_dims: int, n_hidden: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(n_genes, n_hidden), nn.ReLU())
        self.mean = nn.Linear(n_hidden, n_dims)
        self.log_var = nn.Linear(n_hidden, n_dims)

    def forward(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(torch.log1p(counts))
        return self.mean(h), self.log_var(h).clamp(-12.0, 6.0)


def residual_steps(n_cells: int, batch_size: int = RESIDUAL_BATCH_SIZE) -> int:
    """Optimiser steps of a count residual for a type with `n_cells` training cells."""
    per_epoch = -(-n_cells // batch_size)
    return int(np.clip(RESIDUAL_EPOCHS * per_epoch, *RESIDUAL_STEPS))


def fit_count_residual(
    module: Any,
    counts: Any,
    log_library: np.ndarray,
    batch: np.ndarray,
    z: np.ndarray,
    *,
    n_dims: int,
    seed: int = 0,
    n_hidden: int = RESIDUAL_HIDDEN,
    n_steps: int | None = None,
) -> CountResidual | CountOffset:
    """Fit the residual of one new type on top of a frozen scVI module.

    Parameters
    ----------
    module
        The trained `scvi.module.VAE` (left frozen: its parameters are not touched).
    counts
        Counts of the type's cells (cells x genes, dense or scipy sparse).
    log_library, batch
        Their log library sizes and batch codes.
    z
        Their scVI latents (posterior means, what the diffusion learns and generates).
    n_dims
        Dimension of the residual codes; 0: a `CountOffset` (no codes), fitted by maximum
        likelihood, else a `CountResidual`, fitted with the ELBO.
    seed
        Seed of the initialisation, the batches and the reparametrisation noise.
    n_hidden
        Hidden width of the residual's encoder and decoder (codes only).
    n_steps
        Optimiser steps (default: `residual_steps`).

    Returns
    -------
    The residual, frozen, in eval mode (with codes: with the code distribution set).
    """
    device = next(module.parameters()).device
    n_genes = int(counts.shape[1])
    zero_inflated = getattr(module, "gene_likelihood", "zinb") == "zinb"
    n_steps = residual_steps(len(z)) if n_steps is None else int(n_steps)
    was_training = module.training
    module.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        if n_dims == 0:
            residual, encoder = CountOffset(n_genes, zero_inflated).to(device), None
        else:
            residual = CountResidual(n_genes, n_dims, n_hidden, zero_inflated).to(device)
            encoder = _CodeEncoder(n_genes, n_dims, n_hidden).to(device)
        parameters = [*residual.parameters(), *(encoder.parameters() if encoder is not None else [])]
        optimiser = torch.optim.Adam(parameters, lr=RESIDUAL_LR, weight_decay=1e-6, foreach=True)
        order = np.random.default_rng(seed)
        batch_size = min(RESIDUAL_BATCH_SIZE, len(z))
        frozen = _FrozenOutputs(module, counts, log_library, batch, z, device)
        for _ in range(n_steps):
            rows = np.sort(order.choice(len(z), size=batch_size, replace=False))
            x, px = frozen.rows(rows)
            if encoder is None:
                loss = -residual(px).log_prob(x).sum(-1).mean()
            else:
                mean, log_var = encoder(x)
                codes = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
                nll = -residual(px, codes).log_prob(x).sum(-1)
                kl = 0.5 * (mean**2 + torch.exp(log_var) - log_var - 1.0).sum(-1)
                loss = (nll + kl).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        if encoder is not None:
            _set_code_distribution(residual, encoder, counts, device)
    module.train(was_training)
    residual.requires_grad_(False)
    return residual.eval()


@torch.no_grad()
def _set_code_distribution(residual: CountResidual, encoder: _CodeEncoder, counts: Any, device: torch.device) -> None:
    """The aggregate posterior's moments: what codes of the type look like."""
    means, variances = [], []
    for start in range(0, counts.shape[0], 4096):
        x = _dense_rows(counts, np.arange(start, min(start + 4096, counts.shape[0])), device)
        m, lv = encoder(x)
        means.append(m)
        variances.append(torch.exp(lv))
    m, v = torch.cat(means).double(), torch.cat(variances).double()
    centred = m - m.mean(0)
    cov = centred.T @ centred / len(m) + torch.diag(v.mean(0))
    cov += 1e-6 * torch.eye(residual.n_dims, dtype=cov.dtype, device=device)
    residual.code_mean.copy_(m.mean(0).float())
    residual.code_chol.copy_(torch.linalg.cholesky(cov).float())


def _dense_rows(counts: Any, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    x = counts[rows]
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    return torch.as_tensor(x, dtype=torch.float32, device=device)


def _likelihood(px: Any) -> str:
    """"zinb", "nb" or "poisson": the count likelihood of an scvi-tools distribution."""
    from scvi.distributions import NegativeBinomial, Poisson, ZeroInflatedNegativeBinomial

    kind = getattr(px, "kind", None)
    if kind is not None:
        return kind
    for cls, name in ((ZeroInflatedNegativeBinomial, "zinb"), (NegativeBinomial, "nb"), (Poisson, "poisson")):
        if isinstance(px, cls):
            return name
    raise TypeError(f"No residual for scVI's {type(px).__name__} likelihood.")


class _FrozenOutputs:
    """Counts and the frozen decoder's outputs for rows of the training cells (no gradient).

    Computed once for all cells when they fit in ``_CACHE_VALUES`` numbers per array (the
    frozen decoder then runs once, not at every step), else for each batch.
    """

    _CACHE_VALUES = 2**24

    def __init__(self, module: Any, counts: Any, log_library: np.ndarray, batch: np.ndarray, z: np.ndarray,
                 device: torch.device) -> None:
        self.module, self.counts, self.device = module, counts, device
        self.log_library, self.batch, self.z = log_library, batch, z
        self.cache = None
        if len(z) * counts.shape[1] <= self._CACHE_VALUES:
            self.cache = self._compute(np.arange(len(z)))

    @torch.no_grad()
    def _compute(self, rows: np.ndarray) -> dict[str, Any]:
        device = self.device
        px = self.module.generative(
            torch.as_tensor(self.z[rows], dtype=torch.float32, device=device),
            torch.as_tensor(self.log_library[rows, None], dtype=torch.float32, device=device),
            torch.as_tensor(self.batch[rows, None], dtype=torch.int64, device=device),
        )["px"]
        kind = _likelihood(px)
        out = {"x": _dense_rows(self.counts, rows, device), "kind": kind, "scale": px.scale}
        if kind == "poisson":
            out["rate"] = px.rate
        else:
            out["mu"] = px.mu
            out["theta"] = torch.broadcast_to(px.theta, px.mu.shape)
            if kind == "zinb":
                out["zi_logits"] = px.zi_logits
        return out

    def rows(self, rows: np.ndarray) -> tuple[torch.Tensor, Any]:
        """(counts, frozen outputs) of `rows`; the outputs have the attributes of the distribution."""
        from types import SimpleNamespace

        if self.cache is None:
            values = self._compute(rows)
        else:
            index = torch.as_tensor(rows, device=self.device)
            values = {k: (v if k == "kind" else v[index]) for k, v in self.cache.items()}
        return values.pop("x"), SimpleNamespace(**values)
