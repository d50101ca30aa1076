"""OpenOOD's OE-style trainings: MCD (classifier discrepancy) and UDG (unsupervised dual grouping).

Both train parameters of their own beside the network (``Objective.attach``): MCD a second
classifier head, UDG a cluster head. Neither is kept with the trained model, which has its
one head ``fc``: detection uses the standard detectors on it.
"""

from __future__ import annotations

from typing import Any

import oebench.api as oebench
from oebench.api import Objective, UserError, cross_entropy, uniform_cross_entropy


def entropy(logits: Any) -> Any:
    """Shannon entropy (nats) of ``softmax(z)`` per sample (row)."""
    logp = logits.log_softmax(dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def discrepancy_hinge(logits1: Any, logits2: Any, margin: float) -> Any:
    """``relu(margin - mean_x [H(p1(x)) - H(p2(x))])``: head 1 uncertain, head 2 confident."""
    return (margin - (entropy(logits1) - entropy(logits2)).mean()).clamp(min=0)


def _fresh_linear(feature_dim: int, outputs: int) -> Any:
    """A linear layer with zero weights, drawn later from the training's generator (no global
    random numbers are used)."""
    import torch

    layer = torch.nn.utils.skip_init(torch.nn.Linear, feature_dim, outputs)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
    return layer


def _init_linear(layer: Any, generator: Any) -> None:
    """``nn.Linear``'s default init, ``U(-1/sqrt(d), 1/sqrt(d))``, drawn from ``generator``."""
    import torch

    bound = layer.in_features**-0.5
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            draw = torch.rand(p.shape, generator=generator) * 2 - 1
            p.copy_((draw * bound).to(p.device))


def _check(name: str, ok: bool, what: str) -> None:
    if not ok:
        raise UserError(f"{name}: {what}")


class MCD(Objective):
    """Maximum Classifier Discrepancy (Yu & Aizawa, ICCV 2019) as OpenOOD's ``MCDTrainer``:
    ``CE(h1(x_in), y) + CE(h2(x_in), y) + lam * relu(margin - mean_out [H(p1) - H(p2)])``;
    OpenOOD's defaults lam = 1, margin = 1.2.

    ``h1`` is the model's own head, ``h2`` a second linear head on the same penultimate
    features (``attach``; drawn at the first step from the training's generator with
    ``nn.Linear``'s default init). The first ``warmup`` fraction of the epochs trains CE on
    both heads only: OpenOOD trains 90 of its 100 from-scratch epochs so
    (``start_epoch_ft: 90``), i.e. ``warmup = 0.9`` from scratch; the default 0 suits
    oebench's fine-tune from the CE baseline, which already plays that part for ``h1``.

    Compared with OpenOOD: the margin and signed entropy difference match (no ``|.|``: the
    kept head 1 is pushed to high entropy on outliers, head 2 to low). OpenOOD's
    ``entropy`` takes the softmax and the sum over dim 0 (the batch); ours is the per-sample
    entropy over the classes, as in the paper. Here outliers share the ID batch's forward
    pass (BatchNorm sees both) also during the warm-up; OpenOOD's warm-up forwards none.

    Detection: head 2 is not saved with the model; the standard detectors score head 1.
    OpenOOD's MCD postprocessor scores ``-sum_k |p1_k - p2_k|`` instead; through the Python
    API the trained head 2 stays on the objective (``objective.head``) after ``train``, so
    ``-(softmax(fc(f)) - softmax(objective.head(f))).abs().sum(1)`` on the features ``f``
    gives that score.
    """

    uses_outliers = True
    uses_features = True

    def __init__(self, lam: float = 1.0, margin: float = 1.2, warmup: float = 0.0):
        _check("mcd", lam >= 0, f"lam must be >= 0, got {lam}")
        _check("mcd", margin >= 0, f"margin must be >= 0, got {margin}")
        _check("mcd", 0 <= warmup < 1, f"warmup must be in [0, 1), got {warmup}")
        self.lam, self.margin, self.warmup = lam, margin, warmup
        self._head: Any = None
        self._fresh = True  # head 2 not yet drawn

    @property
    def head(self) -> Any:
        """The second head (after training: its trained weights)."""
        return self._head

    def attach(self, feature_dim: int, classes: int) -> Any:
        self._head = _fresh_linear(feature_dim, classes)
        return self._head

    def loss(self, step: Any) -> Any:
        import torch

        head = step.extra
        if self._fresh:
            _init_linear(head, step.generator or torch.Generator().manual_seed(0))
            self._fresh = False
        loss = cross_entropy(step.logits_in, step.targets)
        loss = loss + cross_entropy(head(step.features_in), step.targets)
        if step.epoch < round(self.warmup * step.epochs):
            return loss
        hinge = discrepancy_hinge(step.logits_out, head(step.features_out), self.margin)
        return loss + self.lam * hinge

    def state(self) -> dict[str, Any]:
        return {"fresh": self._fresh}

    def load_state(self, state: dict[str, Any]) -> None:
        self._fresh = state["fresh"]


# -- UDG's clustering -------------------------------------------------------------------------
def whitening(features: Any, dim: int, rel_eps: float = 1e-6) -> tuple[Any, Any]:
    """PCA-whitening fitted on ``features``: (mean, projection) onto at most ``dim``
    components, each scaled to unit variance; components with a variance under ``rel_eps``
    times the largest (dead units) are dropped."""
    import torch

    mean = features.mean(0)
    centred = features - mean
    values, vectors = torch.linalg.eigh(centred.T @ centred / len(features))
    values, vectors = values.flip(0).clamp(min=1e-12), vectors.flip(1)
    keep = max(1, min(dim, int((values > rel_eps * values[0]).sum())))
    return mean, vectors[:, :keep] / values[:keep].sqrt()


def embed(features: Any, mean: Any, projection: Any) -> Any:
    """Features in the clustering space: whitened, then L2-normalised."""
    import torch.nn.functional as F

    return F.normalize((features - mean) @ projection, dim=1)


def assign(x: Any, centroids: Any) -> Any:
    """Index of each row's nearest centroid (squared Euclidean distance)."""
    return ((centroids * centroids).sum(1) - 2 * x @ centroids.T).argmin(1)


def kmeans_plus_plus(x: Any, k: int, generator: Any) -> Any:
    """k-means++ seeding: ``k`` rows, each next drawn with probability ``D(x)^2``."""
    import torch

    chosen = [int(torch.randint(len(x), (1,), generator=generator))]
    nearest = ((x - x[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        weights = nearest.cpu().double()
        if weights.sum() <= 0:  # fewer distinct rows than k: any row not yet taken
            weights = torch.ones(len(x), dtype=torch.double)
            weights[chosen] = 0
        chosen.append(int(torch.multinomial(weights, 1, generator=generator)))
        nearest = torch.minimum(nearest, ((x - x[chosen[-1]]) ** 2).sum(1))
    return x[torch.tensor(chosen, device=x.device)].clone()


def kmeans(x: Any, k: int, generator: Any, iters: int = 20) -> Any:
    """Lloyd's k-means from k-means++ seeds; an empty cluster keeps its centroid."""
    import torch
    import torch.nn.functional as F

    centroids = kmeans_plus_plus(x, k, generator)
    for _ in range(iters):
        members = F.one_hot(assign(x, centroids), k).to(x.dtype)  # matmul: deterministic
        counts = members.sum(0)
        means = (members.T @ x) / counts.clamp(min=1).unsqueeze(1)
        centroids = torch.where(counts.unsqueeze(1) > 0, means, centroids)
    return centroids


def group_rules(
    ids: Any, labels: Any, k: int, classes: int, purity: tuple[float, float], enhance: float
) -> tuple[Any, Any, Any]:
    """OpenOOD's per-cluster rules on the clustered samples' labels (``-1``: an outlier):
    (pseudo label, OE weight, aux-loss weight) per cluster.

    A cluster where one label's share exceeds ``purity[0]`` gives that label to its outliers
    (``-1``: they stay outliers); otherwise its outliers stay ``-1``, with OE weight
    ``enhance`` when the outliers' share exceeds ``purity[1]``. The aux weight is
    ``size^-0.5`` normalised to mean 1 over the non-empty clusters.
    """
    import torch
    import torch.nn.functional as F

    members = F.one_hot(ids, k).float()
    counts = members.T @ F.one_hot(labels + 1, classes + 1).float()  # (k, 1 + classes)
    size = counts.sum(1)
    share = counts / size.clamp(min=1).unsqueeze(1)
    above = share > purity[0]
    pure = above.any(1)
    pseudo = torch.where(pure, above.float().argmax(1) - 1, torch.full_like(size, -1).long())
    boost = ~pure & (share[:, 0] > purity[1])
    oe_weight = torch.where(boost, torch.full_like(size, enhance), torch.ones_like(size))
    weight = size.clamp(min=1).rsqrt()
    weight = weight / weight[size > 0].mean()
    return pseudo, oe_weight, weight


class UDG(Objective):
    """Unsupervised Dual Grouping (Yang et al., ICCV 2021, "Semantically Coherent
    Out-of-Distribution Detection") as OpenOOD's ``UDGTrainer``:
    ``CE([x_in; relabelled outliers]) + lam_oe * mean_{other outliers} w H(U; p)
    + lam_aux * mean_all r_c CE(aux(f), c)``; defaults as OpenOOD's: lam_oe = 0.5,
    lam_aux = 0.1, purity thresholds 0.8 / 0.8, OE enhancement 2, PCA to 256 dims,
    20 k-means iterations.

    Clustering: the detached penultimate features (and labels: the class for ID samples, the
    pseudo label an outlier was trained with, ``-1`` for OE) of the last ``bank`` samples
    (a FIFO) are PCA-whitened, L2-normalised and grouped by k-means into ``clusters``
    (``group_rules`` gives each cluster its pseudo label, OE weight and aux weight); the
    cluster head ``aux`` (``attach``) is re-drawn ``N(0, 0.01)``, bias 0, each time, as
    OpenOOD does. Every training sample goes to its nearest centroid: ``c``. Clustering runs
    after every epoch but the last (``end_epoch``), and once as soon as the bank is first
    full; until then the loss is OE, ``CE + lam_oe * mean H(U; p_out)``. Each clustering
    draws from a generator seeded from the training's.

    Changed from OpenOOD, and why: ``clusters`` 100, not 1000 (OpenOOD clusters CIFAR's
    50k ID images with its whole OE set; a bank of 8192 features gives ~80 per cluster);
    the bank (memory bounded) replaces OpenOOD's feature pass over all the data before
    each epoch, which the training contract has no access for: its features are those of
    the training pass (augmented, BatchNorm in train mode), and samples are assigned to
    clusters by their current features, not by a per-index table; the first epoch is OE
    until the bank fills; k-means is our own Lloyd's from k-means++ seeds (faiss: random rows,
    which can leave two seeds in one group; faiss splits empty clusters, ours keep their
    centroid); PCA drops near-zero-variance components (faiss whitens them, and
    OpenOOD falls back to raw features on NaNs); the aux weights' mean skips empty clusters.
    As in OpenOOD's code, with equal thresholds the OE enhancement never applies, and all
    outliers outside ID-pure clusters (mixed clusters too) get OE.
    """

    uses_outliers = True
    uses_features = True

    def __init__(
        self,
        clusters: int = 100,
        pca_dim: int = 256,
        bank: int = 8192,
        lam_oe: float = 0.5,
        lam_aux: float = 0.1,
        purity_id: float = 0.8,
        purity_ood: float = 0.8,
        enhance: float = 2.0,
        iters: int = 20,
    ):
        _check("udg", clusters >= 2, f"clusters must be >= 2, got {clusters}")
        _check("udg", pca_dim >= 1, f"pca_dim must be >= 1, got {pca_dim}")
        _check("udg", bank >= clusters, f"bank ({bank}) must be >= clusters ({clusters})")
        _check("udg", min(lam_oe, lam_aux, enhance) >= 0, "lam_oe, lam_aux, enhance must be >= 0")
        _check("udg", 0 <= min(purity_id, purity_ood) <= max(purity_id, purity_ood) < 1,
               "purity_id and purity_ood must be in [0, 1)")  # fmt: skip
        _check("udg", iters >= 1, f"iters must be >= 1, got {iters}")
        self.clusters, self.pca_dim, self.bank, self.iters = clusters, pca_dim, bank, iters
        self.lam_oe, self.lam_aux, self.enhance = lam_oe, lam_aux, enhance
        self.purity_id, self.purity_ood = purity_id, purity_ood
        self._aux: Any = None
        self._classes = 0
        self._seed: int | None = None  # drawn from the training's generator at the first step
        self._runs = 0  # clusterings so far
        self._rows: Any = None  # the FIFO bank: features, labels
        self._labels: Any = None
        self._written = 0
        self._groups: dict[str, Any] | None = None

    def attach(self, feature_dim: int, classes: int) -> Any:
        self._aux, self._classes = _fresh_linear(feature_dim, self.clusters), classes
        return self._aux

    def loss(self, step: Any) -> Any:
        import torch

        if self._seed is None:
            gen = step.generator or torch.Generator().manual_seed(0)
            self._seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        f_in, f_out, y = step.features_in, step.features_out, step.targets
        if self._groups is None:
            loss = cross_entropy(step.logits_in, y)
            loss = loss + self.lam_oe * uniform_cross_entropy(step.logits_out).mean()
            self.remember(f_in, y, f_out, torch.full_like(y[:1], -1).expand(len(f_out)))
            if self._written >= self.bank:
                self.recluster(step.extra)
            return loss
        loss, pseudo = self.grouped_loss(step)
        self.remember(f_in, y, f_out, pseudo)
        return loss

    def grouped_loss(self, step: Any) -> tuple[Any, Any]:
        """The UDG loss with the current clusters, and each outlier's pseudo label."""
        import torch
        import torch.nn.functional as F

        device = step.features_in.device
        g = self._groups = {k: v.to(device) for k, v in self._groups.items()}
        features = torch.cat([step.features_in, step.features_out])
        with torch.no_grad():
            ids = assign(embed(features.detach(), g["mean"], g["projection"]), g["centroids"])
        n_in = len(step.features_in)
        pseudo = g["pseudo"][ids[n_in:]]
        relabelled = (pseudo >= 0).float()
        ce_out = F.cross_entropy(step.logits_out, pseudo.clamp(min=0), reduction="none")
        ce_in = F.cross_entropy(step.logits_in, step.targets, reduction="none")
        loss_cls = (ce_in.sum() + (relabelled * ce_out).sum()) / (n_in + relabelled.sum())
        oe = (1 - relabelled) * g["oe_weight"][ids[n_in:]]
        uniform = uniform_cross_entropy(step.logits_out)
        loss_oe = (oe * uniform).sum() / (1 - relabelled).sum().clamp(min=1)
        aux = F.cross_entropy(step.extra(features), ids, reduction="none")
        loss_aux = (g["weight"][ids] * aux).mean()
        return loss_cls + self.lam_oe * loss_oe + self.lam_aux * loss_aux, pseudo

    def remember(self, f_in: Any, y: Any, f_out: Any, pseudo: Any) -> None:
        """Put a step's detached features and labels into the FIFO bank."""
        import torch

        rows = torch.cat([f_in, f_out]).detach()[-self.bank :]
        labels = torch.cat([y, pseudo]).detach()[-self.bank :]
        if self._rows is None:
            self._rows = rows.new_zeros(self.bank, rows.shape[1])
            self._labels = labels.new_zeros(self.bank)
        if self._rows.device != rows.device:
            self._rows, self._labels = self._rows.to(rows.device), self._labels.to(rows.device)
        at = (self._written + torch.arange(len(rows), device=rows.device)) % self.bank
        self._rows[at], self._labels[at] = rows, labels
        self._written += len(rows)

    def end_epoch(self, epoch: int, epochs: int) -> None:
        if epoch + 1 < epochs and min(self._written, self.bank) >= 2:
            self.recluster(self._aux)
        self._written = 0  # each clustering sees the features of one epoch

    def recluster(self, aux: Any) -> None:
        """k-means on the bank; new cluster rules; the cluster head re-drawn; bank emptied."""
        import torch

        n = min(self._written, self.bank)
        rows, labels = self._rows[:n], self._labels[:n]
        gen = torch.Generator().manual_seed((self._seed or 0) + self._runs)
        self._runs += 1
        mean, projection = whitening(rows, self.pca_dim)
        x = embed(rows, mean, projection)
        k = min(self.clusters, n)
        centroids = kmeans(x, k, gen, self.iters)
        purity = (self.purity_id, self.purity_ood)
        rules = group_rules(assign(x, centroids), labels, k, self._classes, purity, self.enhance)
        pseudo, oe_weight, weight = rules
        self._groups = {"mean": mean, "projection": projection, "centroids": centroids}
        self._groups.update(pseudo=pseudo, oe_weight=oe_weight, weight=weight)
        if aux is not None:
            with torch.no_grad():
                aux.weight.copy_(torch.randn(aux.weight.shape, generator=gen) * 0.01)
                aux.bias.zero_()
        self._written = 0

    def state(self) -> dict[str, Any]:
        n = min(self._written, self.bank)
        bank = None if self._rows is None else (self._rows[:n].cpu(), self._labels[:n].cpu())
        groups = None if self._groups is None else {k: v.cpu() for k, v in self._groups.items()}
        return {"seed": self._seed, "runs": self._runs, "bank": bank, "groups": groups}

    def load_state(self, state: dict[str, Any]) -> None:
        self._seed, self._runs, self._groups = state["seed"], state["runs"], state["groups"]
        self._rows = self._labels = None
        self._written = 0
        if state["bank"] is not None and len(state["bank"][0]):
            rows, labels = state["bank"]
            self.remember(rows[:0], labels[:0], rows, labels)


@oebench.hookimpl
def register_objectives(register):
    register(
        "mcd",
        MCD,
        description="CE on two heads + 1.0 relu(1.2 - (H(p1) - H(p2))) on outliers "
        "(Yu & Aizawa, ICCV 2019; as OpenOOD)",
    )
    register(
        "udg",
        UDG,
        description="OE on outliers outside ID-pure k-means clusters + 0.1 cluster-head CE "
        "(Yang et al., ICCV 2021; as OpenOOD)",
    )
