"""The project's CRF against pytorch-crf, brute force and gradcheck, on the CPU.

Both implementations of each algorithm are checked here: the sequential ones (used on the CPU) and the GPU
ones (log-semiring product tree, chunked Viterbi), which the ``parallel_algorithms`` fixture selects on the CPU.
"""

import itertools

import pytest
import torch
import torchcrf

import crf as crf_module
from crf import CRF

NUM_TAGS = 5


def make_pair(num_tags=NUM_TAGS, seed=0, batch_first=True, scale=1.0):
    torch.manual_seed(seed)
    reference = torchcrf.CRF(num_tags, batch_first=batch_first)
    for param in reference.parameters():
        torch.nn.init.normal_(param, std=scale)
    crf = CRF(num_tags, batch_first=batch_first)
    crf.load_state_dict(reference.state_dict())
    return crf, reference


def random_batch(batch, seq_len, num_tags, seed=0, min_len=1):
    generator = torch.Generator().manual_seed(seed)
    emissions = torch.randn(batch, seq_len, num_tags, generator=generator)
    tags = torch.randint(num_tags, (batch, seq_len), generator=generator)
    lengths = torch.randint(min_len, seq_len + 1, (batch,), generator=generator)
    lengths[0] = seq_len
    mask = torch.arange(seq_len) < lengths.unsqueeze(1)
    return emissions, tags, mask


def brute_force_log_partition(crf, emissions, mask):
    """logsumexp over all tag sequences of the visible positions of one sequence."""
    visible = emissions[mask]
    if len(visible) == 0:
        return torch.tensor(0.0, dtype=emissions.dtype)
    scores = []
    for path in itertools.product(range(crf.num_tags), repeat=len(visible)):
        score = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
        score = score + sum(visible[t, tag] for t, tag in enumerate(path))
        score = score + sum(crf.transitions[a, b] for a, b in zip(path, path[1:]))
        scores.append(score)
    return torch.logsumexp(torch.stack(scores), 0)


def partitions(crf, emissions, mask, tree):
    """log Z per sequence through the module's compaction and the chosen implementation."""
    order, _, compact_mask = crf_module._compact(mask, trim=not tree)
    compact = crf_module._gather_time(emissions, order)
    function = crf_module._log_partition_tree if tree else crf_module._log_partition_sequential
    params = [p.to(emissions.dtype) for p in crf._float_params()]
    return function(compact, compact_mask, *params)


# ----- Agreement with pytorch-crf -----


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("seq_len", [1, 2, 17, 64])
def test_matches_torchcrf_llh_grad_and_paths(batch_first, seq_len):
    crf, reference = make_pair(num_tags=7, seed=seq_len, batch_first=batch_first)
    emissions, tags, mask = random_batch(6, seq_len, 7, seed=seq_len)
    if not batch_first:
        emissions, tags, mask = emissions.transpose(0, 1), tags.transpose(0, 1), mask.transpose(0, 1)
    emissions.requires_grad_(True)
    for reduction in ("none", "sum", "mean", "token_mean"):
        ours = crf(emissions, tags, mask, reduction=reduction)
        theirs = reference(emissions, tags, mask, reduction=reduction)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    inputs, reference_inputs = [emissions, *crf.parameters()], [emissions, *reference.parameters()]
    ours_grads = torch.autograd.grad(crf(emissions, tags, mask, "sum"), inputs, allow_unused=True)
    their_grads = torch.autograd.grad(reference(emissions, tags, mask, "sum"), reference_inputs, allow_unused=True)
    for ours_grad, their_grad, value in zip(ours_grads, their_grads, inputs):
        # pytorch-crf leaves the transitions out of the graph for one-step sequences.
        zeros = torch.zeros_like(value)
        ours_grad = zeros if ours_grad is None else ours_grad
        their_grad = zeros if their_grad is None else their_grad
        # Summed float32 marginals: both sides are ~1e-4 relative away from a float64 computation.
        torch.testing.assert_close(ours_grad, their_grad, rtol=1e-3, atol=1e-3)
    assert crf.decode(emissions, mask) == reference.decode(emissions, mask)


