import math

import pytest
from hydra.utils import instantiate

from lit_rlhf.errors import NonFiniteError
from lit_rlhf.regularizers.kl.controllers import AdaptiveKLController, FixedKLController


def test_fixed_controller_never_moves():
    controller = FixedKLController(coef=0.05)
    controller.update(current_kl=100.0, n_steps=64)
    assert controller.value == 0.05


def test_fixed_controller_rejects_negative_coef():
    with pytest.raises(ValueError, match="coef must be >= 0"):
        FixedKLController(coef=-0.1)


def test_adaptive_controller_steps_by_hand():
    controller = AdaptiveKLController(coef=0.2, target=6.0, horizon=10_000)

    # KL 6.6: e = 6.6/6 - 1 = 0.1 (inside the clip) -> β = 0.2 · (1 + 0.1 · 100/10000) = 0.2002
    controller.update(current_kl=6.6, n_steps=100)
    assert controller.value == pytest.approx(0.2002)

    # KL 60: e = 9, clipped to +0.2 -> β = 0.2002 · (1 + 0.2 · 100/10000) = 0.2002 · 1.002 = 0.2006004
    controller.update(current_kl=60.0, n_steps=100)
    assert controller.value == pytest.approx(0.2006004)

    # KL 0: e = -1, clipped to -0.2 -> β = 0.2006004 · 0.998 = 0.2001991992
    controller.update(current_kl=0.0, n_steps=100)
    assert controller.value == pytest.approx(0.2001991992)

    # On target: e = 0 -> unchanged
    controller.update(current_kl=6.0, n_steps=100)
    assert controller.value == pytest.approx(0.2001991992)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"coef": -1.0, "target": 6.0, "horizon": 10}, "coef must be >= 0"),
        ({"coef": 0.1, "target": 0.0, "horizon": 10}, "target must be > 0"),
        ({"coef": 0.1, "target": 6.0, "horizon": 0}, "horizon must be > 0"),
    ],
)
def test_adaptive_controller_validates_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveKLController(**kwargs)


def test_adaptive_controller_rejects_non_finite_kl():
    controller = AdaptiveKLController(coef=0.1, target=6.0, horizon=10)
    with pytest.raises(NonFiniteError):
        controller.update(current_kl=math.nan, n_steps=1)
    assert controller.value == 0.1


@pytest.mark.parametrize(
    "make",
    [lambda: FixedKLController(coef=0.3), lambda: AdaptiveKLController(coef=0.3, target=1.0, horizon=10)],
)
def test_state_dict_round_trip(make):
    trained = make()
    trained.update(current_kl=5.0, n_steps=4)
    resumed = make()
    resumed.load_state_dict(trained.state_dict())
    assert resumed.value == trained.value
    # The adaptive controller moved: 0.3 · (1 + 0.2 · 4/10) = 0.324
    if isinstance(trained, AdaptiveKLController):
        assert resumed.value == pytest.approx(0.324)


def test_controllers_instantiate_from_hydra_config():
    adaptive = instantiate(
        {
            "_target_": "lit_rlhf.regularizers.kl.controllers.AdaptiveKLController",
            "coef": 0.1,
            "target": 6.0,
            "horizon": 10000,
        }
    )
    fixed = instantiate({"_target_": "lit_rlhf.regularizers.kl.controllers.FixedKLController", "coef": 0.1})
    assert adaptive.value == fixed.value == 0.1
