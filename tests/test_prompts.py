"""Prompts from masks: (x, y) = (column, row) points and boxes, where on the structure they fall."""
from __future__ import annotations

import torch

from semisam_fast.prompts import mask_to_points, point_prompts


def test_points_from_a_binary_mask_fall_inside_it_and_away_from_its_edge():
    mask = torch.zeros(2, 40, 50)
    mask[0, 10:30, 5:25] = 1.0  # a 20x20 square: centre (row 19.5, column 14.5)
    mask[1, 5:15, 30:48] = 1.0
    mask[1, 5:8, 30:36] = 0.0  # a notch: background inside the box, where the negative must go
    points, labels, valid = mask_to_points(mask, n_positive=1, n_negative=1)
    assert bool(valid.all()) and labels.tolist() == [[1, -1], [1, 0]]  # a box-shaped mask has no negative
    x, y = points[0, 0].tolist()
    assert 12 <= x <= 17 and 17 <= y <= 22  # the interior-most pixel, not the rim
    x, y = points[1, 0].tolist()
    assert 34 <= x <= 43 and 9 <= y <= 10  # 5 pixels from every edge: as deep as this mask goes
    nx, ny = (int(v) for v in points[1, 1].tolist())
    assert 30 <= nx < 36 and 5 <= ny < 8 and mask[1, ny, nx] == 0


def test_the_most_confident_pixel_wins_over_the_interior():
    prob = torch.full((1, 30, 30), 0.6)
    prob[0, 2, 3] = 0.99  # a confident pixel near the corner of a large region beats the region's centre
    points, _, _ = mask_to_points(prob, n_positive=1, n_negative=0)
    assert points[0, 0].tolist() == [3.0, 2.0]


def test_point_prompts_add_the_padding_point():
    coords, labels = point_prompts(torch.ones(2, 1, 2, 2), torch.tensor([[[1, 0]], [[1, 1]]]))
    assert coords.shape == (2, 1, 3, 2) and labels[:, :, -1].eq(-1).all()