def test_realistic_shape_matches_torchcrf():
    crf, reference = make_pair(num_tags=31, seed=3, scale=0.5)
    emissions, tags, mask = random_batch(8, 256, 31, seed=3, min_len=100)
    ours, theirs = crf(emissions, tags, mask, "none"), reference(emissions, tags, mask, "none")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=0)
    assert crf.decode(emissions, mask) == reference.decode(emissions, mask)


@pytest.fixture
def parallel_algorithms(monkeypatch):
    """Make the CRF use its GPU algorithms (product tree, chunked Viterbi) on CPU tensors."""
    monkeypatch.setattr(crf_module, "_parallel_over_time", lambda emissions: True)


@pytest.mark.parametrize("seq_len", [1, 2, 3, 10, 77, 300])
def test_gpu_algorithms_match_on_cpu(parallel_algorithms, seq_len):
    """Log-likelihood, its gradient and the Viterbi paths of the GPU algorithms equal pytorch-crf's."""
    crf, reference = make_pair(num_tags=31, seed=seq_len)
    emissions, tags, mask = random_batch(5, seq_len, 31, seed=seq_len)
    emissions.requires_grad_(True)
    ours = crf(emissions, tags, mask, reduction="none")
    theirs = reference(emissions, tags, mask, reduction="none")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    ours_grad = torch.autograd.grad(ours.sum(), emissions)[0]
    their_grad = torch.autograd.grad(theirs.sum(), emissions)[0]
    torch.testing.assert_close(ours_grad, their_grad, rtol=1e-3, atol=1e-4)
    assert crf.decode(emissions, mask) == reference.decode(emissions, mask)


def test_gpu_algorithms_with_holes_match_the_cpu_ones(monkeypatch):
    crf, _ = make_pair(num_tags=31, seed=4)
    emissions, tags, mask = random_batch(5, 77, 31, seed=4)
    mask[2, :10] = False
    mask[3, 20:30] = False
    mask[4] = False
    results = []
    for parallel in (False, True):
        monkeypatch.setattr(crf_module, "_parallel_over_time", lambda emissions: parallel)
        results.append((crf(emissions, tags, mask, reduction="none"), crf.viterbi_tags(emissions, mask)))
    (sequential_llh, sequential_paths), (parallel_llh, parallel_paths) = results
    torch.testing.assert_close(parallel_llh, sequential_llh, rtol=1e-5, atol=1e-4)
    assert torch.equal(parallel_paths, sequential_paths)
    assert (parallel_paths[4] == -100).all() and parallel_llh[4] == 0


def count_dispatched_ops(function) -> int:
    """ATen operations ``function`` dispatches, views left out: on a GPU, about the number of kernel launches."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counter.count += not func.is_view
            return func(*args, **(kwargs or {}))

    with Counter():
        function()
    return Counter.count


@pytest.mark.parametrize("parallel", [False, True])
def test_gpu_algorithms_need_few_kernel_launches(monkeypatch, parallel):
    """At B=32, T=512, K=31 a loop over time costs several launches per position; the GPU algorithms far fewer."""
    monkeypatch.setattr(crf_module, "_parallel_over_time", lambda emissions: parallel)
    crf, _ = make_pair(num_tags=31, seed=11)
    emissions, tags, mask = random_batch(32, 512, 31, seed=11, min_len=256)
    emissions.requires_grad_(True)

    def log_likelihood_forward_backward():
        crf(emissions, tags, mask).backward()

    llh_ops = count_dispatched_ops(log_likelihood_forward_backward)
    viterbi_ops = count_dispatched_ops(lambda: crf.viterbi_tags(emissions, mask))
    if parallel:
        assert llh_ops < 600 and viterbi_ops < 250, (llh_ops, viterbi_ops)
    else:  # the CPU algorithms loop over time: what the counts above are compared with
        assert llh_ops > 4 * 511 and viterbi_ops > 4 * 511, (llh_ops, viterbi_ops)


def test_a_torchcrf_state_dict_loads_and_then_scores_and_decodes_as_torchcrf():
    """pytorch-crf's parameter names are ours: its state dict loads into a CRF of its own (uniform) initialisation,
    which then gives pytorch-crf's log-likelihood and paths, as it did not before loading."""
    torch.manual_seed(0)
    reference = torchcrf.CRF(NUM_TAGS, batch_first=True)
    for param in reference.parameters():
        torch.nn.init.normal_(param, std=2.0)  # far from CRF's own uniform(-0.1, 0.1) start
    crf = CRF(NUM_TAGS, batch_first=True)
    assert set(crf.state_dict()) == set(reference.state_dict())
    emissions, tags, mask = random_batch(4, 9, NUM_TAGS, seed=3)
    expected = reference(emissions, tags, mask, reduction="none")
    assert not torch.allclose(crf(emissions, tags, mask, reduction="none"), expected)
    crf.load_state_dict(reference.state_dict())
    torch.testing.assert_close(crf(emissions, tags, mask, reduction="none"), expected)
    assert crf.decode(emissions, mask) == reference.decode(emissions, mask)


