r"""Crossmodal retrieval (Algorithm 1), recall@k, and the empirical conditional (eq. 28).

Section 4 of Baptista, Stuart & Tran (2025). Given a query embedding and a bank of embeddings
of the other modality, the trained tilting defines the empirical conditional

.. math::  \nu^N_{u|v}(du \mid v) = \sum_{i=1}^N w_i(v)\,\delta_{u^i},\qquad
   w_i(v) = \mathrm{softmax}_i\big(\mathrm{sim}(g_u(u^i), g_v(v))/\tau\big)        \quad (28)

(the prior :math:`\mu_u^N` reweighted by the likelihood :math:`\rho(\cdot|v)`). Retrieval with
``k = 1`` returns its mode (Theorem 4.2). Every alignment metric here is symmetric, so the same
functions serve both directions: pass v embeddings as queries and u embeddings as the bank for
:math:`\nu_{u|v}`, or the reverse for :math:`\nu_{v|u}`.

Retrieval and recall work through ``chunk_size x chunk_size`` blocks of scores, so a 100k x 100k
pool never forms its full score matrix. The default 2048 keeps a float32 block at 16 MiB: on the CPU,
glibc serves blocks under its 32 MiB mmap ceiling from the heap, while larger ones are mapped and
page-faulted afresh for every block (about twice the system time at 4096).
"""

from __future__ import annotations

import torch
from torch import Tensor

from clipmath.multimodal import similarity
from clipmath.multimodal.logits import check_scale, scaled_logits


def check_embeddings(**named: Tensor) -> None:
    """Validate embedding batches passed by keyword: 2-D, non-empty, finite, one shared n_e.

    Raises:
        ValueError: naming the offending argument.
    """
    dims = {}
    for name, emb in named.items():
        if not isinstance(emb, Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(emb).__name__}")
        if emb.dim() != 2 or emb.shape[0] == 0:
            raise ValueError(f"{name}: expected a non-empty (N, n_e) tensor, got shape {tuple(emb.shape)}")
        if not torch.isfinite(emb).all():
            raise ValueError(f"{name}: contains NaN or Inf")
        dims[name] = emb.shape[1]
    if len(set(dims.values())) > 1:
        raise ValueError(f"embedding dimensions differ: {dims}")


def check_positive_int(name: str, value: int, upper: int | None = None) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an int in 1..upper (no bound if None)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (upper is not None and value > upper):
        expected = "a positive integer" if upper is None else f"an integer in 1..{upper}"
        raise ValueError(f"{name}={value!r}: expected {expected}")


def _chunks(size: int, chunk_size: int) -> list[slice]:
    return [slice(start, min(start + chunk_size, size)) for start in range(0, size, chunk_size)]


def tilted_logits(query_emb: Tensor, bank_emb: Tensor, logit_scale: Tensor | float, metric: str = "cosine") -> Tensor:
    r""":math:`\mathrm{sim}(q, b_i)/\tau = e^{\text{logit\_scale}}\,\mathrm{sim}(q, b_i)`, validated.

    Args:
        query_emb: (Q, n_e) query embeddings.
        bank_emb: (N, n_e) bank embeddings.
        logit_scale: ``log(1/tau)``, a float or a one-element tensor.
        metric: alignment metric, one of ``cosine``, ``inner``, ``neg_sq_l2``.

    Returns:
        (Q, N) logits in float32 or wider.
    """
    check_embeddings(query_emb=query_emb, bank_emb=bank_emb)
    sim = similarity.get(metric)
    return scaled_logits(sim, query_emb, bank_emb, as_logit_scale(logit_scale).to(query_emb.device))


def as_logit_scale(logit_scale: Tensor | float) -> Tensor:
    """``logit_scale`` as a validated one-element tensor (a float is wrapped in float64, exactly).

    Raises:
        ValueError: naming ``logit_scale`` when it is not a finite number or one-element tensor.
    """
    if isinstance(logit_scale, (int, float)) and not isinstance(logit_scale, bool):
        logit_scale = torch.tensor(float(logit_scale), dtype=torch.float64)
    check_scale(logit_scale, None)
    return logit_scale


def conditional_weights(
    query_emb: Tensor, bank_emb: Tensor, logit_scale: Tensor | float, metric: str = "cosine"
) -> Tensor:
    r"""Weights :math:`w_i` of the empirical conditional :math:`\nu^N` over the bank (eq. 28).

    Args:
        query_emb: (Q, n_e) embeddings of the conditioning modality (v for :math:`\nu_{u|v}`).
        bank_emb: (N, n_e) embeddings of the data set of the other modality.
        logit_scale: ``log(1/tau)``, a float or a one-element tensor.
        metric: alignment metric, one of ``cosine``, ``inner``, ``neg_sq_l2``.

    Returns:
        (Q, N) rows of probabilities, each summing to one.
    """
    return tilted_logits(query_emb, bank_emb, logit_scale, metric).softmax(dim=1)


