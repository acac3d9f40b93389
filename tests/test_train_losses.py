"""Triplet mining and losses, ArcFace and the combined loss, against naive python-loop references:
values and gradients (torch.autograd), plus miners on hand-made distance matrices."""

from __future__ import annotations

import math

import pytest
import torch

from facerec.train.losses import (
    ArcFaceHead,
    CombinedLoss,
    TripletLoss,
    all_triplets,
    batch_hard_triplets,
    pairwise_distances,
    semi_hard_triplets,
)

LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 3]  # identity 3 has a single image: never an anchor


# ------------------------------------------------------------------------------------ naive references
def ref_dist(e: torch.Tensor, distance: str) -> list[list[torch.Tensor]]:
    u = [v / v.norm() for v in e]
    n = len(u)
    if distance == "euclidean":
        return [[(u[i] - u[j]).norm() if i != j else u[i].sum() * 0 for j in range(n)] for i in range(n)]
    return [[1 - (u[i] * u[j]).sum() for j in range(n)] for i in range(n)]


def ref_triplets(d, labels, mining: str, margin: float) -> list[tuple[int, int, int]]:
    n = len(labels)
    val = [[float(d[i][j].detach()) for j in range(n)] for i in range(n)]
    out = []
    if mining == "batch_hard":
        for a in range(n):
            pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
            neg = [q for q in range(n) if labels[q] != labels[a]]
            if pos and neg:
                out.append((a, max(pos, key=lambda p: val[a][p]), min(neg, key=lambda q: val[a][q])))
    elif mining == "semi_hard":
        for a in range(n):
            for p in range(n):
                if p == a or labels[p] != labels[a]:
                    continue
                band = [q for q in range(n) if labels[q] != labels[a] and val[a][p] < val[a][q] < val[a][p] + margin]
                if band:
                    out.append((a, p, min(band, key=lambda q: val[a][q])))
    else:
        for a in range(n):
            for p in range(n):
                for q in range(n):
                    if p != a and labels[p] == labels[a] and labels[q] != labels[a]:
                        out.append((a, p, q))
    return out


def ref_triplet_loss(e: torch.Tensor, labels, mining: str, margin: float, distance: str) -> torch.Tensor:
    d = ref_dist(e, distance)
    trips = ref_triplets(d, labels, mining, margin)
    losses = [torch.clamp(d[a][p] - d[a][q] + margin, min=0) for a, p, q in trips]
    if not losses:
        return e.sum() * 0
    total = sum(losses)
    if mining == "all":
        active = sum(1 for v in losses if float(v.detach()) > 0)
        return total / active if active else total * 0
    return total / len(losses)


def ref_arcface_loss(e, w, labels, s, m, easy_margin) -> torch.Tensor:
    th, mm = math.cos(math.pi - m), math.sin(math.pi - m) * m
    total = 0
    for i in range(len(e)):
        ui = e[i] / e[i].norm()
        logits = []
        for j in range(len(w)):
            c = (ui * (w[j] / w[j].norm())).sum()
            if j == labels[i]:
                if easy_margin:
                    phi = torch.cos(torch.acos(c) + m) if float(c.detach()) > 0 else c
                else:
                    phi = torch.cos(torch.acos(c) + m) if float(c.detach()) > th else c - mm
                logits.append(s * phi)
            else:
                logits.append(s * c)
        logits = torch.stack(logits)
        total = total + (torch.logsumexp(logits, 0) - logits[labels[i]])
    return total / len(e)


# ------------------------------------------------------------------------------------------------ miners
def hand_made() -> tuple[torch.Tensor, torch.Tensor]:
    """5 samples, labels A A A B B; distances chosen so each anchor's hardest pair is known."""
    labels = torch.tensor([0, 0, 0, 1, 1])
    d = torch.tensor([
        [0.0, 0.3, 0.9, 0.5, 1.2],
        [0.3, 0.0, 0.4, 0.75, 0.35],
        [0.9, 0.4, 0.0, 1.0, 0.8],
        [0.5, 0.75, 1.0, 0.0, 0.6],
        [1.2, 0.35, 0.8, 0.6, 0.0],
    ])
    return d, labels


