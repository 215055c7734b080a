"""Per-frame weight schedules and the Frame Weights node."""
import pytest

from ipadapter_kit.ipadapter_core import schedules
from ipadapter_kit.ipadapter_core.errors import InvalidInputError
from ipadapter_kit.nodes import weights_nodes


def test_schedules():
    assert schedules.frame_weights("linear", [1.0, 0.0], 5) == [1.0, 0.75, 0.5, 0.25, 0.0]
    ease = schedules.frame_weights("ease in-out", [0.0, 1.0], 5)
    assert ease[0] == 0.0 and ease[-1] == pytest.approx(1.0) and ease[2] == pytest.approx(0.5)
    assert ease[1] < 0.25 and ease[3] > 0.75  # slow at both ends
    assert schedules.frame_weights("alternate", [1.0, 0.2], 5) == [1.0, 0.2, 1.0, 0.2, 1.0]
    assert schedules.frame_weights("custom list", [1.0, 0.5], 4) == [1.0, 0.5, 0.5, 0.5]
    assert schedules.frame_weights("fixed", [0.7, 0.1], 3) == [0.7, 0.7, 0.7]
    rnd = schedules.frame_weights("random", [0.2, 0.9], 50, seed=3)
    assert all(0.2 <= v <= 0.9 for v in rnd) and len(set(rnd)) > 40
    assert rnd == schedules.frame_weights("random", [0.2, 0.9], 50, seed=3)
    assert schedules.frame_weights("linear", [1.0, 0.0], 1) == [1.0]


@pytest.mark.parametrize("text", ["", "a, b", "1, nan"])
def test_bad_values(text):
    with pytest.raises(InvalidInputError, match="weights"):
        schedules.parse_values(text)


def test_frame_weights_node_plots_the_schedule():
    values, plot = weights_nodes.FrameWeights.execute("1.0, 0.0", "linear", 8, 0).result
    assert len(values) == 8 and values[0] == 1.0 and values[-1] == 0.0
    assert plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.std() > 0
