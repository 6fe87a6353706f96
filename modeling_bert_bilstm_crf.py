"""BERT -> (BiLSTM) -> CRF for token classification (Chinese medical NER).

One self-contained file (imports only torch and transformers, plus the standard library) so it can be
shipped next to a checkpoint and loaded with ``trust_remote_code=True``:

* ``BertBiLstmCrfConfig``: the encoder's own config (``encoder``: BERT, ERNIE, ELECTRA, RoFormer ...) with the
  head's settings (``use_lstm``, ``lstm_hidden_size``, ...).
* ``BertBiLstmCrfForTokenClassification``: the encoder (``AutoModel``) -> optional BiLSTM -> dropout -> linear
  emissions -> ``CRF``. ``forward(..., labels)`` returns the mean CRF negative log-likelihood as ``loss`` and the
  emission scores as ``logits``; ``decode(...)`` returns a ``CrfDecoderOutput`` whose ``tags`` are the Viterbi
  tags with -100 at positions the CRF does not see ([CLS], [SEP], padding, anything labelled -100).
* ``BertBiLstmCrfEnsembleConfig`` / ``BertBiLstmCrfEnsembleForTokenClassification``: models of one label set as
  one model, decoding their averaged CRF potentials (or keeping the entities enough of them predict).
* ``CRF``: a drop-in, faster replacement for pytorch-crf's ``torchcrf.CRF`` (same parameter names and
  interface, log-likelihood from ``forward``) that also accepts masks with holes.
"""

import contextlib
import math
import unicodedata
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, BertConfig, BertModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput, TokenClassifierOutput
from transformers.models.bert.modeling_bert import BertEmbeddings
from transformers.pipelines.base import ChunkPipeline

# ----- CRF: algorithms -----
#
# Every CRF entry point first "compacts" each sequence: the visible positions (mask True) are moved, in
# order, to the front. A sequence with holes (or an invisible first position) then becomes an ordinary
# sequence of length ``n_visible`` followed by padding, so consecutive visible positions are linked by
# exactly one transition and the algorithms below only handle suffix padding.
#
# Log-likelihood and Viterbi are computed by one of two interchangeable, exact implementations, chosen by
# ``_parallel_over_time`` (CUDA or not; the tests run both on the CPU):
# * sequential (CPU): the forward algorithm in exp-space (one small matmul per step instead of a K x K
#   logsumexp) with a hand-written backward (forward-backward marginals), 4-8x faster than pytorch-crf;
#   Viterbi as a loop of (B, K, K) max-plus steps.
# * parallel over time (CUDA): log Z as a log-semiring product tree of the step matrices (O(log T) depth,
#   batched matmuls, autograd through ~log2(T) levels); Viterbi in O(sqrt(T)) launches over chunks of steps.
#   Few kernel launches and no host synchronisation, at O(T K^3) instead of O(T K^2) work: the right trade
#   on a GPU, where a per-step loop waits on launches, and the wrong one on a CPU.
# Viterbi paths are recovered from the backpointers by pointer doubling (O(log T) gathers) on both.


def _parallel_over_time(emissions: torch.Tensor) -> bool:
    """Whether to use the algorithms with few kernel launches (GPU) rather than the least work (CPU)."""
    return emissions.is_cuda


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """Run a CPU recurrence (BiLSTM, CRF sweeps) on one thread. Each of its hundreds of steps is a few small
    matrix products, too little to share between threads, and every step waits at a barrier for all of them: a
    thread that another process has pushed off its core stalls every step (on 2 busy cores, 2 threads made the
    BiLSTM hundreds of times slower than 1)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _compact(mask: torch.Tensor, trim: bool):
    """Order that moves the visible positions of each row to the front, their counts, and the new mask.

    With ``trim`` the compacted length is cut to the longest row (needs the value on the host, so it is
    only used on the CPU where that costs nothing).
    """
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)
    lengths = mask.sum(1)
    seq_len = mask.shape[1]
    if trim:  # keep one column so that all-masked batches still flow through (and give 0 / empty paths)
        seq_len = min(max(int(lengths.max()), 1), seq_len)
    order = order[:, :seq_len]
    compact_mask = torch.arange(seq_len, device=mask.device) < lengths.unsqueeze(1)
    return order, lengths, compact_mask


def _gather_time(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``x[b, order[b, t], ...]`` for (B, T) or (B, T, K) tensors."""
    if x.dim() == 2:
        return x.gather(1, order)
    return x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _log_identity(num_tags: int, like: torch.Tensor) -> torch.Tensor:
    """Identity of the log (and max-plus) semiring: 0 on the diagonal, -inf elsewhere."""
    eye = torch.full((num_tags, num_tags), float("-inf"), dtype=like.dtype, device=like.device)
    return eye.fill_diagonal_(0.0)


def _step_matrices(emissions, mask, transitions):
    """M[b, t-1, i, j] = transitions[i, j] + emissions[b, t, j] for visible t >= 1, log-identity otherwise."""
    steps = transitions + emissions[:, 1:].unsqueeze(2)
    identity = _log_identity(transitions.shape[0], emissions)
    return torch.where(mask[:, 1:, None, None], steps, identity)


def _path_score(emissions, tags, mask, start, end, transitions):
    """Score of ``tags`` under compacted (suffix) ``mask``; 0 for empty sequences."""
    maskf = mask.to(emissions.dtype)
    emit = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)
    trans = transitions[tags[:, :-1], tags[:, 1:]]
    last = (mask.sum(1) - 1).clamp(min=0)
    last_tags = tags.gather(1, last.unsqueeze(1)).squeeze(1)
    score = start[tags[:, 0]] + end[last_tags]
    score = score + (emit * maskf).sum(1) + (trans * maskf[:, 1:]).sum(1)
    return score * maskf[:, 0]


def _log_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """C[..., i, j] = logsumexp_k(a[..., i, k] + b[..., k, j]) via max-shift + exp + matmul + log.

    Shifting rows of ``a`` and columns of ``b`` by their maxima keeps exp() <= 1; the shifts are constants
    for autograd (the result does not depend on them). Entries are only lost to underflow when every term
    of a sum is below ~1e-38 relative to the shifts, which needs score ranges of ~80 nats within one step.
    """
    a_max = a.amax(-1, keepdim=True).detach()
    b_max = b.amax(-2, keepdim=True).detach()
    # Rows/columns that are entirely -inf (e.g. forbidden transitions) would give inf - inf = nan.
    a_max = torch.where(torch.isfinite(a_max), a_max, torch.zeros_like(a_max))
    b_max = torch.where(torch.isfinite(b_max), b_max, torch.zeros_like(b_max))
    product = torch.matmul((a - a_max).exp(), (b - b_max).exp())
    # Sums that underflow to 0 (log = -inf, e.g. through hard -1e4 transitions) get gradient 0, as their true
    # gradient ~exp(-1e4) is: log's gradient 1/0 would turn into nan in the matmul's backward.
    positive = product > 0
    log_product = torch.where(positive, torch.where(positive, product, 1.0).log(), float("-inf"))
    return log_product + a_max + b_max


def _log_partition_tree(emissions, mask, start, end, transitions):
    """log Z per sequence as a balanced log-semiring product of the per-step matrices (autograd)."""
    batch, _, num_tags = emissions.shape
    product = _step_matrices(emissions, mask, transitions)
    identity = _log_identity(num_tags, emissions)
    while product.shape[1] > 1:
        if product.shape[1] % 2:
            product = torch.cat([product, identity.expand(batch, 1, num_tags, num_tags)], 1)
        product = _log_matmul(product[:, 0::2], product[:, 1::2])
    alpha = start + emissions[:, 0]
    if product.shape[1] == 1:
        alpha = torch.logsumexp(alpha.unsqueeze(2) + product[:, 0], 1)
    return torch.logsumexp(alpha + end, 1)


def _exp_step(log_vec: torch.Tensor, exp_matrix: torch.Tensor) -> torch.Tensor:
    """log(exp(log_vec) @ exp_matrix) for (B, K) vectors, shifted by the row max to stay in range."""
    shift = log_vec.amax(1, keepdim=True)
    return torch.log((log_vec - shift).exp() @ exp_matrix) + shift