def retrieve(
    query_emb: Tensor, bank_emb: Tensor, k: int, metric: str = "cosine", chunk_size: int = 2048
) -> tuple[Tensor, Tensor]:
    r"""The ``k`` bank items with the largest scores for each query (Algorithm 1).

    Scores are :math:`s_i = \mathrm{sim}(b_i, q)`; ``k = 1`` is the MAP point of
    :math:`\nu^N` (Theorem 4.2). The bank is scanned in chunks with a running top-k, so memory is
    ``O(chunk_size**2 + Q k)``. Among exactly equal scores the order is unspecified.

    Args:
        query_emb: (Q, n_e) query embeddings.
        bank_emb: (N, n_e) bank embeddings of the other modality.
        k: number of distinct indices per query, 1 <= k <= N.
        metric: alignment metric, one of ``cosine``, ``inner``, ``neg_sq_l2``.
        chunk_size: queries and bank items per score block.

    Returns:
        ``(scores, indices)``, both (Q, k), each row sorted by decreasing score.

    Raises:
        ValueError: for malformed embeddings, an unknown metric, or ``k``/``chunk_size`` out of range.
    """
    check_embeddings(query_emb=query_emb, bank_emb=bank_emb)
    sim = similarity.get(metric)
    check_positive_int("k", k, bank_emb.shape[0])
    check_positive_int("chunk_size", chunk_size)
    scores, indices = [], []
    for queries in _chunks(query_emb.shape[0], chunk_size):
        n_queries = queries.stop - queries.start
        best = query_emb.new_empty((n_queries, 0))
        best_idx = torch.empty((n_queries, 0), dtype=torch.long, device=query_emb.device)
        for items in _chunks(bank_emb.shape[0], chunk_size):
            block = sim(query_emb[queries], bank_emb[items])
            block_idx = torch.arange(items.start, items.stop, device=block.device).expand_as(block)
            merged = torch.cat([best, block], dim=1)
            merged_idx = torch.cat([best_idx, block_idx], dim=1)
            best, where = merged.topk(min(k, merged.shape[1]), dim=1)
            best_idx = merged_idx.gather(1, where)
        scores.append(best)
        indices.append(best_idx)
    return torch.cat(scores), torch.cat(indices)


def recall_at_k(
    emb_u: Tensor, emb_v: Tensor, ks: tuple[int, ...] = (1, 5), metric: str = "cosine", chunk_size: int = 2048
) -> dict[str, float]:
    r"""Recall@k of crossmodal retrieval in both directions, pair i being the true match.

    For ``u_to_v`` the query :math:`u^i` ranks every :math:`v^j`; its rank is the number of
    candidates :math:`j \ne i` whose score is *strictly* higher than its partner's,
    :math:`\#\{j \ne i : \mathrm{sim}(u^i, v^j) > \mathrm{sim}(u^i, v^i)\}`, and it is a hit at
    ``k`` when that rank is below ``k``. Candidates tied with the partner therefore never push it
    down (the optimistic convention). ``v_to_u`` is the same with the roles swapped (columns of the
    score matrix). Counts accumulate over ``chunk_size x chunk_size`` blocks, never the full matrix;
    the partner scores come from the same block computation as the candidates, so round-off cannot
    make a pair outrank itself.

    Args:
        emb_u: (B, n_e) embeddings of modality u.
        emb_v: (B, n_e) embeddings of modality v, row i paired with row i of ``emb_u``.
        ks: cut-offs, each in 1..B.
        metric: alignment metric, one of ``cosine``, ``inner``, ``neg_sq_l2``.
        chunk_size: rows and columns per score block.

    Returns:
        ``{"u_to_v@k": ..., "v_to_u@k": ...}`` for each ``k`` in ``ks``, fractions in [0, 1].

    Raises:
        ValueError: for malformed or unpaired embeddings, an unknown metric, or a bad ``k``/``chunk_size``.
    """
    check_embeddings(emb_u=emb_u, emb_v=emb_v)
    if emb_u.shape[0] != emb_v.shape[0]:
        raise ValueError(
            f"emb_u and emb_v: expected paired batches of equal size, got {emb_u.shape[0]} and {emb_v.shape[0]}"
        )
    sim = similarity.get(metric)
    size = emb_u.shape[0]
    for k in ks:
        check_positive_int("ks", k, size)
    check_positive_int("chunk_size", chunk_size)
    chunks = _chunks(size, chunk_size)
    partner = torch.cat([sim(emb_u[c], emb_v[c]).diagonal() for c in chunks])
    rank_u = torch.zeros(size, dtype=torch.long, device=emb_u.device)
    rank_v = torch.zeros(size, dtype=torch.long, device=emb_u.device)
    for rows in chunks:
        for cols in chunks:
            block = sim(emb_u[rows], emb_v[cols])
            above_row = block > partner[rows, None]
            above_col = block > partner[None, cols]
            if rows == cols:
                # The partner is not its own competitor; masking also guards against a kernel that
                # would not reproduce the diagonal bit for bit.
                above_row.fill_diagonal_(False)
                above_col.fill_diagonal_(False)
            rank_u[rows] += above_row.sum(1)
            rank_v[cols] += above_col.sum(0)
    recalls = {}
    for k in ks:
        recalls[f"u_to_v@{k}"] = (rank_u < k).double().mean().item()
        recalls[f"v_to_u@{k}"] = (rank_v < k).double().mean().item()
    return recalls