def test_default_mask_and_validation():
    crf, reference = make_pair()
    emissions, tags, _ = random_batch(3, 5, NUM_TAGS)
    torch.testing.assert_close(crf(emissions, tags), reference(emissions, tags, reduction="mean"))
    with pytest.raises(ValueError):
        crf(emissions, tags, reduction="bogus")
    with pytest.raises(ValueError):
        crf(emissions[..., :2], tags)


# ----- Exactness beyond pytorch-crf: brute force, holes, empty sequences, gradients -----


@pytest.mark.parametrize("tree", [False, True])
@pytest.mark.parametrize("seq_len,num_tags", [(1, 2), (2, 3), (3, 4), (4, 4), (4, 2)])
def test_log_partition_brute_force_with_holes(tree, seq_len, num_tags):
    crf, _ = make_pair(num_tags=num_tags, seed=seq_len * 10 + num_tags)
    crf.double()
    emissions = torch.randn(2 ** seq_len, seq_len, num_tags, dtype=torch.float64)
    # Every visibility pattern, including holes, an invisible start and no visible position at all.
    mask = torch.tensor(list(itertools.product([True, False], repeat=seq_len)))
    got = partitions(crf, emissions, mask, tree=tree)
    expected = torch.stack([brute_force_log_partition(crf, e, m) for e, m in zip(emissions, mask)])
    nonempty = mask.any(1)
    torch.testing.assert_close(got[nonempty], expected[nonempty])


def test_holes_equal_removed_columns():
    """Masked positions anywhere are skipped: same llh and path as the sequence without those columns."""
    crf, _ = make_pair(num_tags=6, seed=5)
    emissions, tags, _ = random_batch(4, 9, 6, seed=5)
    mask = torch.ones(4, 9, dtype=torch.bool)
    mask[0, 0] = mask[1, 4] = mask[1, 5] = mask[2, 8] = mask[3, 0] = mask[3, 3] = mask[3, 7] = False
    tags_with_ignored = tags.masked_fill(~mask, -100)
    llh = crf(emissions, tags_with_ignored, mask, reduction="none")
    paths = crf.decode(emissions, mask)
    for row in range(4):
        kept = mask[row]
        alone = crf(emissions[row, kept][None], tags[row, kept][None], reduction="none")
        torch.testing.assert_close(llh[row : row + 1], alone)
        assert paths[row] == crf.decode(emissions[row, kept][None])[0]
    padded = crf.viterbi_tags(emissions, mask)
    assert (padded[~mask] == -100).all()
    assert [row[m].tolist() for row, m in zip(padded, mask)] == paths


def test_sequence_without_visible_positions():
    crf, _ = make_pair()
    emissions, tags, _ = random_batch(3, 6, NUM_TAGS)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1] = False
    emissions.requires_grad_(True)
    llh = crf(emissions, tags, mask, reduction="none")
    assert llh[1].item() == 0.0
    assert crf.decode(emissions, mask)[1] == []
    llh.sum().backward()
    assert (emissions.grad[1] == 0).all() and torch.isfinite(emissions.grad).all()
    all_masked = torch.zeros(2, 4, dtype=torch.bool)
    assert crf(emissions[:2, :4], tags[:2, :4], all_masked).item() == 0.0
    assert crf.decode(emissions[:2, :4], all_masked) == [[], []]


