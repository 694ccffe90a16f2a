"""Rewards and the replay buffer against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ie_engine.reward import ReplayBuffer, ReplayEntry, concept_rewards, image_rewards


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("k", [1, 3, 15, 50])
def test_image_reward_matches_brute_force(k):
    g = torch.Generator().manual_seed(k)
    web = unit(torch.randn(37, 12, generator=g))
    target = unit(torch.randn(20, 12, generator=g))
    got = image_rewards(web, target, k=k, chunk=8)
    for i in range(web.shape[0]):
        sims = sorted((float(web[i] @ target[j]) for j in range(target.shape[0])), reverse=True)
        expected = sum(sims[: min(k, 20)]) / min(k, 20)
        assert got[i].item() == pytest.approx(expected, abs=1e-5)


def test_image_reward_prefers_images_near_the_target():
    target = unit(torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0.95, 0, 0.05]]))
    web = unit(torch.tensor([[1.0, 0.05, 0], [0, 1.0, 0]]))
    r = image_rewards(web, target, k=2)
    assert r[0] > r[1]


def test_concept_reward_is_mean_of_top_images_and_empty_queries_get_the_floor():
    concepts = [1] * 12 + [2] * 11 + [3] * 2
    rng = np.random.default_rng(0)
    rewards = rng.random(len(concepts))
    out = concept_rewards(concepts, rewards, [1, 2, 3, 4], top=10, min_results=10)
    for c in (1, 2):
        mine = sorted((r for cc, r in zip(concepts, rewards, strict=True) if cc == c),
                      reverse=True)
        assert out[c] == pytest.approx(np.mean(mine[:10]))
    # Concept 3 (2 images) and 4 (none) are empty: the lowest non-empty reward.
    assert out[3] == out[4] == min(out[1], out[2])


def test_replay_keeps_the_top_half_and_vetoes_empty_it():
    buf = ReplayBuffer(0.5)
    entries = [ReplayEntry(i, i % 3, 1, float(r)) for i, r in enumerate([5, 1, 4, 2, 3, 0])]
    kept = buf.add_iteration(entries)
    assert sorted(e.image_id for e in kept) == [0, 2, 4]  # rewards 5, 4, 3
    removed = buf.remove_concepts({1})  # image 4 has concept 1
    assert removed == 1
    assert sorted(buf.image_ids()) == [0, 2]
    other = ReplayBuffer(0.1)
    other.load_state_dict(buf.state_dict())
    assert other.image_ids() == buf.image_ids()
    assert other.keep_fraction == 0.5
