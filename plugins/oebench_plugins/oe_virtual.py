"""Virtual outliers synthesised in feature space during training: VOS and NPOS.

Neither needs auxiliary outliers: both queue ID penultimate features per class, synthesise
outliers once every queue is full and the epoch is past ``start``, and add ``loss_weight``
times a binary ID-vs-virtual loss to CE. Draws come from a generator seeded from the
training generator's seed and the step: the training's own stream is not shifted.
"""

from __future__ import annotations

from typing import Any

import oebench.api as oebench
from oebench.api import Objective, UserError, cross_entropy

#: elements of the largest random/distance buffer built at once (class chunks)
_BUDGET = 2**24


def _check(name: str, ok: bool, what: str) -> None:
    if not ok:
        raise UserError(f"{name}: {what}")


class ClassQueues:
    """Per-class queues of ``size`` detached features, updated on the device with no host
    sync, as the VOS/NPOS code: each class fills to ``size`` (extras dropped) until ALL are
    full, then keeps its latest ``size`` (a ring: the authors' contents, another order)."""

    def __init__(self, classes: int, size: int, dim: int, device: Any):
        import torch

        # slot ``size`` of each class is a dump for dropped samples, never read
        self.data = torch.zeros(classes, size + 1, dim, device=device)
        self.count = torch.zeros(classes, dtype=torch.long, device=device)
        self.ptr = torch.zeros(classes, dtype=torch.long, device=device)
        self.size = size

    def full(self) -> Any:
        """A 0-dim device bool: every queue full."""
        return (self.count >= self.size).all()

    def items(self) -> Any:
        """The queues, ``(classes, size, dim)``."""
        return self.data[:, : self.size]

    def push(self, features: Any, targets: Any) -> None:
        import torch
        import torch.nn.functional as F

        s = self.size
        csum = F.one_hot(targets, len(self.count)).cumsum(0)
        rank = csum.gather(1, targets[:, None]).squeeze(1) - 1  # order within its class
        n = csum[-1]
        full = self.full()
        fill = self.count[targets] + rank
        keep = torch.where(full, rank >= n[targets] - s, fill < s)
        pos = torch.where(full, (self.ptr[targets] + rank) % s, fill)
        pos = torch.where(keep, pos, torch.full_like(pos, s))
        self.data.index_put_((targets, pos), features.detach().to(self.data.dtype))
        self.count = torch.where(full, self.count, (self.count + n).clamp(max=s))
        self.ptr = torch.where(full, (self.ptr + n) % s, self.ptr)

    def state(self) -> dict[str, Any]:
        return {k: getattr(self, k).cpu().clone() for k in ("data", "count", "ptr")}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ClassQueues:
        q = cls.__new__(cls)
        q.data, q.count, q.ptr = state["data"], state["count"], state["ptr"]
        q.size = q.data.shape[1] - 1
        return q

    def to(self, device: Any) -> ClassQueues:
        self.data, self.count, self.ptr = (t.to(device) for t in (self.data, self.count, self.ptr))
        return self


class _Synthesis(Objective):
    """What VOS and NPOS share: the queues, the start rule, the seeded draws, the state."""

    uses_features = True

    def _setup(self, loss_weight: float, start: float, sample_number: int) -> None:
        _check(self.name, loss_weight >= 0, f"loss_weight must be >= 0, got {loss_weight}")
        _check(self.name, 0 <= start <= 1, f"start must be in [0, 1], got {start}")
        _check(self.name, sample_number >= 1, f"sample_number must be >= 1, got {sample_number}")
        self.loss_weight, self.start, self.sample_number = loss_weight, start, sample_number
        self._queues: ClassQueues | None = None
        self._full = False  # every queue known full (host side)
        self._fresh = True  # own parameters not yet drawn

    def _ready(self, step: Any) -> bool:
        """Push the batch's features; True when the synthesis runs this step (the queues
        were full BEFORE this batch and the epoch is past ``start``, as the authors')."""
        f, y, c, q = step.features_in.detach(), step.targets, step.logits_in.shape[1], self._queues
        self._queues = (q or ClassQueues(c, self.sample_number, f.shape[1], f.device)).to(f.device)
        if self._fresh:
            _reset_linears(step.extra, _generator(step, "cpu", -1))
            self._fresh = False
        active = step.epoch >= round(self.start * step.epochs)
        if active and not self._full:
            self._full = bool(self._queues.full())  # a host sync only until they fill
        self._queues.push(f, y)
        return active and self._full

    def state(self) -> dict[str, Any]:
        queues = None if self._queues is None else self._queues.state()
        return {"queues": queues, "fresh": self._fresh}

    def load_state(self, state: dict[str, Any]) -> None:
        q = state["queues"]
        self._queues = None if q is None else ClassQueues.from_state(q)
        self._full, self._fresh = False, state["fresh"]