@pytest.mark.parametrize("tree", [False, True])
def test_gradcheck_float64(tree):
    crf, _ = make_pair(num_tags=4, seed=6)
    emissions = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 0, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    params = [p.detach().double().requires_grad_(True) for p in crf._float_params()]
    order, _, compact_mask = crf_module._compact(mask, trim=not tree)
    function = crf_module._log_partition_tree if tree else crf_module._log_partition_sequential

    def log_partition(emissions, start, end, transitions):
        compact = crf_module._gather_time(emissions, order)
        return function(compact, compact_mask, start, end, transitions)

    assert torch.autograd.gradcheck(log_partition, (emissions, *params))


def test_gradcheck_full_log_likelihood():
    crf, _ = make_pair(num_tags=3, seed=7)
    crf.double()
    emissions = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    tags = torch.randint(3, (2, 4))
    mask = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)

    def llh(emissions, start, end, transitions):
        return torch.func.functional_call(
            crf, {"start_transitions": start, "end_transitions": end, "transitions": transitions},
            (emissions, tags, mask), {"reduction": "sum"})

    params = [p.detach().clone().requires_grad_(True) for p in crf.parameters()]
    assert torch.autograd.gradcheck(llh, (emissions, *params))


@pytest.mark.parametrize("tree", [False, True])
def test_large_transition_range_gradient_is_exact(tree):
    """Hard constraints (-1e4 transitions): the log-space fallback of the edge marginals (sequential) and
    sums that underflow to 0 (tree) still give exact, finite gradients."""
    crf, _ = make_pair(num_tags=4, seed=8)
    with torch.no_grad():
        crf.transitions[0, 1] = -1e4
        crf.transitions[2, 3] = -1e4
    emissions = torch.randn(3, 12, 4, dtype=torch.float64, requires_grad=True) * 20
    mask = torch.ones(3, 12, dtype=torch.bool)
    params = [p.detach().double().requires_grad_(True) for p in crf._float_params()]
    log_partition = crf_module._log_partition_tree if tree else crf_module._log_partition_sequential
    log_z = log_partition(emissions, mask, *params)
    grads = torch.autograd.grad(log_z.sum(), [emissions, *params])
    # Reference: autograd through pytorch-crf's log-space forward algorithm, in float64.
    reference = torchcrf.CRF(4, batch_first=True).double()
    start, end, transitions = params
    reference.start_transitions.data, reference.end_transitions.data = start.detach(), end.detach()
    reference.transitions.data = transitions.detach()
    expected = reference._compute_normalizer(emissions.transpose(0, 1), mask.transpose(0, 1))
    expected_grads = torch.autograd.grad(expected.sum(), [emissions, *reference.parameters()])
    torch.testing.assert_close(log_z, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad, expected_grad)


# ----- Precision: autocast and long sequences -----


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_in_float32(dtype):
    crf, _ = make_pair(num_tags=8, seed=9)
    emissions, tags, mask = random_batch(4, 40, 8, seed=9)
    linear = torch.nn.Linear(8, 8)
    expected = crf(linear(emissions), tags, mask)
    with torch.autocast("cpu", dtype=dtype):
        low = linear(emissions)
        llh = crf(low, tags, mask)
        paths = crf.viterbi_tags(low, mask)
    assert low.dtype == dtype and llh.dtype == torch.float32 and torch.isfinite(llh)
    torch.testing.assert_close(llh, expected, rtol=2e-2, atol=0)
    assert paths.shape == mask.shape
    llh.backward()
    assert torch.isfinite(linear.weight.grad).all()


