"""Reading a counting model's output maps: each pixel votes for where it points, votes become spots."""

from __future__ import annotations

import math

import torch
from torch import Tensor

VOTE_FLOOR = 0.02  # pixels less probable than this cast no vote
VOTE_KERNEL = 0.35  # px: the width of each vote when the density of votes is measured
SPOT_RADIUS = 1.0  # px: a vote joins the nearest densest vote (a spot) within this distance
DOMINANCE = 4.0  # a pixel this many times surer, voting within SPOT_RADIUS, leaves no spot beside it
MERGE_RADII = (1.0, 0.7, 0.5, 0.4, 0.3)  # the radii that training tries on validation, surest first
VOTES_PER_PIXEL = 0.25  # the most probable pixels vote, at most this share of an image's: no frame
# holds a spot in every 4 pixels that could be told apart, and an untrained model stays cheap
VOTE_PAIRS = 2**24  # the most pairs of votes compared at once (about 1 GB): beyond, the least sure go
PAIR_BINS = 2  # votes are compared with those in the bins this many bins away, bins of the largest radius


def cells_to_pixels(cells: Tensor, stride: int) -> Tensor:
    """`F.pixel_shuffle`: maps of s x s cells (N, C s^2, H, W) as maps of pixels (N, C, H s, W s),
    as a view and one copy (a third of its time on channels-last maps)."""
    n, channels, height, width = cells.shape
    split = cells.view(n, channels // stride**2, stride, stride, height, width)
    return split.permute(0, 1, 4, 2, 5, 3).reshape(n, channels // stride**2, height * stride, width * stride)


def read_detections(out: Tensor, floor: float, radius: float = SPOT_RADIUS) -> tuple[Tensor, Tensor]:
    """Detections from the output maps of a counting model, found where the pixels point.

    Each pixel votes, with its detection probability, for the position it points at (pixel
    plus offset). A spot is a vote densest among the votes within SPOT_RADIUS; each vote joins
    the nearest such spot within that radius. A spot's confidence is the probability of its
    votes summed (a spot near a pixel border splits its probability between pixels, and every
    one of them points at it), capped at 1; its position the mean of the places that the pixels
    around its own point at, weighed by their odds p / (1 - p). Two spots whose probabilities
    run into one ridge of pixels are still told apart, by where the pixels point. `radius`
    (SPOT_RADIUS by default): a model that points sharply tells spots apart at smaller ones,
    so training chooses it on validation, from MERGE_RADII.

    Votes are compared only with the votes near them (`_vote_pairs`), so that the work grows
    with the number of votes, not with its square: a frame is read whole, however large.
    Returns points (N, M, 2), padded with NaN, and confidence (N, M), most confident first.
    """
    n, _, height, width = out.shape
    image, where, weight, aim = _votes(out)
    reach = max(radius, SPOT_RADIUS)
    found = _vote_pairs(aim, image, reach, n, height, width)
    if found is not None:  # the usual case: every image's votes compared at once
        points, confidence = _spots_of_votes(aim, weight, where, found, radius)
    else:  # too many pairs at once: a few images at a time, each as it would be alone
        image, points, confidence = _spots_in_groups(
            image, where, weight, aim, reach, radius, (n, height, width)
        )
    spot = confidence >= max(floor, 1e-12)
    image, points, confidence = image[spot], points[spot], confidence[spot]
    order, slot = _ranked(image, confidence, n)  # most confident first
    image, points, confidence = image[order], points[order], confidence[order]
    most = max(1, int(slot.max()) + 1 if len(slot) else 1)
    points_out = torch.full((n, most, 2), math.nan, dtype=out.dtype, device=out.device)
    confidence_out = torch.zeros((n, most), dtype=out.dtype, device=out.device)
    points_out[image, slot] = points.to(out.dtype)
    confidence_out[image, slot] = confidence.to(out.dtype)
    return points_out, confidence_out


def read_depths(out: Tensor, points: Tensor, centre: float, scale: float) -> Tensor:
    """(N, M, 2) the depth (nm) of each detection at `points` (N, M, 2, NaN-padded) and its
    expected error (nm), from a 3D model's maps (N, 7, H, W): the depths that the pixels around
    the detection's own predict, weighed as its position is (`read_detections`) by their odds
    p / (1 - p), and by how near they point to it (a kernel of VOTE_KERNEL), so that a
    neighbour's pixels hardly count. The maps hold depths scaled to -1 .. 1: z = centre + scale
    times them."""
    n, _, height, width = out.shape
    present = torch.isfinite(points[..., 0])
    pixel = torch.floor(torch.nan_to_num(points) + 0.5).long()
    step = torch.tensor([-1, 0, 1], device=out.device)
    ys = (pixel[..., 1, None] + step.repeat_interleave(3)).clamp(0, height - 1)  # (N, M, 9)
    xs = (pixel[..., 0, None] + step.repeat(3)).clamp(0, width - 1)
    rows = torch.arange(n, device=out.device)[:, None, None]
    maps = out.float()
    p = torch.sigmoid(maps[rows, 0, ys, xs])
    aim = torch.stack([xs + maps[rows, 1, ys, xs], ys + maps[rows, 2, ys, xs]], -1)
    near = ((aim - torch.nan_to_num(points.float())[..., None, :]) ** 2).sum(-1)
    weight = p / (1 - p).clamp(min=1e-6) * torch.exp(-near / (2 * VOTE_KERNEL**2)) + 1e-12
    weight = weight / weight.sum(-1, keepdim=True)
    depth = (weight * maps[rows, 5, ys, xs]).sum(-1)
    error = (weight * torch.exp(maps[rows, 6, ys, xs].clamp(-6.0, 2.0))).sum(-1)
    read = torch.stack([centre + scale * depth, scale * error], -1)
    return read.masked_fill(~present[..., None], math.nan).to(points.dtype)


OFF_IMAGE = 2.0  # px: a vote aimed farther than this outside its image points at no spot to find


def _votes(out: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The votes of output maps (N, 5, H, W): image (V,), voting pixel (V, 2), weight (V,) and
    aim (V, 2), each image's together, the surest first (a vote's rank breaks ties of density),
    at most VOTES_PER_PIXEL of an image's pixels. A broken network's NaN offsets, or offsets
    that point well off the image, cast none."""
    n, _, height, width = out.shape
    prob = torch.sigmoid(out[:, 0].float()).reshape(n, height * width)
    image, pixel = torch.nonzero(prob >= VOTE_FLOOR, as_tuple=True)
    weight = prob[image, pixel]
    order, rank = _ranked(image, weight, n)
    image, pixel, weight = image[order], pixel[order], weight[order]
    kept = rank < max(1, int(VOTES_PER_PIXEL * height * width))
    image, pixel, weight = image[kept], pixel[kept], weight[kept]
    where = torch.stack([pixel % width, pixel // width], -1).to(prob.dtype)
    aim = where + out[:, 1:3].float().flatten(2)[image, :, pixel]
    far = aim.new_tensor([width, height]) - 0.5 + OFF_IMAGE  # pixel centres lie at 0 .. width - 1
    pointing = ((aim >= -0.5 - OFF_IMAGE) & (aim <= far)).all(-1)  # and not NaN
    return image[pointing], where[pointing], weight[pointing], aim[pointing]


def _ranked(image: Tensor, score: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The order that puts items of images `image` (of n) together, image by image, the highest
    `score` (in [0, 1]) first, ties as they come; and each item's rank within its image, in
    that order."""
    order = torch.argsort(image.double() * 2 - score.double(), stable=True)
    image = image[order]
    counts = torch.bincount(image, minlength=n)
    first_of_each = torch.cumsum(counts, 0) - counts
    return order, torch.arange(len(image), device=image.device) - first_of_each[image]


def _bins(aim: Tensor, image: Tensor, reach: float, n: int, height: int, width: int) -> tuple[Tensor, ...]:
    """The votes sorted into bins of side `reach`, each image's apart: the order that sorts them
    by bin, and for each vote and each bin up to PAIR_BINS away (V x bins,), where that bin's
    votes start in that order and how many there are."""
    # aims just off the image fall in its outermost bins: the bins of two aims come no farther apart
    cols, rows = (math.ceil(side / reach) + 2 + 2 * PAIR_BINS for side in (width, height))
    x, y = (
        torch.floor(aim[:, axis] / reach).clamp(-1, limit - 2 * PAIR_BINS - 2).long() + PAIR_BINS + 1
        for axis, limit in ((0, cols), (1, rows))
    )
    key = (image * rows + y) * cols + x
    in_bin = torch.bincount(key, minlength=n * rows * cols)
    step = torch.arange(-PAIR_BINS, PAIR_BINS + 1, device=aim.device)
    around = (key[:, None] + (step[:, None] * cols + step[None, :]).flatten()).flatten()
    return torch.argsort(key), (torch.cumsum(in_bin, 0) - in_bin)[around], in_bin[around]


def _vote_pairs(
    aim: Tensor, image: Tensor, reach: float, n: int, height: int, width: int
) -> tuple[Tensor, Tensor] | None:
    """(v, u): every pair of votes of one image whose aims lie within `reach` of each other, and
    more (each vote with itself too): each vote meets the votes in the bins up to PAIR_BINS
    away (`_bins`), all those nearer than PAIR_BINS x reach. The density of votes misses only
    farther ones, whose kernel is below 1e-7 of their weight. None where there would be more
    than VOTE_PAIRS pairs."""
    sorter, first, count = _bins(aim, image, reach, n, height, width)
    if int(count.sum()) > VOTE_PAIRS:
        return None
    v = torch.arange(len(aim), device=aim.device).repeat_interleave((2 * PAIR_BINS + 1) ** 2)
    v = torch.repeat_interleave(v, count)
    first = torch.repeat_interleave(first, count)
    within = torch.arange(len(v), device=aim.device) - torch.repeat_interleave(
        torch.cumsum(count, 0) - count, count
    )
    return v, sorter[first + within]


def _spots_in_groups(
    image: Tensor,
    where: Tensor,
    weight: Tensor,
    aim: Tensor,
    reach: float,
    radius: float,
    size: tuple[int, ...],
) -> tuple[Tensor, Tensor, Tensor]:
    """`_spots_of_votes` for votes of too many pairs to compare at once: images in groups of at
    most VOTE_PAIRS pairs, and an image of more alone (a model whose votes crowd together) read
    from its surest votes, halved until they fit. Returns each vote's image, spot and confidence."""
    n, height, width = size
    per_vote = _bins(aim, image, reach, n, height, width)[2].view(len(aim), -1).sum(1)
    per_image = torch.zeros(n, dtype=torch.long, device=aim.device).index_add_(0, image, per_vote).tolist()
    groups, start, total = [], 0, 0
    for i, pairs in enumerate(per_image):
        if i > start and total + pairs > VOTE_PAIRS:
            groups.append((start, i))
            start, total = i, 0
        total += pairs
    groups.append((start, n))
    parts = []
    for first, stop in groups:
        mine = (image >= first) & (image < stop)
        votes = [image[mine], where[mine], weight[mine], aim[mine]]
        while (pairs := _vote_pairs(votes[3], votes[0], reach, n, height, width)) is None:
            surest = torch.topk(votes[2], len(votes[2]) // 2).indices.sort().values  # in their order
            votes = [part[surest] for part in votes]
        parts.append((votes[0], *_spots_of_votes(votes[3], votes[2], votes[1], pairs, radius)))
    image, points, confidence = (torch.cat(column) for column in zip(*parts, strict=True))
    return image, points, confidence


def _spots_of_votes(
    aim: Tensor, weight: Tensor, where: Tensor, pairs: tuple[Tensor, Tensor], radius: float
) -> tuple[Tensor, Tensor]:
    """(V, 2) spot positions and (V,) confidences (0: no spot) from votes at `aim` of `weight`,
    cast by the pixels at `where`, compared in `pairs` (`_vote_pairs`; a vote ranks before
    another of its image if it comes first): the modes of the votes' density, each gathering
    the votes nearest to it within SPOT_RADIUS (or `radius`, when larger). Only the pixels
    around the mode's own pixel, whose offsets training taught, place it; farther pixels that
    point at it add to its confidence only."""
    v, u = pairs
    count = len(aim)
    gap = (aim[v] - aim[u]).norm(dim=-1)
    # far votes add nothing: exp of an argument below -87 takes a slow path (subnormal results)
    exponent = -(gap**2) / (2 * VOTE_KERNEL**2)
    kernel = torch.exp(exponent.clamp(min=-80.0)).masked_fill_(exponent < -80.0, 0.0)
    density = torch.zeros_like(weight).index_add_(0, v, weight[u] * kernel)
    # vote v is beaten by u when u is denser (or as dense and ranked before it, to break ties)
    beaten = (density[u] > density[v]) | ((density[u] == density[v]) & (u < v))
    # within SPOT_RADIUS a denser vote of a far surer pixel beats it too: the stray votes of a
    # spot's rim, farther than a small radius from its centre, make no spots of their own
    surer = weight[u] > DOMINANCE * weight[v]
    loses = beaten & ((gap < radius) | ((gap < SPOT_RADIUS) & surer))
    mode = (
        torch.zeros(count, dtype=torch.bool, device=aim.device).index_fill_(0, v[loses], True).logical_not_()
    )
    to_mode = gap.masked_fill(~mode[u], math.inf)  # distance of each vote to each mode
    nearest = torch.full_like(weight, math.inf).scatter_reduce_(0, v, to_mode, "amin")
    closest = mode[u] & (to_mode == nearest[v])  # of modes as near, the first in rank
    owner = torch.full((count,), count, device=aim.device).scatter_reduce_(0, v[closest], u[closest], "amin")
    joins = nearest < max(radius, SPOT_RADIUS)
    owner = torch.where(joins, owner, torch.arange(count, device=aim.device))
    mass = torch.zeros_like(weight).index_add_(0, owner, weight * joins)
    home = torch.floor(aim[owner] + 0.5)  # its mode's pixel
    taught = joins & ((where - home).abs().amax(-1) <= 1)
    # placed by the odds p / (1 - p), as the softmax of the logits places a lone spot: the surest
    # pixels count most, which brings the positions nearer the bound than weighing by p
    odds = weight / (1 - weight).clamp(min=1e-6) * taught
    placed = torch.zeros_like(weight).index_add_(0, owner, odds)
    total = torch.zeros_like(aim).index_add_(0, owner, odds[:, None] * aim)
    points = torch.where((placed > 0)[:, None], total / placed.clamp(min=1e-12)[:, None], aim)
    confidence = torch.where(mode, mass.clamp(max=1.0), torch.zeros_like(mass))
    return points, confidence