def test_batch_hard_on_hand_made_batch():
    d, labels = hand_made()
    a, p, n = batch_hard_triplets(d, labels)
    # anchor 0: positives 1 (0.3), 2 (0.9) -> 2; negatives 3 (0.5), 4 (1.2) -> 3
    # anchor 1: positives 0 (0.3), 2 (0.4) -> 2; negatives 3 (0.75), 4 (0.35) -> 4
    # anchor 2: positives 0 (0.9), 1 (0.4) -> 0; negatives 3 (1.0), 4 (0.8) -> 4
    # anchor 3: positive 4; negatives 0 (0.5), 1 (0.75), 2 (1.0) -> 0
    # anchor 4: positive 3; negatives 0 (1.2), 1 (0.35), 2 (0.8) -> 1
    assert a.tolist() == [0, 1, 2, 3, 4]
    assert p.tolist() == [2, 2, 0, 4, 3]
    assert n.tolist() == [3, 4, 4, 0, 1]


def test_batch_hard_skips_anchors_without_positive_or_negative():
    d = torch.rand(4, 4)
    a, p, n = batch_hard_triplets(d, torch.tensor([0, 0, 1, 2]))
    assert a.tolist() == [0, 1]
    assert p.tolist() == [1, 0]
    a, _, _ = batch_hard_triplets(d, torch.tensor([5, 5, 5, 5]))  # no negatives at all
    assert a.numel() == 0


def test_semi_hard_selection_on_hand_made_batch():
    d, labels = hand_made()
    a, p, n = semi_hard_triplets(d, labels, margin=0.3)
    got = set(zip(a.tolist(), p.tolist(), n.tolist()))
    # (0,1): d_ap .3, band (.3,.6): neg 3 (.5) -> (0,1,3);  (0,2): d_ap .9, band (.9,1.2): none (1.2 not <)
    # (1,0): .3 band (.3,.6): 4 (.35) -> (1,0,4);  (1,2): .4 band (.4,.7): none (.75 beyond, .35 not >)
    # (2,0): .9 band (.9,1.2): 3 (1.0) -> (2,0,3);  (2,1): .4 band (.4,.7): none
    # (3,4): .6 band (.6,.9): 1 (.75) -> (3,4,1);   (4,3): .6 band (.6,.9): 2 (.8) -> (4,3,2)
    assert got == {(0, 1, 3), (1, 0, 4), (2, 0, 3), (3, 4, 1), (4, 3, 2)}
    for a_, p_, n_ in got:  # every one semi-hard
        assert d[a_, p_] < d[a_, n_] < d[a_, p_] + 0.3


def test_semi_hard_picks_the_hardest_negative_in_the_band():
    labels = torch.tensor([0, 0, 1, 1, 1])
    d = torch.zeros(5, 5)
    d[0, 1] = d[1, 0] = 0.5
    d[0, 2], d[0, 3], d[0, 4] = 0.7, 0.6, 0.45  # band (0.5, 0.8): 2 and 3; 4 is hard, not semi-hard
    d[1, 2:] = 2.0
    a, p, n = semi_hard_triplets(d, labels, margin=0.3)
    assert list(zip(a.tolist(), p.tolist(), n.tolist()))[0] == (0, 1, 3)
    assert (1, 0) not in set(zip(a.tolist(), p.tolist()))  # its negatives are all beyond the margin


def test_all_triplets_counts():
    labels = torch.tensor(LABELS)
    a, p, n = all_triplets(labels)
    expected = sum((LABELS.count(l) - 1) * (len(LABELS) - LABELS.count(l)) for l in LABELS)
    assert a.numel() == expected
    assert all(LABELS[x] == LABELS[y] and x != y and LABELS[x] != LABELS[z]
               for x, y, z in zip(a.tolist(), p.tolist(), n.tolist()))


# ----------------------------------------------------------------------------------- triplet loss values
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_pairwise_distances_match_loops(distance):
    torch.manual_seed(0)
    e = torch.randn(7, 5)
    d = pairwise_distances(e, distance)
    ref = ref_dist(e, distance)
    for i in range(7):
        for j in range(7):
            assert float(d[i, j]) == pytest.approx(float(ref[i][j]), abs=1e-5)


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard", "all"])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_triplet_loss_value_and_gradient_match_reference(mining, distance):
    torch.manual_seed(1)
    margin = 0.5 if distance == "euclidean" else 0.3
    e = torch.randn(len(LABELS), 6, requires_grad=True)
    labels = torch.tensor(LABELS)
    loss = TripletLoss(margin, mining, distance)(e, labels)
    (grad,) = torch.autograd.grad(loss, e)
    e_ref = e.detach().clone().requires_grad_(True)
    ref = ref_triplet_loss(e_ref, LABELS, mining, margin, distance)
    (grad_ref,) = torch.autograd.grad(ref, e_ref)
    assert float(ref.detach()) > 0  # the test exercises a non-trivial loss
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-6)


