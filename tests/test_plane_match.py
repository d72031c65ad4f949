"""Plane match (crl_uiqa.plane_match): class-map centres, posed templates and normalised cross-correlation,
checked on hand-built images whose answers are known."""
import math

import numpy as np
import pytest
import torch

from crl_uiqa.errors import ConfigError, InputError
from crl_uiqa.plane_match import PlaneTemplates, _posed, class_centres


def _ellipse(h=96, w=112, cy=48.0, cx=56.0, a=22.0, b=12.0, angle=0.0, ring=False):
    """A bright ellipse (or its outline) on a mid-gray sector: a toy 'anatomy'."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    u, v = c * (xx - cx) + s * (yy - cy), -s * (xx - cx) + c * (yy - cy)
    r = (u / a) ** 2 + (v / b) ** 2
    img = np.full((h, w), 0.3)
    img[(r < 1.25) & (r > 0.75) if ring else r < 1] = 0.9
    return torch.from_numpy(img).float().view(1, 1, h, w)


def test_class_centres_single_peak_and_flat_map():
    m = torch.zeros(2, 4, 5)
    m[0, 1, 2] = 3.0  # one peak: its cell's centre, (1 + 0.5) / 4 and (2 + 0.5) / 5
    m[1] = 7.0  # flat: nothing above half the range, the image centre
    np.testing.assert_allclose(class_centres(m), [[0.375, 0.5], [0.5, 0.5]], atol=1e-12)


def test_class_centres_weighs_the_part_above_half_the_range():
    m = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, 4.0, 0.0, 2.0]]])  # 2 is exactly half the range: weight 0
    np.testing.assert_allclose(class_centres(m)[0], [0.75, 0.375], atol=1e-12)
    m2 = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, 4.0, 0.0, 3.0]]])  # weights 2 and 1 at columns 1 and 3
    np.testing.assert_allclose(class_centres(m2)[0], [0.75, (2 * 0.375 + 1 * 0.875) / 3], atol=1e-12)


def test_class_centres_refuses_bad_shapes_and_fractions():
    with pytest.raises(InputError):
        class_centres(torch.zeros(4, 5))
    with pytest.raises(ConfigError):
        class_centres(torch.zeros(1, 4, 5), fraction=1.0)


def test_posed_rotates_and_mirrors_about_the_centre():
    img = torch.zeros(1, 9, 9)
    img[0, 4, 7] = 1.0  # 3 pixels right of the centre (4, 4)
    out = _posed(img, (4.0, 4.0), [0.0, 90.0], mirror=True)
    assert out.shape == (4, 1, 9, 9)
    assert out[0, 0, 4, 7] == pytest.approx(1.0)  # 0 degrees: unchanged
    rotated = out[1, 0]  # 90 degrees moves it to a point 3 pixels above or below the centre
    assert float(rotated[1, 4] + rotated[7, 4]) == pytest.approx(1.0, abs=1e-5)
    assert out[2, 0, 4, 1] == pytest.approx(1.0)  # mirrored about the centre column


def test_posed_scales_about_the_centre():
    """Scale 2 about (4, 6): output pixel p shows the source at centre + (p - centre) / 2; on a linear ramp
    (exact under bilinear interpolation) the output is the ramp halved about the centre."""
    yy, xx = torch.meshgrid(torch.arange(9.0), torch.arange(13.0), indexing="ij")
    img = (xx + 10 * yy).view(1, 9, 13)
    out = _posed(img, (4.0, 6.0), [0.0], mirror=False, scales=(1.0, 2.0))
    assert out.shape == (2, 1, 9, 13)
    torch.testing.assert_close(out[0, 0], img[0], rtol=0, atol=1e-4)  # scale 1: unchanged
    want = (6 + (xx - 6) / 2) + 10 * (4 + (yy - 4) / 2)
    torch.testing.assert_close(out[1, 0], want, rtol=0, atol=1e-4)


def test_templates_at_a_larger_scale_match_a_larger_anatomy():
    ref = _ellipse()
    bigger = _ellipse(a=22.0 * 1.25, b=12.0 * 1.25)
    one = PlaneTemplates(ref, [[0.5, 0.5]], pool=2, half=12, sigma=1.0)
    two = PlaneTemplates(ref, [[0.5, 0.5]], pool=2, half=12, sigma=1.0, scales=(1.0, 1.25))
    assert len(two.templates) == 2 * len(one.templates)
    torch.testing.assert_close(two.templates[:len(one.templates)], one.templates, rtol=0, atol=0)  # scale 1 first
    assert two.score(ref)[0] == pytest.approx(1.0, abs=1e-4)  # the reference still matches itself
    assert two.score(bigger)[0] > one.score(bigger)[0] + 0.05 and two.score(bigger)[0] > 0.97
    for bad in ((), (0.0,), (1.0, float("nan")), "1", 1.0):
        with pytest.raises(ConfigError, match="scales"):
            PlaneTemplates(ref, [[0.5, 0.5]], pool=2, half=12, scales=bad)


def test_a_reference_matches_itself_shifted_and_rotated_by_a_step():
    ref = _ellipse()
    pt = PlaneTemplates(ref, [[0.5, 0.5]], pool=2, half=12, sigma=1.0)
    same = pt.score(ref)[0]
    shifted = pt.score(_ellipse(cy=54.0, cx=46.0))[0]
    rotated = pt.score(_ellipse(angle=30.0))[0]
    assert same == pytest.approx(1.0, abs=1e-4)
    assert shifted > 0.98 and rotated > 0.9
    other = pt.score(_ellipse(a=9.0, b=9.0, ring=True))[0]  # another shape
    blank = pt.score(torch.full((1, 1, 96, 112), 0.3))[0]  # no structure: no correlation
    assert other < rotated - 0.2
    assert blank == 0.0


def test_scores_lie_in_minus_one_to_one_and_batches_agree():
    g = torch.Generator().manual_seed(0)
    ref = _ellipse()
    frames = torch.rand(5, 1, 96, 112, generator=g)
    pt = PlaneTemplates(ref, [[0.5, 0.5]], pool=2, half=12, sigma=1.0, rotation_step=45)
    a, b = pt.score(frames, batch_size=5), pt.score(frames, batch_size=2)
    assert np.all(np.abs(a) <= 1.0)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_bad_inputs_get_one_line_errors():
    ref = _ellipse()
    with pytest.raises(ConfigError, match="too small"):
        PlaneTemplates(ref, [[0.5, 0.5]], pool=4, half=20)
    with pytest.raises(InputError, match="centres"):
        PlaneTemplates(ref, [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(InputError, match="gray image tensor"):
        PlaneTemplates(ref[0], [[0.5, 0.5]])
    with pytest.raises(InputError, match="blank"):
        PlaneTemplates(torch.zeros(1, 1, 96, 112), [[0.5, 0.5]], pool=2, half=12)
    pt = PlaneTemplates(ref, [[0.5, 0.5]], pool=2, half=12)
    with pytest.raises(InputError, match="96x112"):
        pt.score(torch.zeros(1, 1, 64, 64))
    with pytest.raises(InputError, match="non-finite"):
        pt.score(torch.full((1, 1, 96, 112), float("nan")))


def test_scales_without_a_length_or_too_many_are_one_short_config_error():
    refs = torch.rand(1, 1, 96, 96)
    for bad in (np.array(2.0), (s for s in [1.0]), list(range(1, 100_000))):
        with pytest.raises(ConfigError) as err:
            PlaneTemplates(refs, [[0.5, 0.5]], scales=bad)
        assert len(str(err.value)) < 200
