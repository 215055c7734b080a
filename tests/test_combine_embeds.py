"""combine_embeds / Combine Embeds methods against their formulas, written element by element."""
import itertools
import math

import pytest
import torch

from ipadapter_kit.ipadapter_core.embeds import COMBINE_EMBEDS, combine
from ipadapter_kit.nodes import embeds_nodes, patching


def references(count=3, seed=0):
    """count encoder outputs (R, T, W) with both signs."""
    return torch.randn(count, 2, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def per_element(embeds, reduce):
    """(1, T, W) from reduce(list of the R values at each position)."""
    out = torch.empty(1, *embeds.shape[1:], dtype=embeds.dtype)
    for t, w in itertools.product(range(embeds.shape[1]), range(embeds.shape[2])):
        out[0, t, w] = reduce([float(embeds[r, t, w]) for r in range(embeds.shape[0])])
    return out


FORMULAS = {
    "add": sum,
    "subtract": lambda v: v[0] - sum(v[1:]) / len(v[1:]),
    "average": lambda v: sum(v) / len(v),
    "norm average": lambda v: sum(x / math.sqrt(sum(y * y for y in v)) for x in v) / len(v),
    "max": max,
    "min": min,
}


@pytest.mark.parametrize("method", list(FORMULAS))
def test_merging_methods_follow_their_formula(method):
    embeds = references()
    assert torch.allclose(combine(embeds, method), per_element(embeds, FORMULAS[method]), atol=1e-12)


def test_every_method_is_known_and_concat_separate_keep_the_references():
    assert set(COMBINE_EMBEDS) == set(FORMULAS) | {"concat", "separate"}
    assert COMBINE_EMBEDS[-2:] == ("max", "min")  # appended: saved workflows keep their indices
    embeds = references()
    assert torch.equal(combine(embeds, "concat"), embeds) and torch.equal(combine(embeds, "separate"), embeds)


def test_max_and_min_are_element_wise_not_a_whole_reference():
    embeds = references()
    merged = combine(embeds, "max")[0]
    assert not any(torch.equal(merged, reference) for reference in embeds)
    assert torch.equal(torch.maximum(torch.maximum(embeds[0], embeds[1]), embeds[2]), merged)


@pytest.mark.parametrize("method", ["max", "min", "norm average"])
def test_combine_embeds_node_merges_the_inputs(method):
    parts = [patching.EncodedReferences(cond=c.unsqueeze(0).float(), uncond=torch.zeros(1, 2, 5),
                                        clip_output="penultimate_hidden_states") for c in references()]
    out = embeds_nodes.CombineEmbeds.execute(parts[0], method, embed2=parts[1], embed4=parts[2]).result[0]
    expected = per_element(torch.cat([p.cond for p in parts]).double(), FORMULAS[method]).float()
    assert torch.allclose(out.cond, expected, atol=1e-6) and out.uncond.shape == (1, 2, 5)
