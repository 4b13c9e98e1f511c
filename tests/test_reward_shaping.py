"""Score shaping: running moments against torch's own statistics, normalisation and clipping by hand."""

import pytest
import torch

from lit_rlhf.errors import ConfigError
from lit_rlhf.rl.reward_shaping import RunningMoments, ScoreShaping


def test_running_moments_equal_the_statistics_of_everything_seen():
    generator = torch.Generator().manual_seed(0)
    batches = [3 * torch.randn(n, generator=generator) + 1 for n in (5, 1, 8, 3)]
    moments = RunningMoments()
    for batch in batches:
        moments.update(batch)
    everything = torch.cat(batches).double()
    assert moments.count == 17
    assert moments.mean == pytest.approx(float(everything.mean()), rel=1e-12)
    assert moments.std == pytest.approx(float(everything.std()), rel=1e-12)
    restored = RunningMoments()
    restored.load_state_dict(moments.state_dict())
    assert restored.state_dict() == moments.state_dict()


def test_clip_only():
    shaping = ScoreShaping(clip=1.5, normalize=False)
    torch.testing.assert_close(shaping(torch.tensor([-3.0, 0.5, 2.0]), update=True), torch.tensor([-1.5, 0.5, 1.5]))


def test_normalise_then_clip():
    shaping = ScoreShaping(clip=1.0, normalize=True)
    # mean 2, sample std of [0, 2, 4] = 2: -> [-1, 0, 1]; clip at 1 changes nothing
    torch.testing.assert_close(shaping(torch.tensor([0.0, 2.0, 4.0]), update=True), torch.tensor([-1.0, 0.0, 1.0]))
    # A baseline is shaped with the same statistics and does not change them: 8 -> (8 - 2) / 2 = 3 -> clip 1
    torch.testing.assert_close(shaping(torch.tensor([8.0]), update=False), torch.tensor([1.0]))
    assert shaping.moments.count == 3


def test_bad_clip_is_refused():
    with pytest.raises(ConfigError, match="reward_clip"):
        ScoreShaping(clip=0.0, normalize=False)