def _forward_sweep(emissions, mask, start, transitions) -> torch.Tensor:
    """alphas[b, t, j]: log-sum of the scores of all paths over the compacted positions <= t ending in tag j
    (carried unchanged over the suffix padding, so ``alphas[:, -1]`` is each sequence's last one)."""
    t_max = transitions.max()
    exp_trans = (transitions - t_max).exp()
    alphas = torch.empty_like(emissions)
    alpha = start + emissions[:, 0]
    alphas[:, 0] = alpha
    for t in range(1, emissions.shape[1]):
        step = _exp_step(alpha, exp_trans) + t_max + emissions[:, t]
        alpha = torch.where(mask[:, t : t + 1], step, alpha)
        alphas[:, t] = alpha
    return alphas


def _backward_sweep(emissions, mask, end, transitions) -> torch.Tensor:
    """betas[b, t, i]: log-sum of the scores of all path continuations after position t from tag i."""
    t_max = transitions.max()
    exp_trans_t = (transitions - t_max).exp().T
    betas = torch.empty_like(emissions)
    beta = end.expand_as(emissions[:, 0])
    betas[:, -1] = beta
    for t in range(emissions.shape[1] - 1, 0, -1):
        step = _exp_step(emissions[:, t] + beta, exp_trans_t) + t_max
        beta = torch.where(mask[:, t : t + 1], step, beta)
        betas[:, t - 1] = beta
    return betas


def _node_marginals(emissions, mask, start, end, transitions) -> torch.Tensor:
    """Posterior tag probabilities of compacted sequences by one forward and one backward sweep, no autograd:
    exp(alpha + beta - log Z), 0 at padding."""
    alphas = _forward_sweep(emissions, mask, start, transitions)
    betas = _backward_sweep(emissions, mask, end, transitions)
    log_z = torch.logsumexp(alphas[:, -1] + end, 1)
    return (alphas + betas - log_z[:, None, None]).exp() * mask.unsqueeze(-1)


class _SequentialLogPartition(torch.autograd.Function):
    """log Z by the forward algorithm; gradients from forward-backward marginals.

    Autograd through T steps records several nodes per step; the marginals need a single backward
    (beta) sweep plus two vectorised reductions, which halves the cost of a training step on the CPU.
    """

    @staticmethod
    def forward(ctx, emissions, mask, start, end, transitions):
        alphas = _forward_sweep(emissions, mask, start, transitions)
        log_z = torch.logsumexp(alphas[:, -1] + end, 1)
        ctx.save_for_backward(emissions, mask, end, transitions, alphas, log_z)
        return log_z

    @staticmethod
    def backward(ctx, grad_log_z):
        emissions, mask, end, transitions, alphas, log_z = ctx.saved_tensors
        betas = _backward_sweep(emissions, mask, end, transitions)
        scale = grad_log_z[:, None, None]
        norm = log_z[:, None, None]
        node = (alphas + betas - norm).exp() * mask.unsqueeze(-1) * scale
        weights = mask[:, 1:, None] * scale
        edge = _expected_transitions(alphas[:, :-1], (emissions + betas)[:, 1:], weights, norm, transitions)
        final = (alphas[:, -1] + end - log_z[:, None]).exp() * grad_log_z[:, None]
        return node, None, node[:, 0], final.sum(0), edge


def _expected_transitions(alphas, emitted_betas, weights, norm, transitions):
    """sum over (b, t) of weights[b, t] * exp(alphas[b, t, i] + transitions[i, j] + emitted_betas[b, t, j] - norm[b]).

    Factorised as one (K, B*T) @ (B*T, K) matmul of shifted exponentials instead of materialising the
    (B, T, K, K) tensor (~18x faster on the CPU). The per-(b, t) factor exp(shift) is at most
    exp(max(transitions) - transitions[i*, j*]) for the argmax states i*, j*; the rare rows where that could
    overflow (transition ranges of tens of nats, e.g. hard constraints) are summed in log space instead.
    """
    num_tags = transitions.shape[0]
    t_max = transitions.max()
    alpha_max = alphas.amax(-1, keepdim=True)
    beta_max = emitted_betas.amax(-1, keepdim=True)
    shift = alpha_max + beta_max + t_max - norm
    risky = shift.squeeze(-1) > 60.0
    factor = shift.clamp(max=60.0).exp() * weights * ~risky.unsqueeze(-1)
    left = ((alphas - alpha_max).exp() * factor).reshape(-1, num_tags)
    right = (emitted_betas - beta_max).exp().reshape(-1, num_tags)
    expected = (left.T @ right) * (transitions - t_max).exp()
    if risky.any():
        scores = alphas[risky][:, :, None] + transitions + emitted_betas[risky][:, None, :]
        norms = norm.expand(-1, risky.shape[1], 1)[risky].unsqueeze(-1)
        expected = expected + ((scores - norms).exp() * weights[risky].unsqueeze(-1)).sum(0)
    return expected


def _log_partition_sequential(emissions, mask, start, end, transitions):
    return _SequentialLogPartition.apply(emissions, mask, start, end, transitions)


