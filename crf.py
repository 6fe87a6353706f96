"""A linear-chain conditional random field (CRF), pytorch-crf style: ``CRF`` is a drop-in, faster replacement for
pytorch-crf's ``torchcrf.CRF`` (same parameter names and interface, log-likelihood from ``forward``, Viterbi paths
from ``decode``) that also accepts masks with holes, and gives tensors of tags (``viterbi_tags``), posterior
marginals and expected counts. Imports torch only; it travels in every model folder beside the model's code.

Shapes (batch first; ``batch_first=False`` swaps the first two): emissions (B, T, K) of K tags, tags and mask
(B, T), transitions (K, K) with ``transitions[i, j]`` the score of tag i followed by tag j, start and end (K).
"""

import contextlib
import math

import torch
from torch import nn

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
def one_cpu_thread(device: torch.device):
    """Run a CPU recurrence (BiLSTM, CRF sweeps) on one thread. Each of its hundreds of steps is a few small
    matrix products, too little to share between threads, and every step waits at a barrier for all of them: a
    thread that another process has pushed off its core stalls every step (docs/experiments.md, "Figures behind
    the code's choices")."""
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
                with one_cpu_thread(emissions.device):
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
                with one_cpu_thread(emissions.device):
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