def _generator(step: Any, device: Any, salt: int = 0) -> Any:
    """A generator on ``device`` seeded from the training generator's seed and the step."""
    import torch

    base = 0 if step.generator is None else int(step.generator.initial_seed())
    seed = (base * 1_000_003 + step.step * 7919 + salt) % 2**63
    return torch.Generator(device=device).manual_seed(seed)


def _reset_linears(module: Any, generator: Any) -> None:
    """``nn.Linear``'s default init, U(+-1/sqrt(fan_in)) for weight and bias, from ``generator``."""
    import torch

    if module is None:
        return
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.Linear):
                bound = layer.in_features**-0.5
                for p in (layer.weight, layer.bias):
                    p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=generator))


def _chunks(total: int, per_item: int) -> list[slice]:
    """Slices of ``range(total)`` whose buffers of ``per_item`` elements each fit _BUDGET."""
    size = max(1, _BUDGET // max(1, per_item))
    return [slice(i, min(total, i + size)) for i in range(0, total, size)]


# -- VOS ---------------------------------------------------------------------------------------
def shared_gaussian(queues: Any, eps: float = 1e-4) -> tuple[Any, Any]:
    """Class means ``(C, d)`` and the Cholesky factor of the shared covariance of the
    class-centred queues plus ``eps * I`` (VOS; float64 for the factorisation)."""
    import torch

    means = queues.mean(1)
    x = (queues - means[:, None]).reshape(-1, queues.shape[-1]).double()
    cov = x.T @ x / len(x) + eps * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return means, torch.linalg.cholesky(cov).to(queues.dtype)


def least_likely(means: Any, chol: Any, z: Any, select: int) -> Any:
    """Of the candidates ``means[c] + chol @ z[c, j]`` (``z``: ``(C, n, d)`` standard
    normal), the ``select`` per class with the lowest Gaussian log-likelihood, ``(C*select,
    d)``: with one shared covariance that is the largest ``||z||``, since
    ``log N(mu + L z; mu, L L^T) = const - ||z||^2 / 2`` with the same const for all."""
    idx = z.pow(2).sum(-1).topk(select, dim=1).indices
    zs = z.gather(1, idx[..., None].expand(-1, -1, z.shape[-1]))
    return (means[:, None] + zs @ chol.T).reshape(-1, z.shape[-1])


def weighted_logsumexp(logits: Any, weight: Any) -> Any:
    """VOS's ``log sum_k relu(w_k) exp(z_k)`` (its negative energy), computed stably."""
    import torch
    import torch.nn.functional as F

    m = logits.max(dim=1, keepdim=True).values
    return m.squeeze(1) + torch.log((F.relu(weight) * torch.exp(logits - m)).sum(1))


def vos_uncertainty(logits_in: Any, logits_virtual: Any, extra: Any) -> Any:
    """Cross-entropy of the logistic layer ``extra.logistic`` separating the weighted
    energies of the ID logits (label 1) from those of the virtual outliers (label 0)."""
    import torch
    import torch.nn.functional as F

    w = extra["weight_energy"].weight
    e = torch.cat([weighted_logsumexp(logits_in, w), weighted_logsumexp(logits_virtual, w)])
    labels = torch.ones(len(e), dtype=torch.long, device=e.device)
    labels[len(logits_in) :] = 0
    return F.cross_entropy(extra["logistic"](e[:, None]), labels)


class VOS(_Synthesis):
    """VOS (Du et al., ICLR 2022): ``CE + loss_weight * CE_logistic(E_w(x_in) -> 1,
    E_w(v) -> 0)`` with virtual outliers ``v`` drawn from class-conditional Gaussians
    (shared covariance + 1e-4 I) fitted on per-class queues of ID penultimate features;
    of ``sample_from`` draws per class the ``select`` least likely are kept and pushed
    through the model's head. ``E_w`` is the weighted log-sum-exp with learned
    ``relu(weight_energy)`` (``Linear(classes, 1)``, weights U(0, 1)) and the logistic
    layer is ``Linear(1, 2)``, both in ``attach``.

    Defaults: the paper's loss_weight 0.1, select 1, sample_from 10000 and start 0.4 (40 of
    100 epochs; here the epoch ``round(start * epochs)``: the second of a 2-epoch
    fine-tune). Changed: ``sample_number`` 200 (paper 1000 per class): MNIST-5k's training
    split has 400 per class, so 1000 would never fill; 200 fill within the first epoch and
    give 2000 samples for the covariance of small-cnn's 64 features.

    Compared with the authors' ``train_virtual.py``: the same queue rule (fill, then roll;
    the batch pushed before fitting), covariance, selection (``topk(-log_prob)``; here the
    equivalent largest ``||z||``), weighted energy, labels and loss. Differs: the head is
    ``model.forward_head`` (theirs ``net.fc``), the covariance is factorised in float64,
    draws and initial values come from generators seeded from the training's seed.
    """

    name = "vos"

    def __init__(
        self,
        loss_weight: float = 0.1,
        start: float = 0.4,
        sample_number: int = 200,
        sample_from: int = 10000,
        select: int = 1,
        eps: float = 1e-4,
    ):
        self._setup(loss_weight, start, sample_number)
        _check("vos", 1 <= select <= sample_from, f"need 1 <= select <= sample_from ({select})")
        _check("vos", eps > 0, f"eps must be > 0, got {eps}")
        self.sample_from, self.select, self.eps = sample_from, select, eps

    def attach(self, feature_dim: int, classes: int) -> Any:
        import torch

        return torch.nn.ModuleDict(
            {"weight_energy": torch.nn.Linear(classes, 1), "logistic": torch.nn.Linear(1, 2)}
        )

    def loss(self, step: Any) -> Any:
        import torch

        ce = cross_entropy(step.logits_in, step.targets)
        fresh = self._fresh
        ready = self._ready(step)
        if fresh and step.extra is not None:  # the authors' U(0, 1) energy weights
            g = _generator(step, "cpu", -2)
            w = step.extra["weight_energy"].weight
            with torch.no_grad():
                w.copy_(torch.rand(w.shape, generator=g))
        if not ready or step.extra is None:
            return ce
        virtual = self.synthesise(step)
        logits_v = step.model.forward_head(virtual).float()
        return ce + self.loss_weight * vos_uncertainty(step.logits_in, logits_v, step.extra)

    def synthesise(self, step: Any) -> Any:
        """The virtual outliers of this step, ``(classes * select, d)``, detached."""
        import torch

        with torch.no_grad():
            queues = self._queues.items()
            means, chol = shared_gaussian(queues, self.eps)
            c, d = means.shape
            gen = _generator(step, queues.device)
            parts = []
            for part in _chunks(c, self.sample_from * d):
                n = part.stop - part.start
                z = torch.randn(n, self.sample_from, d, generator=gen, device=queues.device)
                parts.append(least_likely(means[part], chol, z, self.select))
            return torch.cat(parts)


# -- NPOS --------------------------------------------------------------------------------------
def kth_distance(queries: Any, bank: Any, k: int) -> Any:
    """Squared L2 distance of each normalised query to its ``k``-th nearest normalised bank
    row (batched over classes; faiss IndexFlatL2's ranking)."""
    import torch.nn.functional as F

    q, b = F.normalize(queries, dim=-1), F.normalize(bank, dim=-1)
    dist = (2 - 2 * q @ b.transpose(-1, -2)).clamp(min=0)
    return dist.topk(k, dim=-1, largest=False).values[..., -1]


def boundary(bank: Any, k: int, select: int) -> Any:
    """Indices ``(C, select)`` of each class's bank rows with the largest ``k``-th NN
    distance to their own class's rows (the row itself counts, as in the authors' search)."""
    return kth_distance(bank, bank, k).topk(select, dim=-1).indices


def farthest(candidates: Any, bank: Any, k: int, keep: int) -> Any:
    """Of ``candidates`` ``(C, pick, n, d)``, the ``keep`` per boundary point with the
    largest ``k``-th NN distance to the class bank ``(C, S, d)``: ``(C * pick * keep, d)``."""
    c, pick, n, d = candidates.shape
    dist = kth_distance(candidates.reshape(c, pick * n, d), bank, k).view(c, pick, n)
    idx = dist.topk(keep, dim=-1).indices
    kept = candidates.gather(2, idx[..., None].expand(-1, -1, -1, d))
    return kept.reshape(-1, d)


class NPOS(_Synthesis):
    """NPOS (Tao et al., ICLR 2023), its outlier synthesis and uncertainty loss:
    ``CE + loss_weight * BCE(mlp(f_in) -> 1, mlp(v) -> 0)``. Per class, the ``select``
    queued ID features with the largest ``k``-th NN distance (L2-normalised) are boundary
    points; ``pick`` of them (at random) each get ``sample_from`` candidates
    ``f + sigma * N(0, I)`` (one draw per step shared by all classes, as theirs), of which
    the ``keep`` with the largest ``k``-th NN distance to the class's queue are the virtual
    outliers. ``mlp`` is ``Linear(d, hidden) - ReLU - Linear(hidden, 1)`` (``attach``).

    Defaults: the CIFAR-10 script's loss_weight 0.1, sample_from 600, sigma (their
    ``cov_mat``) 0.1, pick (``pick_nums``) 2, keep (``ID_points_num``) 2, hidden
    (``feat_dim``) 128, start 0.4 (``start_epoch_KNN`` 200 of 500). Changed with the queue:
    ``sample_number`` 200 (theirs 1000; MNIST-5k has 400 per class), and ``k`` 60 and
    ``select`` 40 (theirs 300 and 200 of 1000), the same fractions of the queue.

    Differences from the authors' ``train_CIFAR10.py``/``KNN.py``: their full method trains
    a projection head with contrastive (dispersion/compactness) losses and no CE; here the
    ID loss is CE and the synthesis runs on the classifier's penultimate features (queue,
    centres and MLP inputs unnormalised as theirs; only the k-NN search normalises). Their
    MLP's lr is 0.1x the network's; here one SGD. Their ranking's ``view(length, -1)`` mixes
    the boundary points; here each keeps its own farthest candidates, as the paper says.
    Their queue is re-zeroed each epoch while the counts persist; here queues persist.
    Exact k-NN by matrix products instead of faiss (same squared-L2 ranking).
    """

    name = "npos"

    def __init__(
        self,
        loss_weight: float = 0.1,
        start: float = 0.4,
        sample_number: int = 200,
        k: int = 60,
        select: int = 40,
        pick: int = 2,
        sample_from: int = 600,
        keep: int = 2,
        sigma: float = 0.1,
        hidden: int = 128,
    ):
        self._setup(loss_weight, start, sample_number)
        _check("npos", 1 <= k <= sample_number, f"need 1 <= k <= sample_number, got {k}")
        _check(
            "npos", 1 <= select <= sample_number, f"need 1 <= select <= sample_number, got {select}"
        )
        _check("npos", 1 <= pick <= select, f"need 1 <= pick <= select, got {pick}")
        _check("npos", 1 <= keep <= sample_from, f"need 1 <= keep <= sample_from, got {keep}")
        _check("npos", sigma > 0 and hidden >= 1, "need sigma > 0 and hidden >= 1")
        self.k, self.select, self.pick, self.sample_from = k, select, pick, sample_from
        self.keep, self.sigma, self.hidden = keep, sigma, hidden

    def attach(self, feature_dim: int, classes: int) -> Any:
        from torch import nn

        return nn.Sequential(
            nn.Linear(feature_dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1)
        )

    def loss(self, step: Any) -> Any:
        import torch
        import torch.nn.functional as F

        ce = cross_entropy(step.logits_in, step.targets)
        if not self._ready(step) or step.extra is None:
            return ce
        virtual = self.synthesise(step)
        scores = step.extra(torch.cat([step.features_in, virtual])).squeeze(1)
        labels = torch.zeros_like(scores)
        labels[: len(step.features_in)] = 1
        return ce + self.loss_weight * F.binary_cross_entropy_with_logits(scores, labels)

    def synthesise(self, step: Any) -> Any:
        """The virtual outliers of this step, ``(classes * pick * keep, d)``, detached."""
        import torch

        with torch.no_grad():
            bank = self._queues.items()
            c, s, d = bank.shape
            gen = _generator(step, bank.device)
            z = self.sigma * torch.randn(self.sample_from, d, generator=gen, device=bank.device)
            picks = torch.stack(
                [torch.randperm(self.select, generator=gen, device=bank.device)[: self.pick]
                 for _ in range(c)]
            )  # fmt: skip
            parts = []
            for part in _chunks(c, max(s, self.pick * self.sample_from) * max(s, d)):
                b = bank[part]
                centres = b.gather(1, boundary(b, self.k, self.select).gather(1, picks[part])
                                   [..., None].expand(-1, -1, d))  # fmt: skip
                candidates = centres[:, :, None] + z
                parts.append(farthest(candidates, b, self.k, self.keep))
            return torch.cat(parts)


_VOS = "CE + 0.1 energy logistic loss vs class-Gaussian virtual outliers (Du et al., ICLR 2022)"
_NPOS = "CE + 0.1 BCE vs k-NN boundary virtual outliers in features (Tao et al., ICLR 2023)"


@oebench.hookimpl
def register_objectives(register):
    register("vos", VOS, description=_VOS)
    register("npos", NPOS, description=_NPOS)