def _max_plus(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """C[..., j] = max_i(a[..., i] + b[..., i, j]) and its argmax i, for (..., K) vectors and (..., K, K) matrices."""
    return (a.unsqueeze(-1) + b).max(-2)


def _viterbi_backpointers_chunked(emissions, mask, start, transitions):
    """Max-plus forward sweep in O(sqrt(T)) kernel launches: best final scores (B, K), backpointers (B, T-1, K).

    The T - 1 step matrices (masked steps are the max-plus identity, whose backpointer is the identity map) are
    cut into C chunks of L ~ sqrt(T) steps. (1) Each chunk's max-plus product, for all chunks at once, in L
    matrix steps; (2) the scores entering each chunk, C vector steps through those products; (3) the ordinary
    sweep inside every chunk at once from its entering scores, L vector steps that also give the backpointers.
    A step-by-step loop costs two launches per position (~1,000 at T = 512), which is what a GPU waits on;
    this costs ~6 sqrt(T), and O(T K^3) instead of O(T K^2) work, which the GPU absorbs and a CPU does not.
    """
    batch, _, num_tags = emissions.shape
    steps = _step_matrices(emissions, mask, transitions)
    num_steps = steps.shape[1]
    score = start + emissions[:, 0]
    if num_steps == 0:
        return score, _stack_backpointers([], emissions)
    chunk_len = math.isqrt(num_steps - 1) + 1
    num_chunks = -(-num_steps // chunk_len)
    identity = _log_identity(num_tags, emissions).expand(batch, num_chunks * chunk_len - num_steps, -1, -1)
    chunks = torch.cat([steps, identity], 1).view(batch, num_chunks, chunk_len, num_tags, num_tags)

    products = chunks[:, :, 0]
    for offset in range(1, chunk_len):
        products = (products.unsqueeze(-1) + chunks[:, :, offset].unsqueeze(-3)).amax(-2)
    entering = [score]
    for chunk in range(num_chunks - 1):
        entering.append(_max_plus(entering[-1], products[:, chunk])[0])

    chunk_scores = torch.stack(entering, 1)
    backpointers = []
    for offset in range(chunk_len):
        chunk_scores, best_prev = _max_plus(chunk_scores, chunks[:, :, offset])
        backpointers.append(best_prev)
    backpointers = torch.stack(backpointers, 2).view(batch, num_chunks * chunk_len, num_tags)
    return chunk_scores[:, -1], backpointers[:, :num_steps]


def _viterbi_backpointers_sequential(emissions, mask, start, transitions):
    """Same result as ``_viterbi_backpointers_chunked`` with (B, K, K) work per step only (CPU)."""
    identity = torch.arange(transitions.shape[0], device=emissions.device)
    score = start + emissions[:, 0]
    backpointers = []
    for t in range(1, emissions.shape[1]):
        best_score, best_prev = _max_plus(score, transitions)
        visible = mask[:, t : t + 1]
        score = torch.where(visible, best_score + emissions[:, t], score)
        backpointers.append(torch.where(visible, best_prev, identity))
    return score, _stack_backpointers(backpointers, emissions)


def _stack_backpointers(backpointers, emissions):
    if backpointers:
        return torch.stack(backpointers, 1)
    return emissions.new_zeros((emissions.shape[0], 0, emissions.shape[2]), dtype=torch.long)


def _follow_backpointers(backpointers: torch.Tensor, last_tags: torch.Tensor) -> torch.Tensor:
    """Tags at every position from the last tag, by pointer doubling (O(log T) gathers, no Python loop over T).

    ``maps[:, t]`` sends the tag at position min(t + span, T - 1) to the best tag at position t; composing
    it with ``maps[:, t + span]`` doubles the span.
    """
    batch, _, num_tags = backpointers.shape
    identity = torch.arange(num_tags, device=backpointers.device).expand(batch, 1, num_tags)
    maps = torch.cat([backpointers, identity], 1)
    seq_len, span = maps.shape[1], 1
    while span < seq_len:
        maps = torch.cat([maps[:, :-span].gather(2, maps[:, span:]), maps[:, -span:]], 1)
        span *= 2
    return maps.gather(2, last_tags[:, None, None].expand(batch, seq_len, 1)).squeeze(2)


# ----- CRF: module -----


class CRF(nn.Module):
    """Linear-chain conditional random field with pytorch-crf's interface and parameter names.

    ``forward`` returns the log-likelihood of ``tags`` (negate it for a loss) and ``decode`` the Viterbi
    paths, exactly as ``torchcrf.CRF`` does, so its state dict loads here. Differences: the mask may have
    holes and an invisible first position (invisible positions are skipped: the previous and next visible
    positions are joined by one transition), a sequence with no visible position has log-likelihood 0 and
    an empty path, ``reduction`` defaults to ``"mean"``, and everything runs in float32 (float64 if given)
    with autocast off.

    Args:
        num_tags: Number of tags.
        batch_first: Whether inputs are (batch, seq_len, ...) instead of (seq_len, batch, ...).
    """

    def __init__(self, num_tags: int, batch_first: bool = False) -> None:
        if num_tags <= 0:
            raise ValueError(f"invalid number of tags: {num_tags}")
        super().__init__()
        self.num_tags = num_tags
        self.batch_first = batch_first
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-0.1, 0.1), as pytorch-crf."""
        for param in (self.start_transitions, self.end_transitions, self.transitions):
            nn.init.uniform_(param, -0.1, 0.1)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}, batch_first={self.batch_first}"

    def forward(self, emissions, tags, mask=None, reduction: str = "mean") -> torch.Tensor:
        """Log-likelihood of ``tags`` given ``emissions``.

        Args:
            emissions: (B, T, K) if ``batch_first`` else (T, B, K).
            tags: (B, T) / (T, B); values at invisible positions are ignored (e.g. -100).
            mask: (B, T) / (T, B) bool/byte, True where the CRF sees the position; default all True.
            reduction: ``"none"`` (per sequence), ``"sum"``, ``"mean"`` (over sequences) or
                ``"token_mean"`` (sum divided by the number of visible positions).
        """
        if reduction not in ("none", "sum", "mean", "token_mean"):
            raise ValueError(f"invalid reduction: {reduction}")
        emissions, tags, mask = self._batch_first(emissions, tags, mask)
        with torch.autocast(emissions.device.type, enabled=False):
            # float32 at least (bf16/fp16 emissions are upcast); float64 stays float64 (gradcheck).
            emissions = emissions.to(torch.promote_types(emissions.dtype, torch.float32))
            start, end, transitions = self._float_params(emissions.dtype)
            parallel = _parallel_over_time(emissions)
            order, lengths, compact_mask = _compact(mask, trim=not parallel)
            emissions = _gather_time(emissions, order)
            tags = _gather_time(tags.masked_fill(~mask, 0), order)
            log_partition = _log_partition_tree if parallel else _log_partition_sequential
            numerator = _path_score(emissions, tags, compact_mask, start, end, transitions)
            denominator = log_partition(emissions, compact_mask, start, end, transitions)
            llh = torch.where(lengths > 0, numerator - denominator, torch.zeros_like(numerator))
        if reduction == "none":
            return llh
        if reduction == "sum":
            return llh.sum()
        if reduction == "mean":
            return llh.mean()
        return llh.sum() / mask.sum().clamp(min=1)

    def expected_counts(self, emissions, mask=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """What this CRF expects of its paths, the sufficient statistics of a linear chain: per position the
        posterior of each tag (shaped like ``emissions``, 0 where invisible) and, summed over the batch, how
        often a path starts in each tag (K), ends in each tag (K) and takes each transition (K, K). The
        gradients of log Z, without a graph to the emissions: a teacher's side of ``cross_entropy``."""
        emissions, _, mask = self._batch_first(emissions, None, mask)
        with torch.enable_grad(), torch.autocast(emissions.device.type, enabled=False):
            emissions = emissions.detach().to(torch.promote_types(emissions.dtype, torch.float32)).requires_grad_()
            params = [param.detach().requires_grad_() for param in self._float_params(emissions.dtype)]
            log_z = self._log_partition(emissions, mask, params)
            node, start, end, transitions = torch.autograd.grad(log_z.sum(), [emissions, *params])
        return node if self.batch_first else node.transpose(0, 1), start, end, transitions

    def cross_entropy(self, emissions, teacher_counts, mask=None) -> torch.Tensor:
        """Cross-entropy, averaged over sequences, from a teacher's distribution over paths to this CRF's:
        log Z - E_teacher[path score], with ``teacher_counts`` the teacher's ``expected_counts`` over the same
        positions. Exact over all paths when the teacher is a linear-chain CRF (one model, or an ensemble's
        averaged CRF); its gradient is this CRF's expected counts minus the teacher's, so it is smallest where
        the two distributions are one."""
        node, start, end, transitions = teacher_counts
        emissions, _, mask = self._batch_first(emissions, None, mask)
        if not self.batch_first:
            node = node.transpose(0, 1)
        with torch.autocast(emissions.device.type, enabled=False):
            emissions = emissions.to(torch.promote_types(emissions.dtype, torch.float32))
            params = self._float_params(emissions.dtype)
            log_z = self._log_partition(emissions, mask, params)
            expected_score = (node * emissions).sum() + sum(
                (count * param).sum() for count, param in zip((start, end, transitions), params))
            return (log_z.sum() - expected_score) / emissions.shape[0]

    def _log_partition(self, emissions, mask, params) -> torch.Tensor:
        """log Z per sequence of batch-first float emissions (0 for a sequence with no visible position)."""
        parallel = _parallel_over_time(emissions)
        order, lengths, compact_mask = _compact(mask, trim=not parallel)
        log_partition = _log_partition_tree if parallel else _log_partition_sequential
        log_z = log_partition(_gather_time(emissions, order), compact_mask, *params)
        return torch.where(lengths > 0, log_z, torch.zeros_like(log_z))

    def decode(self, emissions, mask=None) -> list[list[int]]:
        """Viterbi paths, one list of tags per sequence covering its visible positions in order."""
        tags = self.viterbi_tags(emissions, mask)
        if not self.batch_first:
            tags = tags.transpose(0, 1)
        return [[tag for tag in row if tag >= 0] for row in tags.tolist()]

    @torch.no_grad()
    def marginals(self, emissions, mask=None) -> torch.Tensor:
        """Posterior probability of every tag at every position, shaped like ``emissions``, 0 where invisible.

        On the CPU by one direct forward-backward (``_node_marginals``, no autograd); on CUDA as the gradient of
        log Z with respect to the emissions, by autograd through the parallel tree (few kernel launches).
        """
        emissions, _, mask = self._batch_first(emissions, None, mask)
        with torch.autocast(emissions.device.type, enabled=False):
            emissions = emissions.to(torch.promote_types(emissions.dtype, torch.float32))
            params = self._float_params(emissions.dtype)
            parallel = _parallel_over_time(emissions)
            order, lengths, compact_mask = _compact(mask, trim=not parallel)
            if parallel:
                with torch.enable_grad():
                    emissions = emissions.detach().requires_grad_(True)
                    log_z = _log_partition_tree(_gather_time(emissions, order), compact_mask, *params)
                    log_z = torch.where(lengths > 0, log_z, torch.zeros_like(log_z))
                    (marginals,) = torch.autograd.grad(log_z.sum(), emissions)
            else:
                with _one_cpu_thread(emissions.device):
                    compact = _node_marginals(_gather_time(emissions, order), compact_mask, *params)
                # Positions a row does not see are absent from its compacted prefix or sit in its masked tail (0).
                marginals = torch.zeros_like(emissions).scatter_(1, order.unsqueeze(-1).expand_as(compact), compact)
        return marginals if self.batch_first else marginals.transpose(0, 1)

    @torch.no_grad()
    def viterbi_tags(self, emissions, mask=None, allowed=None) -> torch.LongTensor:
        """Viterbi tags as a tensor shaped like ``mask``, -100 at invisible positions (no host sync on CUDA).

        ``allowed``: optional ``(start_allowed (K,), transition_allowed (K, K))`` bool tensors (see
        ``bio_transition_constraints``); the best path is then the best among the paths that start and move
        only where allowed (forbidden scores are -inf, which max-plus handles exactly).
        """
        emissions, _, mask = self._batch_first(emissions, None, mask)
        batch, seq_len, _ = emissions.shape
        with torch.autocast(emissions.device.type, enabled=False):
            # float32 at least (bf16/fp16 emissions are upcast); float64 stays float64 (gradcheck).
            emissions = emissions.to(torch.promote_types(emissions.dtype, torch.float32))
            start, end, transitions = self._float_params(emissions.dtype)
            if allowed is not None:
                start_allowed, transition_allowed = (a.to(emissions.device) for a in allowed)
                start = start.masked_fill(~start_allowed, float("-inf"))
                transitions = transitions.masked_fill(~transition_allowed, float("-inf"))
            parallel = _parallel_over_time(emissions)
            order, lengths, compact_mask = _compact(mask, trim=not parallel)
            emissions = _gather_time(emissions, order)
            paths = torch.full((batch, seq_len), -100, dtype=torch.long, device=emissions.device)
            if emissions.shape[1] > 0:
                sweep = _viterbi_backpointers_chunked if parallel else _viterbi_backpointers_sequential
                with _one_cpu_thread(emissions.device):
                    score, backpointers = sweep(emissions, compact_mask, start, transitions)
                compact_paths = _follow_backpointers(backpointers, (score + end).argmax(1))
                paths.scatter_(1, order, compact_paths.masked_fill(~compact_mask, -100))
        return paths if self.batch_first else paths.transpose(0, 1)

    def _float_params(self, dtype=torch.float32):
        return tuple(p.to(dtype) for p in (self.start_transitions, self.end_transitions, self.transitions))

    def _batch_first(self, emissions, tags, mask):
        """Validates shapes and returns batch-first tensors and a bool mask."""
        if emissions.dim() != 3 or emissions.shape[2] != self.num_tags:
            raise ValueError(f"emissions must be (*, *, {self.num_tags}), got {tuple(emissions.shape)}")
        if mask is None:
            mask = torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        for name, value in (("tags", tags), ("mask", mask)):
            if value is not None and value.shape != emissions.shape[:2]:
                raise ValueError(f"{name} must be {tuple(emissions.shape[:2])}, got {tuple(value.shape)}")
        mask = mask.bool()
        if not self.batch_first:
            emissions, mask = emissions.transpose(0, 1), mask.transpose(0, 1)
            tags = None if tags is None else tags.transpose(0, 1)
        return emissions, tags, mask

# ----- Configuration -----


# BertConfig's own fields, copied from the encoder's config where it has them: code that reads the model's config
# (positions for the windows, the vocabulary for bigram hashing, the dropout before the emission layer, the layers
# in the model card) reads the encoder's, whatever its architecture.
ENCODER_FIELDS_SHOWN = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                        "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                        "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id")


class BertBiLstmCrfConfig(BertConfig):
    """The encoder's own config plus the BiLSTM-CRF head, e.g.
    ``BertBiLstmCrfConfig(encoder=AutoConfig.from_pretrained("hfl/chinese-electra-180g-base-discriminator").to_dict(),
    num_labels=31, id2label=...)``.

    Args:
        encoder: The encoder's config as a dict with its ``model_type`` (any architecture ``AutoModel`` builds: BERT,
            ERNIE, ELECTRA, RoFormer ...), as ``EncoderDecoderConfig`` holds its parts. Its ``ENCODER_FIELDS_SHOWN``
            are copied to this config's own fields, which callers read. None: the encoder is a BERT whose config is
            this config's own fields, as in the folders saved before the encoder had a config of its own.
        use_lstm: Put a BiLSTM between BERT and the emission layer (False: BERT-CRF).
        lstm_hidden_size: Hidden size per direction (the BiLSTM outputs twice this).
        lstm_layers: Number of stacked BiLSTM layers.
        lstm_dropout: Dropout between stacked BiLSTM layers (``nn.LSTM``'s ``dropout``; unused for one layer).
        cls_token_id / sep_token_id: Ids hidden from the CRF by ``decode`` when no ``crf_mask`` is given
            (BERT's Chinese vocabulary: 101 and 102).
        window_chars: Length in characters of the windows the model was trained on; the pipeline cuts texts
            into windows of this length (positions beyond it would be untrained).
        context_chars: Characters of the text before and after each window fed with it (the encoder and the
            BiLSTM see them, the CRF does not), in training as in the pipeline; 0: none.
        constrain_bio: Viterbi decoding may only produce valid BIO sequences (no ``I-X`` at the start, after
            ``O`` or after another type's tag; see ``bio_transition_constraints``). Training is unconstrained.
        bigram_buckets: Character-bigram features (0: none): each position also gets learnt embeddings of the
            bigrams it ends and starts (its character with the one before, and with the one after), hashed
            from the input ids into this many buckets, next to the encoder's output at the BiLSTM's input.
            Chinese words are mostly two characters long, so bigrams tell where a term begins and ends; they
            need no word segmenter and no vocabulary beyond the characters'.
        bigram_embedding_size: Size of each bigram embedding (the BiLSTM reads 2 x this many more features).
        skip_blanks: Blank characters (``is_blank``: whitespace, 14% of the Ruijin corpus) get no model position:
            the model sees the other characters only, and a blank is tagged afterwards, inside an entity when the
            entity goes on after it, else ``O`` (``tags_with_blanks``). Offsets stay exact; the encoder does
            about 14% less work per character. False: every character, blanks included, has its position.
        classifier_dropout (from ``BertConfig``): dropout before the emission layer; defaults to
            ``hidden_dropout_prob``.
    """

    model_type = "bert_bilstm_crf"

    def __init__(
        self,
        use_lstm: bool = True,
        lstm_hidden_size: int = 256,
        lstm_layers: int = 1,
        lstm_dropout: float = 0.0,
        cls_token_id: int = 101,
        sep_token_id: int = 102,
        window_chars: int = 510,
        context_chars: int = 0,
        constrain_bio: bool = False,
        bigram_buckets: int = 0,
        bigram_embedding_size: int = 64,
        skip_blanks: bool = False,
        encoder: dict | None = None,
        **kwargs,
    ):
        self.encoder = encoder
        if encoder is not None:
            kwargs.update({name: encoder[name] for name in ENCODER_FIELDS_SHOWN if name in encoder})
        self.use_lstm = use_lstm
        self.lstm_hidden_size = lstm_hidden_size
        self.lstm_layers = lstm_layers
        self.lstm_dropout = lstm_dropout
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.window_chars = window_chars
        self.context_chars = context_chars
        self.constrain_bio = constrain_bio
        self.bigram_buckets = bigram_buckets
        self.bigram_embedding_size = bigram_embedding_size
        self.skip_blanks = skip_blanks
        # The model's own token-classification pipeline (CRF decoding), loaded by pipeline(..., trust_remote_code=True).
        kwargs.setdefault("custom_pipelines", {"token-classification": {
            "impl": "modeling_bert_bilstm_crf.BertBiLstmCrfNerPipeline", "pt": ["AutoModelForTokenClassification"],
            "tf": [], "type": "text"}})
        super().__init__(**kwargs)

    def encoder_config(self):
        """The encoder's own config (``encoder``; None for an old folder, whose BERT config is this one)."""
        return None if self.encoder is None else AutoConfig.for_model(**self.encoder)


class BertBiLstmCrfEnsembleConfig(BertBiLstmCrfConfig):
    """An ensemble's config (``BertBiLstmCrfEnsembleForTokenClassification``): the fields its members share
    (labels, windows, tokenizer ids) plus

    Args:
        ensemble_members: The members' own configs (dicts): models of one label set, tokenizer and windows whose
            CRF potentials are averaged.
        ensemble_min_votes: How an ensemble decodes. 0: one Viterbi pass over the averaged potentials (emissions and
            transitions). N > 0: each member decodes with its own CRF and an entity is kept when at least N members
            predict it (type and both offsets); overlapping entities go to the one with more votes.

    A model type of its own: the auto classes map each config class to one model class, so with the single
    model's config an ensemble's folder would load as a single model (without its weights) in a process that
    had loaded a single model of the same code.
    """

    model_type = "bert_bilstm_crf_ensemble"

    def __init__(self, ensemble_members: list[dict] | None = None, ensemble_min_votes: int = 0, **kwargs):
        self.ensemble_members = ensemble_members or []
        self.ensemble_min_votes = ensemble_min_votes
        super().__init__(**kwargs)


# ----- Model -----


class BertBiLstmCrfPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading. The encoder is the attribute ``bert`` whatever its architecture
    (``base_model_prefix = "bert"``): the state-dict keys of every folder saved so far (``bert.embeddings...``)
    stay valid, and a checkpoint of another architecture loads by renaming its prefix (``electra.`` -> ``bert.``,
    ``brat_ner/encoders.py``); ``from_pretrained`` takes a plain encoder checkpoint's keys as the encoder's."""

    config_class = BertBiLstmCrfConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # ``forward`` takes **kwargs, from which the Trainer would infer that the loss is normalised by its
    # ``num_items_in_batch`` and skip dividing it by the gradient accumulation steps; the CRF loss is a mean.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        # The base class covers Linear (normal(0, initializer_range)), LSTM (xavier weights, zero biases),
        # embeddings and LayerNorm; the CRF's transitions are plain parameters it does not know.
        super()._init_weights(module)
        if isinstance(module, CRF):
            for param in (module.start_transitions, module.end_transitions, module.transitions):
                init.uniform_(param, -0.1, 0.1)
        elif isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)

    @torch.no_grad()
    def decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        crf_mask: torch.Tensor | None = None,
        return_marginals: bool = False,
        constrain_bio: bool | None = None,
    ) -> "CrfDecoderOutput":
        """``tags``: Viterbi tags (B, T), -100 where the CRF does not look; with ``return_marginals`` also
        ``marginals``, the CRF's posterior tag probabilities (B, T, num_labels), which are the unconstrained CRF's.

        ``crf_mask`` defaults to ``attention_mask`` without the ``config.cls_token_id`` /
        ``config.sep_token_id`` positions, matching labels that put -100 on [CLS], [SEP] and padding.
        ``constrain_bio`` overrides ``config.constrain_bio`` (see ``viterbi_tags``).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if crf_mask is None:
            crf_mask = self.default_crf_mask(input_ids, attention_mask)
        logits, tags = self._logits_and_tags(input_ids, attention_mask, token_type_ids, crf_mask, constrain_bio)
        marginals = self.crf.marginals(logits, crf_mask) if return_marginals else None
        return CrfDecoderOutput(tags=tags, marginals=marginals)

    def viterbi_tags(self, logits: torch.Tensor, crf_mask: torch.Tensor, constrain_bio: bool | None = None):
        """The CRF's Viterbi tags, restricted to valid BIO when ``constrain_bio`` (default
        ``config.constrain_bio``) is true."""
        if constrain_bio is None:
            constrain_bio = self.config.constrain_bio
        allowed = bio_transition_constraints(self.config.id2label) if constrain_bio else None
        return self.crf.viterbi_tags(logits, crf_mask, allowed)

    def default_crf_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The positions the CRF sees: not padding, not ``config.cls_token_id`` / ``config.sep_token_id``."""
        special = (input_ids == self.config.cls_token_id) | (input_ids == self.config.sep_token_id)
        return attention_mask.bool() & ~special

    def _logits_and_tags(self, input_ids, attention_mask, token_type_ids, crf_mask, constrain_bio):
        """The emissions the CRF's marginals are computed from, and the decoded tags."""
        logits = self(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
        return logits, self.viterbi_tags(logits, crf_mask, constrain_bio)


class BertBiLstmCrfForTokenClassification(BertBiLstmCrfPreTrainedModel):
    """BERT -> optional BiLSTM -> dropout -> linear emissions -> CRF."""

    def __init__(self, config: BertBiLstmCrfConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = _encoder(config)
        features = config.hidden_size
        self.bigram_embeddings = None
        if config.bigram_buckets:
            self.bigram_embeddings = nn.Embedding(config.bigram_buckets, config.bigram_embedding_size)
            features += 2 * config.bigram_embedding_size
        self.lstm = None
        if config.use_lstm:
            self.lstm = nn.LSTM(
                features,
                config.lstm_hidden_size,
                num_layers=config.lstm_layers,
                dropout=config.lstm_dropout if config.lstm_layers > 1 else 0.0,
                bidirectional=True,
                batch_first=True,
            )
            features = 2 * config.lstm_hidden_size
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(features, config.num_labels)
        self.crf = CRF(config.num_labels, batch_first=True)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        """Emission scores as ``logits``; with ``labels`` (-100 = invisible to the CRF) also ``loss``, the
        CRF negative log-likelihood averaged over sequences."""
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        if self.bigram_embeddings is not None:
            if input_ids is None:
                raise ValueError("bigram features (config.bigram_buckets) are computed from input_ids, "
                                 "not inputs_embeds")
            bigrams = self._bigram_features(input_ids, attention_mask)
            hidden = torch.cat([hidden, self.dropout(bigrams)], dim=-1)
        logits = self._emissions(hidden, attention_mask)
        loss = None
        if labels is not None:
            loss = -self.crf(logits, labels, mask=labels != -100, reduction="mean")
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def _bigram_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, 2 * bigram_embedding_size): the embeddings of the bigram ending and of the one starting at each
        position (``bigram_ids``)."""
        ending, starting = bigram_ids(input_ids, attention_mask, self.config.vocab_size, self.config.bigram_buckets)
        return torch.cat([self.bigram_embeddings(ending), self.bigram_embeddings(starting)], dim=-1)

    def _emissions(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.lstm is not None:
            hidden = self._bilstm(hidden, attention_mask)
        return self.classifier(self.dropout(hidden))

    def _bilstm(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """BiLSTM over the non-padding positions (packed; assumes right padding) in the LSTM's own dtype
        (float32 under autocast): a 512-step recurrence in bf16 accumulates rounding. At inference on the CPU it
        runs on one thread (``_one_cpu_thread``); training keeps the threads for its larger batches."""
        seq_len = hidden.shape[1]
        threads = _one_cpu_thread(hidden.device) if not torch.is_grad_enabled() else contextlib.nullcontext()
        with threads, torch.autocast(hidden.device.type, enabled=False):
            hidden = hidden.to(self.lstm.weight_ih_l0.dtype)
            lengths = None if attention_mask is None else attention_mask.sum(1).clamp(min=1).cpu()
            if lengths is None or bool((lengths == seq_len).all()):  # no padding: packing would only cost
                return self.lstm(hidden)[0]
            packed = nn.utils.rnn.pack_padded_sequence(hidden, lengths, batch_first=True, enforce_sorted=False)
            output = self.lstm(packed)[0]
            return nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=seq_len)[0]


@dataclass
class CrfDecoderOutput(ModelOutput):
    """What ``decode`` returns: ``tags`` (B, T), the Viterbi tags, -100 where the CRF does not look; ``marginals``
    (B, T, num_labels), the posterior tag probabilities, when asked for (``to_tuple()`` leaves them out otherwise)."""

    tags: torch.LongTensor | None = None
    marginals: torch.FloatTensor | None = None


class BertBiLstmCrfEnsembleForTokenClassification(BertBiLstmCrfPreTrainedModel):
    """Models of one label set, tokenizer and windows as one model: ``logits`` are the members' emissions averaged
    and ``crf`` holds their averaged transitions, so one Viterbi pass decodes the averaged CRF potentials and the
    pipeline's scores are that CRF's marginals. With ``config.ensemble_min_votes`` = N > 0, each member decodes
    with its own CRF instead and an entity is kept when N members predict it (``vote_tags``). Build one with
    ``from_members``; it saves and loads like any model of this file."""

    config_class = BertBiLstmCrfEnsembleConfig

    def __init__(self, config: BertBiLstmCrfEnsembleConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.members = nn.ModuleList(
            BertBiLstmCrfForTokenClassification(BertBiLstmCrfConfig(**member)) for member in config.ensemble_members)
        self.crf = CRF(config.num_labels, batch_first=True)
        self.post_init()

    @classmethod
    def from_members(cls, members: list["BertBiLstmCrfForTokenClassification"], min_votes: int = 0):
        """The ensemble of ``members`` (their weights copied), its CRF the mean of theirs."""
        configs = [member.config.to_dict() for member in members]
        for name in ("id2label", "window_chars", "context_chars", "skip_blanks", "cls_token_id", "sep_token_id"):
            values = [config.get(name) for config in configs]
            if any(value != values[0] for value in values):
                raise ValueError(f"the members differ in {name}: an ensemble's members must share it")
        if not 0 <= min_votes <= len(members):
            raise ValueError(f"min_votes must be between 0 and the number of members ({len(members)}), got {min_votes}")
        shared = {key: value for key, value in configs[0].items()
                  if key not in ("auto_map", "architectures", "model_type")}
        config = BertBiLstmCrfEnsembleConfig(**shared, ensemble_members=configs, ensemble_min_votes=min_votes)
        ensemble = cls(config)
        with torch.no_grad():
            for mine, member in zip(ensemble.members, members):
                mine.load_state_dict(member.state_dict())
            for name, parameter in ensemble.crf.named_parameters():
                parameter.copy_(torch.stack([member.crf.get_parameter(name).float() for member in members]).mean(0))
        return ensemble.eval()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        """The members' emissions averaged as ``logits``; with ``labels`` also ``loss``, the averaged CRF's
        negative log-likelihood."""
        logits = self.member_emissions(input_ids, attention_mask, token_type_ids).mean(dim=2)
        loss = None if labels is None else -self.crf(logits, labels, mask=labels != -100, reduction="mean")
        return TokenClassifierOutput(loss=loss, logits=logits)

    def member_emissions(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """(B, T, members, num_labels): each member's emission scores."""
        return torch.stack([member(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
                            for member in self.members], dim=2)

    def vote_tags(self, member_logits: torch.Tensor, crf_mask: torch.Tensor, constrain_bio: bool | None = None):
        """(B, T) BIO tags of the entities that at least ``config.ensemble_min_votes`` members predict (type and
        both ends), each member decoding its own emissions (``member_logits``, B x T x members x labels) with its
        own CRF; of overlapping entities, the one with more votes (then the earlier, then the longer) is kept.
        -100 where the CRF does not look, as ``viterbi_tags``."""
        if constrain_bio is None:
            constrain_bio = self.config.constrain_bio
        votes = [{} for _ in range(member_logits.shape[0])]
        for index, member in enumerate(self.members):
            tags = member.viterbi_tags(member_logits[:, :, index], crf_mask, constrain_bio)
            for row, row_tags in enumerate(tags.tolist()):
                names = [self.config.id2label[tag] for tag in row_tags if tag != -100]
                for span in bio_to_spans(names):
                    votes[row][span] = votes[row].get(span, 0) + 1
        tags = torch.full(crf_mask.shape, -100, dtype=torch.long, device=crf_mask.device)
        for row, row_votes in enumerate(votes):
            visible = crf_mask[row].nonzero().squeeze(1)
            row_tags = torch.full((len(visible),), self.config.label2id["O"], dtype=torch.long)
            for entity_type, start, end in _winning_spans(row_votes, self.config.ensemble_min_votes):
                row_tags[start] = self.config.label2id[f"B-{entity_type}"]
                row_tags[start + 1 : end] = self.config.label2id[f"I-{entity_type}"]
            tags[row, visible] = row_tags.to(tags.device)
        return tags

    def _logits_and_tags(self, input_ids, attention_mask, token_type_ids, crf_mask, constrain_bio):
        member_logits = self.member_emissions(input_ids, attention_mask, token_type_ids)
        logits = member_logits.mean(dim=2)
        if self.config.ensemble_min_votes:
            return logits, self.vote_tags(member_logits, crf_mask, constrain_bio)
        return logits, self.viterbi_tags(logits, crf_mask, constrain_bio)


def _winning_spans(votes: dict[tuple[str, int, int], int], min_votes: int) -> list[tuple[str, int, int]]:
    """The spans with at least ``min_votes`` votes, none overlapping: more votes first, then earlier, then longer."""
    kept, taken = [], set()
    ranked = sorted(votes.items(), key=lambda item: (-item[1], item[0][1], item[0][1] - item[0][2]))
    for (entity_type, start, end), count in ranked:
        if count >= min_votes and not taken.intersection(range(start, end)):
            kept.append((entity_type, start, end))
            taken.update(range(start, end))
    return kept


def _encoder(config: BertBiLstmCrfConfig) -> PreTrainedModel:
    """The encoder the config describes, with random weights (``from_pretrained`` loads them afterwards), without
    a pooler: the head reads every position's output, never the pooled [CLS] (a pooler would be weights that
    are never trained, and missing from every folder saved so far)."""
    if config.encoder is None:
        return BertModel(config, add_pooling_layer=False)
    encoder_config = config.encoder_config()
    encoder = AutoModel.from_config(encoder_config, attn_implementation=_attention(config, encoder_config))
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


def _attention(config: BertBiLstmCrfConfig, encoder_config) -> str | None:
    """The attention the model was asked for (``attn_implementation``), or the encoder's default (eager) where its
    architecture has no such implementation (sdpa, the default of train.py, is missing from RoFormer and
    MegatronBERT): the same numbers, computed another way."""
    requested = config._attn_implementation
    encoder_class = AutoModel._model_mapping[type(encoder_config)]
    supported = {"sdpa": encoder_class._supports_sdpa, "flash_attention_2": encoder_class._supports_flash_attn,
                 "flex_attention": encoder_class._supports_flex_attn}
    return requested if supported.get(requested, True) else None


def bigram_ids(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, vocab_size: int, buckets: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bucket of the bigram ending at each position (with the id before; the first position pairs with
    itself) and of the bigram starting there (the last position before the padding, or the end, pairs with
    itself, so padding never changes a feature), for (B, T) ``input_ids``. A bigram (a, b) is hashed to
    (a * vocab_size + b) mod buckets: distinct for each b given a when buckets >= vocab_size, so collisions are
    between unrelated pairs."""
    before = torch.cat([input_ids[:, :1], input_ids[:, :-1]], dim=1)
    after = torch.cat([input_ids[:, 1:], input_ids[:, -1:]], dim=1)
    if attention_mask is not None:
        next_is_text = torch.cat([attention_mask[:, 1:], torch.zeros_like(attention_mask[:, :1])], dim=1).bool()
        after = torch.where(next_is_text, after, input_ids)
    return (before * vocab_size + input_ids) % buckets, (input_ids * vocab_size + after) % buckets


def bio_transition_constraints(id2label: dict[int, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(start_allowed (K,), transition_allowed (K, K)) of valid BIO: an ``I-X`` may only follow ``B-X`` or
    ``I-X``, so it can neither start a sequence nor follow ``O`` or another type's tag. Labels of another form
    are unconstrained."""
    labels = [id2label[index] for index in range(len(id2label))]
    continues = [label[2:] if label.startswith("I-") else None for label in labels]
    entity = [label[2:] if label[:2] in ("B-", "I-") else None for label in labels]
    start_allowed = torch.tensor([kind is None for kind in continues])
    transition_allowed = torch.tensor([[continues[j] is None or continues[j] == entity[i] for j in range(len(labels))]
                                       for i in range(len(labels))])
    return start_allowed, transition_allowed


BertBiLstmCrfConfig.register_for_auto_class("AutoConfig")
BertBiLstmCrfForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
BertBiLstmCrfEnsembleConfig.register_for_auto_class("AutoConfig")
BertBiLstmCrfEnsembleForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")

# ----- Text <-> model positions: characters, windows, BIO tags, spans -----
#
# One model position per character (or per non-blank character, with ``skip_blanks``), so that an entity's first
# and last characters are positions of their own and offsets survive text -> tags -> text exactly. These pieces
# are shared by the dataset builder, training, predict.py and the pipeline below; they live in this file because
# it travels alone to the Hub.

WHITESPACE_TOKEN = "[unused1]"
"""Every blank character (see ``is_blank``) is fed as this one vocabulary entry. Whitespace is 14% of the Ruijin
corpus and sits inside entities that cross line breaks, where it is tagged ``I-X`` like its neighbours: fed as a
position of its own, or (``skip_blanks``) given none and tagged from its neighbours afterwards, never dropped from
the offsets as BERT's tokenizer drops it."""


def is_blank(character: str) -> bool:
    """Whitespace (space, line break, tab, ideographic space ...) or an invisible format character (Unicode
    category Cf: byte-order mark, zero-width space, joiners, soft hyphen): no text of its own, so it is fed as
    ``WHITESPACE_TOKEN`` rather than as an unknown character, and never starts or ends a predicted entity."""
    return character.isspace() or unicodedata.category(character) == "Cf"


# Where a window may end, best first (``split_into_windows``). Prediction knows no entities: sentence ends, then
# clause separators, then line breaks, which in text extracted from PDFs (the Ruijin corpus) wrap lines inside
# words (2% of its entities cross one; 0.03% cross a cut made this way).
PREDICTION_CUTS = (frozenset("。！？；!?;"), frozenset("，,、"), frozenset("\n"))


class CharacterEncoder:
    """Vocabulary ids for characters, exactly one per character fed to the model.

    A character is fed as itself, else as its lower case (bert-base-chinese has Latin letters in lower case
    only), else as its NFKC form in lower case (full-width ``Ａ１`` -> ``a1``), each only if that is one
    character of the vocabulary, else as the unknown token; blanks (``is_blank``) as ``WHITESPACE_TOKEN``, or,
    with ``skip_blanks`` (the model config's), not at all. Ids are memoised per character: a corpus has millions
    of characters but only a few thousand distinct ones.
    """

    def __init__(self, tokenizer, skip_blanks: bool = False):
        self.vocab = tokenizer.get_vocab()
        self.unk_token = tokenizer.unk_token
        self.cls_token_id = tokenizer.cls_token_id
        self.sep_token_id = tokenizer.sep_token_id
        self.skip_blanks = skip_blanks
        self._ids: dict[str, int] = {}

    def fed(self, characters) -> list[str]:
        """The characters that get a model position: all of them, or all but the blanks with ``skip_blanks``."""
        return [character for character in characters if not (self.skip_blanks and is_blank(character))]

    def token(self, character: str) -> str:
        if is_blank(character):
            return WHITESPACE_TOKEN
        for candidate in (character, character.lower(), unicodedata.normalize("NFKC", character).lower()):
            if len(candidate) == 1 and candidate in self.vocab:
                return candidate
        return self.unk_token

    def ids(self, characters) -> list[int]:
        ids = self._ids
        for character in set(characters) - ids.keys():
            ids[character] = self.vocab[self.token(character)]
        return [ids[character] for character in characters]

    def window_ids(self, characters, context_before="", context_after="") -> list[int]:
        """Model input of a window: [CLS], one id per fed character (``fed``) of the context before, the window
        and the context after, [SEP]."""
        before, window, after = self.fed(context_before), self.fed(characters), self.fed(context_after)
        return [self.cls_token_id, *self.ids(before), *self.ids(window), *self.ids(after), self.sep_token_id]


def check_window_fits(window_chars: int, max_position_embeddings: int, name: str = "window_chars") -> None:
    """A window is fed as [CLS] + its characters + [SEP]: refuse one the encoder has no positions for, before
    BERT fails on it deep inside a batch."""
    if not 1 <= window_chars <= max_position_embeddings - 2:
        raise ValueError(f"{name} must be between 1 and {max_position_embeddings - 2} (the encoder has "
                         f"{max_position_embeddings} positions, two of them for [CLS] and [SEP]), got {window_chars}")


def split_into_windows(text: str, window_chars: int, spans=(), cuts=PREDICTION_CUTS) -> list[tuple[int, int]]:
    """(start, end) windows that cover ``text`` exactly once, in order, each at most ``window_chars`` long.

    A window ends after the last character of the first of the ``cuts`` sets that it can reach (best first:
    ``PREDICTION_CUTS``, or the dataset builder's ``TRAINING_CUTS``), else at the last position it can reach. It
    never ends inside one of the ``(start, end)`` ``spans`` (the entities of a training document) unless a span is
    longer than a window, when the cut is unavoidable (the dataset builder counts such cuts).
    """
    if window_chars < 1:
        raise ValueError(f"window_chars must be positive, got {window_chars}")
    blocked = bytearray(len(text) + 1)  # blocked[c]: a cut before character c would split a span
    for start, end in spans:
        end = min(end, len(text))
        blocked[start + 1 : end] = b"\x01" * max(end - start - 1, 0)
    windows, start = [], 0
    while start < len(text):
        limit = min(start + window_chars, len(text))
        windows.append((start, limit if limit == len(text) else _best_cut(text, start, limit, blocked, cuts)))
        start = windows[-1][1]
    return windows


def window_context(text: str, start: int, end: int, context_chars: int) -> tuple[str, str]:
    """Up to ``context_chars`` characters of ``text`` before ``start`` and after ``end``: what the encoder sees
    around the window ``text[start:end]`` (fewer at the ends of the text)."""
    return text[max(start - context_chars, 0) : start], text[end : end + context_chars]


def _best_cut(text: str, start: int, limit: int, blocked: bytearray, cuts) -> int:
    allowed = [cut for cut in range(limit, start, -1) if not blocked[cut]]
    for ends in cuts:
        for cut in allowed:
            if text[cut - 1] in ends:
                return cut
    return allowed[0] if allowed else limit


def tags_with_blanks(text: str, tags: list[str]) -> tuple[list[str], list[int]]:
    """Per-character tags of ``text`` from the tags of its non-blank characters (a ``skip_blanks`` model's
    output), and for each character the index of the tag it took: a blank between two characters of one entity
    (the one after it tagged ``I-X``, continuing the one before it) is ``I-X`` and takes the tag after it, any
    other blank is ``O`` (index -1). Entities then read as the model meant them: an entity never begins or ends
    on a blank."""
    blanks = [is_blank(character) for character in text]
    if len(blanks) - sum(blanks) != len(tags):
        raise ValueError(f"{len(tags)} tags for {len(blanks) - sum(blanks)} non-blank characters")
    full, source, position = [], [], 0
    for blank in blanks:
        if not blank:
            full.append(tags[position])
            source.append(position)
            position += 1
            continue
        after = tags[position] if position < len(tags) else "O"
        before = full[-1] if full else "O"
        inside = after.startswith("I-") and before[2:] == after[2:] and before != "O"
        full.append(after if inside else "O")
        source.append(position if inside else -1)
    return full, source


def bio_to_spans(tags, offset: int = 0) -> list[tuple[str, int, int]]:
    """``(type, start + offset, end + offset)`` spans of BIO tags, end exclusive. An ``I-X`` that continues no
    ``X`` entity starts one, as seqeval's default mode reads it."""
    spans, current = [], None  # current: [type, start] of the open entity
    for position, tag in enumerate([*tags, "O"]):
        prefix, entity_type = tag[:2], tag[2:]
        if current and (prefix != "I-" or entity_type != current[0]):
            spans.append((current[0], current[1] + offset, position + offset))
            current = None
        if prefix == "B-" or (prefix == "I-" and current is None):
            current = [entity_type, position]
    return spans

def brat_annotations(text: str, entities: list[dict], confidence: bool = False) -> str:
    """The brat .ann text of a text's entities (the pipeline's dicts): one ``T`` line per entity, split into
    fragments at line breaks (brat's rule, kept by the Ruijin corpus); with ``confidence``,
    each followed by an ``AnnotatorNotes`` line holding the entity's score (brat shows it on the entity)."""
    lines = []
    for number, entity in enumerate(entities, start=1):
        fragments = line_fragments(text, entity["start"], entity["end"])
        offsets = ";".join(f"{start} {end}" for start, end in fragments)
        covered = " ".join(text[start:end] for start, end in fragments)
        lines.append(f"T{number}\t{entity['entity_group']} {offsets}\t{covered}\n")
        if confidence:
            lines.append(f"#{number}\tAnnotatorNotes T{number}\tconfidence {entity['score']:.2f}\n")
    return "".join(lines)


def line_fragments(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) pieces of ``text[start:end]`` between line-break characters."""
    fragments, fragment_start = [], start
    for position in range(start, end):
        if text[position] in "\r\n":
            if position > fragment_start:
                fragments.append((fragment_start, position))
            fragment_start = position + 1
    if end > fragment_start:
        fragments.append((fragment_start, end))
    return fragments



# ----- Pipeline -----


class BertBiLstmCrfNerPipeline(ChunkPipeline):
    """Token classification that returns the CRF's Viterbi entities with character offsets into the input.

    The standard token-classification pipeline takes the argmax of each token's logits, which is not what a
    CRF model predicts. This one splits each text into windows of ``config.window_chars`` characters (as in
    training), feeds one model position per character (per non-blank character with ``config.skip_blanks``, the
    blanks then tagged from their neighbours), decodes each window with the CRF and reads the BIO tags back into
    entities. With ``config.context_chars`` (or the ``context_chars`` parameter), each window is
    fed with up to that many characters of the text before and after it, which the CRF does not decode: every
    character is decoded once, from the window it belongs to. ``constrain_bio=True/False`` overrides
    ``config.constrain_bio`` (valid-BIO Viterbi) for comparing the two on one model. Registered as the model's
    ``token-classification`` pipeline, so ``pipeline("token-classification", model=..., trust_remote_code=True)``
    returns it.

    Each entity is ``{"entity_group", "score", "word", "start", "end"}`` (``end`` exclusive) with the
    aggregation ``"simple"`` (the default), or one entry per tagged character (``"entity"``, ``"index"``)
    with ``"none"``. ``score`` is the CRF's posterior marginal probability of the predicted tags, averaged
    over the entity's characters. Predicted entities are trimmed of leading and trailing blanks (whitespace and
    invisible format characters, ``is_blank``; a blank-only one is dropped): blanks are tagged inside entities,
    never at their edges.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    emission_network = None
    """Replaces the model's emission network when set: a callable from the ids of a batch of windows of one
    length, no padding, to their logits (e.g. an ONNX Runtime session, ``fast_inference.py``). The CRF always
    runs here, in torch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.character_encoder = CharacterEncoder(self.tokenizer, self.model.config.skip_blanks)

    def _sanitize_parameters(self, aggregation_strategy=None, window_chars=None, context_chars=None,
                             constrain_bio=None, **kwargs):
        config = self.model.config
        if window_chars is not None or context_chars is not None:
            if context_chars is not None and context_chars < 0:
                raise ValueError(f"context_chars must not be negative, got {context_chars}")
            window = config.window_chars if window_chars is None else window_chars
            context = config.context_chars if context_chars is None else context_chars
            name = "window_chars + 2 * context_chars" if context else "window_chars"
            check_window_fits(window + 2 * context, config.max_position_embeddings, name)
        preprocess_params = {"window_chars": window_chars} if window_chars else {}
        if context_chars is not None:
            preprocess_params["context_chars"] = context_chars
        forward_params = {"constrain_bio": constrain_bio} if constrain_bio is not None else {}
        postprocess_params = {"aggregation_strategy": aggregation_strategy} if aggregation_strategy else {}
        if aggregation_strategy not in (None, "simple", "none"):
            raise ValueError(f"aggregation_strategy must be 'simple' or 'none', not {aggregation_strategy!r}")
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, text, window_chars=None, context_chars=None):
        if not isinstance(text, str):
            raise ValueError(f"this pipeline takes strings, got {type(text).__name__}")
        config = self.model.config
        context_chars = config.context_chars if context_chars is None else context_chars
        windows = split_into_windows(text, window_chars or config.window_chars) or [(0, 0)]
        for index, (start, end) in enumerate(windows):
            before, after = window_context(text, start, end, context_chars)
            input_ids = torch.tensor([self.character_encoder.window_ids(text[start:end], before, after)])
            # The CRF decodes the window's own characters only: not [CLS], [SEP] or the context.
            crf_mask = torch.zeros_like(input_ids, dtype=torch.bool)
            first = 1 + len(self.character_encoder.fed(before))
            crf_mask[0, first : first + len(self.character_encoder.fed(text[start:end]))] = True
            yield {
                "input_ids": input_ids,
                "attention_mask": torch.ones_like(input_ids),
                "crf_mask": crf_mask,
                "window": text[start:end],
                "offset": start,
                "is_last": index == len(windows) - 1,
            }

    def _forward(self, model_inputs, constrain_bio=None):
        window, offset, is_last = model_inputs.pop("window"), model_inputs.pop("offset"), model_inputs.pop("is_last")
        input_ids, attention_mask = model_inputs["input_ids"], model_inputs["attention_mask"]
        crf_mask = model_inputs["crf_mask"]
        if getattr(self.model.config, "ensemble_min_votes", 0):  # an ensemble that votes: each member's emissions
            member_logits = self._emissions_by_length(input_ids, attention_mask, self.model.member_emissions)
            tags = self.model.vote_tags(member_logits, crf_mask, constrain_bio)
            logits = member_logits.mean(dim=2)
        else:
            logits = self._emissions_by_length(input_ids, attention_mask)
            tags = self.model.viterbi_tags(logits, crf_mask, constrain_bio)
        marginals = self.model.crf.marginals(logits, crf_mask)
        return {"tags": tags, "marginals": marginals, "window": window, "offset": offset, "is_last": is_last}

    def _emissions_by_length(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, network=None):
        """Logits of a right-padded batch, computed for each window length separately without padding (zeros
        at padding): no encoder work on padding, no packed BiLSTM, and an emission network that needs no mask.
        ``network``: the model's (or ``emission_network``'s) emissions unless given."""
        network = network or self.emission_network or self._model_emissions
        lengths = attention_mask.sum(1)
        if bool((lengths == input_ids.shape[1]).all()):
            return network(input_ids)
        logits = None
        for length in lengths.unique().tolist():
            rows = (lengths == length).nonzero().squeeze(1)
            group = network(input_ids[rows, :length])
            if logits is None:
                logits = group.new_zeros((*input_ids.shape, *group.shape[2:]))
            logits[rows, :length] = group
        return logits

    def _model_emissions(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits

    def postprocess(self, all_outputs, aggregation_strategy="simple"):
        id2label = self.model.config.id2label
        entities = []
        for output in all_outputs:
            visible = output["tags"][0] != -100
            tags = output["tags"][0][visible]
            scores = output["marginals"][0][visible].gather(1, tags.unsqueeze(1)).squeeze(1).tolist()
            window, offset = output["window"], output["offset"]
            names = [id2label[tag] for tag in tags.tolist()]
            if self.model.config.skip_blanks:  # back to one tag per character
                names, sources = tags_with_blanks(window, names)
                # A blank inside an entity has the score of the tag it took; one outside (O) is never reported.
                scores = [scores[source] if source >= 0 else 1.0 for source in sources]
            if aggregation_strategy == "none":
                entities += [
                    {"entity": name, "score": score, "index": offset + i, "word": window[i],
                     "start": offset + i, "end": offset + i + 1}
                    for i, (name, score) in enumerate(zip(names, scores)) if name != "O"
                ]
                continue
            for entity_type, start, end in _strip_blanks(window, bio_to_spans(names)):
                entities.append({
                    "entity_group": entity_type,
                    "score": sum(scores[start:end]) / (end - start),
                    "word": window[start:end],
                    "start": offset + start,
                    "end": offset + end,
                })
        return entities


def _strip_blanks(text: str, spans):
    """Spans without leading or trailing blanks (``is_blank``); blank-only spans are left out."""
    for entity_type, start, end in spans:
        while start < end and is_blank(text[start]):
            start += 1
        while end > start and is_blank(text[end - 1]):
            end -= 1
        if start < end:
            yield entity_type, start, end