def test_triplet_loss_zero_when_no_triplet_but_differentiable():
    e = torch.randn(3, 4, requires_grad=True)
    loss = TripletLoss(0.2, "batch_hard")(e, torch.tensor([0, 1, 2]))  # no positives
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(e.grad, torch.zeros_like(e))


def test_triplet_loss_is_zero_for_well_separated_clusters():
    e = torch.tensor([[1.0, 0.0], [0.99, 0.01], [0.0, 1.0], [0.01, 0.99]])
    for mining in ("batch_hard", "semi_hard", "all"):
        assert float(TripletLoss(0.2, mining)(e, torch.tensor([0, 0, 1, 1])).detach()) == 0.0


# ------------------------------------------------------------------------------------------------ ArcFace
@pytest.mark.parametrize("easy_margin", [False, True])
def test_arcface_value_and_gradients_match_reference(easy_margin):
    torch.manual_seed(2)
    head = ArcFaceHead(8, 5, s=16.0, m=0.5, easy_margin=easy_margin)
    e = torch.randn(10, 8, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    # make two rows far from their class centre: exercises the theta + m > pi branch (cos < th)
    with torch.no_grad():
        e[0] = -head.weight[0] + 0.01 * torch.randn(8)
        e[6] = -head.weight[1] + 0.01 * torch.randn(8)
    loss = head.loss(e, labels)
    g_e, g_w = torch.autograd.grad(loss, [e, head.weight])
    w_ref = head.weight.detach().clone().requires_grad_(True)
    e_ref = e.detach().clone().requires_grad_(True)
    ref = ref_arcface_loss(e_ref, w_ref, labels.tolist(), 16.0, 0.5, easy_margin)
    r_e, r_w = torch.autograd.grad(ref, [e_ref, w_ref])
    cos = head.cosine(e.detach())
    assert float(cos[0, 0].detach()) < head.th  # the fallback branch was really taken
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(g_e, r_e, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g_w, r_w, rtol=1e-4, atol=1e-6)


def test_arcface_margin_zero_is_normalised_softmax():
    torch.manual_seed(3)
    head = ArcFaceHead(4, 3, s=10.0, m=0.0)
    e = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    plain = torch.nn.functional.cross_entropy(head(e), labels)  # no labels: s * cos
    assert float(head.loss(e, labels).detach()) == pytest.approx(float(plain.detach()), rel=1e-5)


def test_arcface_logits_apply_margin_to_true_class_only():
    head = ArcFaceHead(2, 2, s=1.0, m=0.3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    theta = 0.4
    e = torch.tensor([[math.cos(theta), math.sin(theta)]])
    logits = head(e, torch.tensor([0]))
    assert float(logits[0, 0].detach()) == pytest.approx(math.cos(theta + 0.3), abs=1e-6)
    assert float(logits[0, 1].detach()) == pytest.approx(math.sin(theta), abs=1e-6)


def test_arcface_is_finite_at_cos_one():
    head = ArcFaceHead(3, 2, s=64.0, m=0.5)
    e = head.weight.detach()[:1].clone().requires_grad_(True)  # exactly the class centre: cos = 1
    loss = head.loss(e, torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(e.grad).all() and torch.isfinite(head.weight.grad).all()


# ------------------------------------------------------------------------------------------------ combined
def test_combined_loss_is_weighted_sum():
    torch.manual_seed(4)
    e = torch.randn(len(LABELS), 6)
    labels = torch.tensor(LABELS)
    trip = TripletLoss(0.3, "batch_hard")
    head = ArcFaceHead(6, 4, s=8.0, m=0.2)
    total, parts = CombinedLoss(0.7, 0.3, triplet=trip, arcface=head)(e, labels)
    expected = 0.7 * trip(e, labels) + 0.3 * head.loss(e, labels)
    assert float(total.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert set(parts) >= {"triplet", "arcface"}
    only_triplet, parts = CombinedLoss(1.0, 0.0, triplet=trip)(e, labels)
    assert float(only_triplet.detach()) == pytest.approx(float(trip(e, labels).detach()))
    assert "arcface" not in parts
    assert len(list(CombinedLoss(0.5, 1.0, triplet=trip, arcface=head).parameters())) == 1  # the head's weight
    with pytest.raises(ValueError):
        CombinedLoss(0.0, 0.0)
    with pytest.raises(ValueError):
        CombinedLoss(1.0, 1.0)  # ArcFace needs a head
