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


# --- IPAdapter_plus's IPAdapter Weights family (values worked out by hand from their definitions) ---------------
def strategy(**kw):
    return schedules.WeightsStrategy(**kw)


def close(values, expected):
    return list(values) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("timing, expected", [
    ("linear", [1.0, 0.75, 0.5, 0.25, 0.0]),
    ("ease_in_out", [1.0, 1 - 0.1464466094, 0.5, 0.1464466094, 0.0]),  # 1 - (1 - cos(pi p)) / 2
    ("ease_in", [1.0, 1 - 0.3826834324, 1 - 0.7071067812, 1 - 0.9238795325, 0.0]),  # 1 - sin(pi p / 2)
    ("ease_out", [1.0, 1 - 0.0761204675, 1 - 0.2928932188, 1 - 0.6173165676, 0.0]),  # cos(pi p / 2)
])
def test_each_timing_ramps_from_the_first_to_the_last_value(timing, expected):
    assert close(schedules.transition_weights(strategy(weights="1.0, 0.3, 0.0", timing=timing, frames=5)), expected)


def test_custom_takes_the_list_and_frames_below_two_mean_two():
    assert schedules.transition_weights(strategy(weights="1, 0.5\n0.2", timing="custom", frames=9)) == [1.0, 0.5, 0.2]
    assert schedules.transition_weights(strategy(weights="", timing="custom")) == [0.0]
    assert schedules.transition_weights(strategy(weights="", timing="linear", frames=3)) == [0.0, 0.5, 1.0]
    for frames in (0, 1, 2):  # their max(frames, 2): the default frames=0 is a two-frame transition
        assert schedules.transition_weights(strategy(weights="0.8, 0.1", frames=frames)) == [0.8, 0.1]


def test_start_and_end_frame_hold_the_end_values():
    assert close(schedules.transition_weights(strategy(frames=7, start_frame=2, end_frame=5)),
                 [1.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0])
    assert close(schedules.transition_weights(strategy(frames=5, start_frame=4)), [1.0] * 4 + [0.0])
    # no ramp left: IPAdapter_plus's step (the start value, its last frame switched to the end value, then the end
    # value from end_frame on), the random timing keeping the start value
    assert schedules.transition_weights(strategy(frames=5, start_frame=5)) == [1.0] * 4 + [0.0]
    assert schedules.transition_weights(strategy(frames=8, start_frame=3, end_frame=2)) == [1.0, 1.0] + [0.0] * 7
    assert schedules.transition_weights(strategy(frames=4, start_frame=3, end_frame=2, timing="random")) == \
        [1.0] * 3 + [0.0] * 2
    with pytest.raises(InvalidInputError, match="end_frame 0 leaves no frame for the ramp"):
        schedules.transition_weights(strategy(frames=8, end_frame=0))


def test_random_timing_is_seeded_and_keeps_its_last_value():
    make = lambda seed: schedules.transition_weights(strategy(weights="0.2, 0.9", timing="random", frames=40,  # noqa
                                                              start_frame=2, seed=seed))
    values = make(7)
    assert len(values) == 40 and values[:2] == [0.2, 0.2] and all(0.2 <= v <= 0.9 for v in values)
    assert len(set(values[2:])) == 38 and values[-1] != 0.9
    assert values == make(7) and values != make(8)


def test_full_batch_repeats_the_transition_per_image():
    plan = schedules.batch_schedule(strategy(frames=2), 3)
    assert plan.weights == (1.0, 0.0) * 3 and plan.image_1 == (0, 0, 1, 1, 2, 2) and plan.image_2 is None
    assert plan.total_frames == 6 and plan.weights_invert == (0.0, 1.0) * 3


def test_shift_batches_fade_each_image_into_the_next():
    plan = schedules.batch_schedule(strategy(frames=2, method="shift batches"), 3)
    assert plan.weights == (1.0, 0.0, 1.0, 0.0)
    assert plan.image_1 == (0, 0, 1, 1) and plan.image_2 == (1, 1, 2, 2)