@pytest.mark.parametrize("tree", [False, True])
def test_long_sequence_is_finite(tree):
    crf, reference = make_pair(num_tags=31, seed=10, scale=2.0)
    emissions = torch.randn(2, 4096, 31) * 10
    tags = torch.randint(31, (2, 4096))
    mask = torch.ones(2, 4096, dtype=torch.bool)
    log_z = partitions(crf, emissions, mask, tree=tree)
    assert torch.isfinite(log_z).all()
    llh = crf(emissions, tags, mask, reduction="none")
    assert torch.isfinite(llh).all() and (llh <= 0).all()
    torch.testing.assert_close(llh, reference(emissions, tags, mask, reduction="none"), rtol=1e-4, atol=0)
    assert len(crf.decode(emissions, mask)[0]) == 4096


# ----- A teacher's distribution over paths: expected counts and the cross-entropy (distillation) -----


def brute_force_path_log_probs(crf, emissions, mask):
    """{path: log P(path)} over every tag sequence of the visible positions of one sequence."""
    visible = emissions[mask]
    log_z = brute_force_log_partition(crf, emissions, mask)
    log_probs = {}
    for path in itertools.product(range(crf.num_tags), repeat=len(visible)):
        score = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
        score = score + sum(visible[t, tag] for t, tag in enumerate(path))
        score = score + sum(crf.transitions[a, b] for a, b in zip(path, path[1:]))
        log_probs[path] = score - log_z
    return log_probs


@pytest.mark.parametrize("tree", [False, True])
def test_cross_entropy_from_a_teacher_is_the_sum_over_all_paths(monkeypatch, tree):
    """-sum over every path of Q(path) log P(path), averaged over sequences, for a teacher CRF Q and a student
    CRF P, with holes, a row without visible positions, and the teacher's expected counts checked path by path."""
    monkeypatch.setattr(crf_module, "_parallel_over_time", lambda emissions: tree)
    teacher, _ = make_pair(num_tags=3, seed=1)
    student, _ = make_pair(num_tags=3, seed=2)
    teacher.double(), student.double()
    generator = torch.Generator().manual_seed(3)
    teacher_emissions = torch.randn(4, 4, 3, dtype=torch.float64, generator=generator)
    student_emissions = torch.randn(4, 4, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    mask = torch.tensor([[True] * 4, [True, False, True, True], [False, True, True, False], [False] * 4])
    counts = teacher.expected_counts(teacher_emissions, mask)

    expected_node, expected_ends, expected = torch.zeros(4, 4, 3, dtype=torch.float64), torch.zeros(2, 3).double(), 0
    expected_transitions = torch.zeros(3, 3, dtype=torch.float64)
    for row in range(3):  # the last row has no path
        positions = mask[row].nonzero().squeeze(1).tolist()
        student_log_probs = brute_force_path_log_probs(student, student_emissions[row], mask[row])
        for path, log_q in brute_force_path_log_probs(teacher, teacher_emissions[row], mask[row]).items():
            q = log_q.exp().detach()
            expected = expected - q * student_log_probs[path]
            for position, tag in zip(positions, path):
                expected_node[row, position, tag] += q
            for before, after in zip(path, path[1:]):
                expected_transitions[before, after] += q
            expected_ends[0, path[0]] += q
            expected_ends[1, path[-1]] += q
    node, start, end, transitions = counts
    torch.testing.assert_close(node, expected_node)
    torch.testing.assert_close(torch.stack([start, end]), expected_ends)
    torch.testing.assert_close(transitions, expected_transitions)
    loss = student.cross_entropy(student_emissions, counts, mask)
    torch.testing.assert_close(loss, expected / 4)
    # The gradient: the student's posteriors minus the teacher's.
    (gradient,) = torch.autograd.grad(loss, student_emissions)
    torch.testing.assert_close(gradient * 4, student.marginals(student_emissions.detach(), mask) - counts[0])


def test_cross_entropy_to_itself_is_the_entropy_and_least():
    crf, _ = make_pair(num_tags=4, seed=5)
    emissions, _, mask = random_batch(3, 6, 4, seed=6)
    counts = crf.expected_counts(emissions, mask)
    own = crf.cross_entropy(emissions, counts, mask)
    assert own < crf.cross_entropy(emissions + torch.randn_like(emissions), counts, mask)
    assert own < crf.cross_entropy(emissions.flip(-1), counts, mask)