@pytest.mark.parametrize("images, weights, image_1, image_2", [
    (2, (1.0, 0.25), (0, 0), (1, 1)),
    (3, (1.0, 0.25, 0.25, 1.0), (0, 0, 2, 2), (1, 1, 1, 1)),
    (4, (1.0, 0.25, 0.25, 1.0, 1.0, 0.25), (0, 0, 2, 2, 2, 2), (1, 1, 1, 1, 3, 3)),
    (5, (1.0, 0.25, 0.25, 1.0) * 2, (0, 0, 2, 2, 2, 2, 4, 4), (1, 1, 1, 1, 3, 3, 3, 3)),
])
def test_alternate_batches_fade_back_every_other_transition(images, weights, image_1, image_2):
    # the curve [1, 0.25] mirrored in its own range is [0.25, 1]
    plan = schedules.batch_schedule(strategy(weights="1, 0.25", timing="custom", method="alternate batches"), images)
    assert (plan.weights, plan.image_1, plan.image_2) == (weights, image_1, image_2)


def test_added_frames_hold_the_first_and_last_weight_and_image():
    full = schedules.batch_schedule(strategy(frames=2, add_starting_frames=2, add_ending_frames=1), 2)
    assert full.weights == (1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0) and full.image_1 == (0, 0, 0, 0, 1, 1, 1)
    shift = schedules.batch_schedule(strategy(frames=2, add_starting_frames=2, add_ending_frames=1,
                                              method="shift batches"), 3)
    assert shift.image_1 == (0, 0, 0, 0, 1, 1, 2) and shift.image_2 == (0, 0, 1, 1, 2, 2, 2)
    assert shift.total_frames == 7 and shift.weights_invert == tuple(reversed(shift.weights))


def test_without_images_one_transition_and_no_added_frames():
    plan = schedules.batch_schedule(strategy(frames=3, add_starting_frames=4, add_ending_frames=4,
                                             method="shift batches"))
    assert plan.weights == (1.0, 0.5, 0.0) and plan.image_1 is None and plan.image_2 is None


@pytest.mark.parametrize("method", ["shift batches", "alternate batches"])
def test_fading_needs_two_images(method):
    with pytest.raises(InvalidInputError, match="at least 2 images, got 1"):
        schedules.batch_schedule(strategy(method=method), 1)


@pytest.mark.parametrize("bad", [dict(timing="smooth"), dict(method="all"), dict(frames=-1)])
def test_bad_strategy(bad):
    with pytest.raises(InvalidInputError):
        strategy(**bad)


def test_prompt_schedule_keys_each_prompt_at_its_transition():
    made = strategy(frames=3, add_starting_frames=2, add_ending_frames=1, image_count=3)
    assert schedules.prompt_schedule(made, "a cat\n\na dog\n") == \
        '"0": "a cat",\n"2": "a cat",\n"5": "a dog",\n"8": "a dog",\n"11": "a dog",\n'
    assert schedules.prompt_schedule(strategy(frames=4, image_count=2), "x\ny\nz") == '"0": "x",\n"4": "y",\n'
    # custom: the list's length is the transition's
    assert schedules.prompt_schedule(strategy(weights="1,1,0", timing="custom", image_count=2), "x\ny") == \
        '"0": "x",\n"3": "y",\n'
    assert schedules.prompt_schedule(strategy(image_count=0), "x") == ""
    assert schedules.prompt_schedule(strategy(image_count=2), " \n") == ""


def test_combine_weights():
    assert schedules.combine_weights((1.0, 0.5), (0.2,)) == [1.0, 0.5, 0.2]
    assert schedules.combine_weights(0.3, [0.7, 0.1]) == [0.3, 0.7, 0.1]


def test_weights_schedule_nodes_pick_the_images():
    import torch
    image = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 2, 2, 3)
    weights, invert, total, image_1, image_2, made = weights_nodes.WeightsSchedule.execute(
        "1.0, 0.0", "linear", 2, 0, 9999, 1, 0, "shift batches", image).result
    assert weights == (1.0, 1.0, 0.0, 1.0, 0.0) and invert == weights[::-1] and total == 5
    assert image_1[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 1] and image_2[:, 0, 0, 0].tolist() == [0, 1, 1, 2, 2]
    assert made.image_count == 3
    again = weights_nodes.WeightsFromStrategy.execute(made, image[:2]).result
    assert again[0] == (1.0, 1.0, 0.0) and again[4][:, 0, 0, 0].tolist() == [0, 1, 1]
    alone = weights_nodes.WeightsFromStrategy.execute(made).result
    assert alone == ((1.0, 0.0), (0.0, 1.0), 2, None, None, made)
    assert weights_nodes.PromptScheduleFromStrategy.execute(made, "a\nb\nc").result == \
        ('"0": "a",\n"1": "a",\n"3": "b",\n"5": "c",\n',)
    assert weights_nodes.CombineWeights.execute(weights, (0.5,)).result == (weights + (0.5,), 6)
