"""distillkit.classify.research: every module against a reference or hand computation, on tiny inputs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import torch.nn.functional as F
from peft import PeftConfig
from safetensors.torch import load_file, save_file
from torch import nn

from distillkit.classify.mixing import BatchMixer, tokenmix
from distillkit.classify.models import ClassifierSpec, build_classifier
from distillkit.classify.research.gate import DynamicHeadGate
from distillkit.classify.research.hybrid import HybridBackbone
from distillkit.classify.research.lora import load_lora_adapter, save_lora_adapter
from distillkit.classify.research.margins import (
    AdaFaceLoss,
    ArcFaceLoss,
    CosineHead,
    CurricularFaceLoss,
)
from distillkit.classify.research.objectives import (
    EvidentialLoss,
    evidential_uncertainty,
    kl_to_uniform_dirichlet,
    supcon_loss,
    uncertainty_summary,
)
from distillkit.classify.research.optim import SAM, GradientCentralization, Lookahead, wrap_optimizer
from distillkit.classify.research.spec import ResearchModel
from distillkit.classify.research.token_learner import TokenLearner
from distillkit.classify.research.token_merging import (
    apply_token_merging,
    bipartite_soft_matching,
    merge_weighted_average,
)
from distillkit.classify.research.views import random_views

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_vit(**kwargs: Any) -> nn.Module:
    torch.manual_seed(0)
    options = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2, "num_classes": 0}
    options.update(kwargs)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **options)


def tiny_cnn() -> nn.Module:
    return timm.create_model("test_efficientnet", pretrained=False, num_classes=0)


# ------------------------------------------------------------------ backbone modules


def test_gate_matches_its_formula_and_passes_gradients() -> None:
    torch.manual_seed(0)
    gate = DynamicHeadGate(8, reduction=2)
    z = torch.randn(3, 8, requires_grad=True)
    out = gate(z)
    alpha = torch.sigmoid(
        gate.fc2.weight @ torch.relu(gate.fc1.weight @ z.T + gate.fc1.bias[:, None]) + gate.fc2.bias[:, None]
    ).T
    assert out.shape == (3, 8)
    assert torch.allclose(out, z * alpha, atol=1e-6)
    assert bool(((alpha > 0) & (alpha < 1)).all())
    out.sum().backward()
    assert z.grad is not None and gate.fc1.weight.grad is not None and gate.fc1.weight.grad.abs().sum() > 0


def test_token_learner_outputs_k_weighted_averages() -> None:
    torch.manual_seed(0)
    learner = TokenLearner(16, num_tokens=3)
    x = torch.randn(2, 10, 16, requires_grad=True)
    out = learner(x)
    weights = learner.attention(x)
    assert out.shape == (2, 3, 16)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3), atol=1e-6)
    assert torch.allclose(out[1, 2], (weights[1, 2, :, None] * x[1]).sum(0), atol=1e-5)
    out.pow(2).sum().backward()
    assert learner.mlp[0].weight.grad is not None and x.grad is not None


def naive_tome(metric: torch.Tensor, x: torch.Tensor, size: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image, the paper's algorithm with Python loops (class token at position 0 protected)."""
    a_idx, b_idx = list(range(0, len(x), 2)), list(range(1, len(x), 2))
    unit = metric / metric.norm(dim=-1, keepdim=True)
    best = {}
    for i in a_idx:
        sims = [float(unit[i] @ unit[j]) for j in b_idx]
        score = -math.inf if i == 0 else max(sims)
        best[i] = (score, b_idx[sims.index(max(sims))])
    merged = sorted(a_idx, key=lambda i: -best[i][0])[:r]
    tokens = {j: (x[j] * size[j], size[j].clone()) for j in b_idx}
    for i in merged:
        total, count = tokens[best[i][1]]
        tokens[best[i][1]] = (total + x[i] * size[i], count + size[i])
    kept = [i for i in a_idx if i not in merged]
    out = [x[i] for i in kept] + [tokens[j][0] / tokens[j][1] for j in b_idx]
    sizes = [size[i] for i in kept] + [tokens[j][1] for j in b_idx]
    return torch.stack(out), torch.stack(sizes)


def test_bipartite_soft_matching_matches_a_loop_reference() -> None:
    torch.manual_seed(3)
    metric, x = torch.randn(2, 9, 4), torch.randn(2, 9, 5)
    size = torch.randint(1, 4, (2, 9, 1)).float()
    merge = bipartite_soft_matching(metric, r=3, class_token=True)
    merged, new_size = merge_weighted_average(merge, x, size)
    assert merged.shape == (2, 6, 5)
    for b in range(2):
        ref_x, ref_size = naive_tome(metric[b], x[b], size[b], 3)
        assert torch.allclose(merged[b], ref_x, atol=1e-5)
        assert torch.allclose(new_size[b], ref_size)
        assert torch.allclose(merged[b, 0], x[b, 0])  # the class token is untouched
    # size-weighted averaging preserves the size-weighted sum of all tokens
    assert torch.allclose((merged * new_size).sum(1), (x * size).sum(1), atol=1e-4)


def test_token_merging_patch_keeps_weights_and_reduces_tokens() -> None:
    vit = tiny_vit(depth=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = vit(x)
        keys = set(vit.state_dict())
        apply_token_merging(vit, 0.25)
        assert set(vit.state_dict()) == keys
        seen: list[int] = []
        hooks = [block.register_forward_hook(lambda m, i, o: seen.append(o.shape[1])) for block in vit.blocks]
        merged = vit(x)
        again = vit(x)  # the size state is reset between forwards
    for hook in hooks:
        hook.remove()
    assert seen[:3] == [1 + 16 - 4, 1 + 12 - 3, 1 + 9 - 2]
    assert merged.shape == reference.shape and torch.allclose(merged, again)
    assert not torch.allclose(merged, reference)
    vit.train()
    vit(x).sum().backward()
    assert vit.blocks[0].attn.qkv.weight.grad is not None


def test_token_merging_attention_without_merges_equals_timm_attention() -> None:
    vit = tiny_vit(depth=1).eval()
    block = vit.blocks[0]
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        plain = block.attn(block.norm1(x))
        apply_token_merging(vit, 0.1)
        patched, keys = block.attn(block.norm1(x))
        with_unit_sizes, _ = block.attn(block.norm1(x), torch.ones(2, 17, 1))
    assert torch.allclose(plain, patched, atol=1e-5) and torch.allclose(plain, with_unit_sizes, atol=1e-5)
    assert keys.shape == (2, 17, 16)


def test_token_merging_refuses_cnns_and_bad_ratios() -> None:
    with pytest.raises(ValueError):
        apply_token_merging(tiny_cnn(), 0.2)
    with pytest.raises(ValueError):
        apply_token_merging(tiny_vit(), 0.7)


def test_hybrid_backbone_shapes_gradients_and_token_learner() -> None:
    torch.manual_seed(0)
    model = HybridBackbone(tiny_cnn(), tiny_vit(depth=2), num_classes=4, fusion_dim=24, token_learner_tokens=3)
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (2, 24) and model(x).shape == (2, 4)
    z, alpha = model.fused(x)
    assert z.shape == (2, 256 + 32) and alpha.shape == z.shape
    seen: list[int] = []
    hook = model.vit_stream.vit.blocks[1].register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    model(x).sum().backward()
    hook.remove()
    assert seen == [1 + 3]  # the second half of the ViT runs on class token + K learned tokens
    for module in (model.gate.fc1, model.proj[0], model.vit_stream.token_learner.mlp[0], model.head):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
    assert model.cnn.conv_stem.weight.grad is not None


def test_research_names_round_trip_and_build_through_the_registry() -> None:
    spec = ResearchModel(
        "test_efficientnet", vit="test_vit", tokens=2, head="cosine", img=32, vit_depth=1, tome=0.2, lora=2
    )
    assert ResearchModel.parse(spec.name) == spec
    built = build_classifier(ClassifierSpec(spec.name, num_classes=3)).model
    logits, pooled = built.forward_with_features(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 3) and pooled.shape == (2, 256)
    assert isinstance(built.backbone.get_classifier(), CosineHead)
    assert logits.abs().max() <= 30.0 + 1e-4


def test_lora_trains_only_adapters_and_head_and_saves_them_apart(tmp_path: Path) -> None:
    name = ResearchModel("test_vit", img=32, vit_depth=1, lora=2).name
    model = build_classifier(ClassifierSpec(name, num_classes=3)).model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("backbone.head.") for n in trainable)
    assert any("qkv.lora_A" in n for n in trainable)
    frozen_before = model.backbone.blocks[0].attn.qkv.base_layer.weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])).backward()
        optimizer.step()
    assert torch.equal(model.backbone.blocks[0].attn.qkv.base_layer.weight, frozen_before)
    folder = save_lora_adapter(model.backbone, tmp_path / "adapter")
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    config = PeftConfig.from_pretrained(str(folder))  # peft's own layout, written by save_pretrained
    assert config.peft_type == "LORA" and config.r == 2 and "blocks.0.attn.qkv" in config.target_modules
    fresh = build_classifier(ClassifierSpec(name, num_classes=3)).model
    load_lora_adapter(fresh.backbone, folder)
    b_trained = model.backbone.blocks[0].attn.qkv.lora_B.default.weight
    assert b_trained.abs().sum() > 0
    assert torch.equal(fresh.backbone.blocks[0].attn.qkv.lora_B.default.weight, b_trained)
    # an adapter folder of the earlier hand-written layout (keys without peft's prefix) still loads
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    weights = load_file(str(folder / "adapter_model.safetensors"))
    save_file(
        {key.removeprefix("base_model.model."): value for key, value in weights.items()},
        earlier / "adapter_model.safetensors",
    )
    again = build_classifier(ClassifierSpec(name, num_classes=3)).model
    load_lora_adapter(again.backbone, earlier)
    assert torch.equal(again.backbone.blocks[0].attn.qkv.lora_B.default.weight, b_trained)


# ------------------------------------------------------------------ heads and losses


def test_cosine_head_is_scaled_cosine() -> None:
    head = CosineHead(3, 2, scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
    out = head(torch.tensor([[3.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    assert torch.allclose(out, torch.tensor([[10.0, 0.0], [10 / math.sqrt(2), 10 / math.sqrt(2)]]), atol=1e-5)


def test_arcface_against_hand_computation() -> None:
    cos = torch.tensor([[0.6, 0.2, -0.1]])
    loss = ArcFaceLoss(scale=2.0, margin=0.3)(cos, torch.tensor([0]))
    target = math.cos(math.acos(0.6) + 0.3)
    logits = [2 * target, 0.4, -0.2]
    expected = -logits[0] + math.log(sum(math.exp(v) for v in logits))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # beyond theta > pi - m, the fallback cos - m sin(m) keeps the target decreasing in theta
    fallback = ArcFaceLoss(2.0, 0.3).margin_cosines(torch.tensor([[-0.99, 0.0]]), torch.tensor([0]))
    assert fallback[0, 0].item() == pytest.approx(-0.99 - math.sin(math.pi - 0.3) * 0.3, rel=1e-5)


def test_curricularface_against_hand_computation() -> None:
    loss_fn = CurricularFaceLoss(scale=1.0, margin=0.5)
    cos = torch.tensor([[0.5, 0.45, -0.2]])
    t = 0.01 * 0.5  # t starts at 0 and moves 1 % towards the batch target cosine
    target = math.cos(math.acos(0.5) + 0.5)  # 0.0266: the negative 0.45 is "hard", -0.2 is not
    logits = [target, 0.45 * (t + 0.45), -0.2]
    expected = -logits[0] + math.log(sum(math.exp(v) for v in logits))
    assert loss_fn(cos, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-4)
    assert loss_fn.t.item() == pytest.approx(t)


def test_adaface_margin_follows_the_feature_norm() -> None:
    loss_fn = AdaFaceLoss(scale=1.0, margin=0.4).eval()  # eval: the running stats stay as set
    loss_fn.batch_mean.fill_(10.0)
    loss_fn.batch_std.fill_(10.0)
    cos = torch.tensor([[0.5, 0.1], [0.5, 0.1]])
    norms = torch.tensor([50.0, 10.0])  # z = clip(40 / (10 / 0.333)) = 1 (easy) and z = 0 (average)
    out = loss_fn.margin_cosines(cos, torch.tensor([0, 0]), norms)
    assert out[0, 0].item() == pytest.approx(math.cos(math.acos(0.5) - 0.4) - 0.8, abs=1e-3)
    assert out[1, 0].item() == pytest.approx(0.5 - 0.4, abs=1e-5)
    assert torch.equal(out[:, 1], cos[:, 1])
    train = AdaFaceLoss(1.0, 0.4)
    train(cos.requires_grad_(), torch.tensor([0, 0]), torch.tensor([10.0, 30.0]))
    assert train.batch_mean.item() == pytest.approx(0.99 * 20 + 0.01 * 20.0)


def test_supcon_against_hand_computation() -> None:
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [-1.0, 0.0]]])  # 2 images x 2 views
    labels = torch.tensor([0, 1])
    loss = supcon_loss(z, labels, temperature=1.0)
    flat = z.reshape(4, 2)
    sims = flat @ flat.T
    total = 0.0
    for i, p in ((0, 1), (1, 0), (2, 3), (3, 2)):
        denominator = sum(math.exp(sims[i, a]) for a in range(4) if a != i)
        total += -(sims[i, p].item() - math.log(denominator))
    assert loss.item() == pytest.approx(total / 4, rel=1e-5)
    features = torch.randn(4, 3, 8, requires_grad=True)
    supcon_loss(features, torch.tensor([0, 0, 1, 1])).backward()
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_evidential_loss_and_uncertainty_against_hand_computation() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    alpha = [math.log1p(math.exp(v)) + 1 for v in (2.0, -1.0, 0.0)]
    s = sum(alpha)
    p = [a / s for a in alpha]
    expected = sum((t - q) ** 2 + q * (1 - q) / (s + 1) for t, q in zip((1, 0, 0), p, strict=True))
    loss_fn = EvidentialLoss(kl_weight=1.0, anneal_epochs=2)
    loss_fn.set_epoch(1)
    assert loss_fn(logits, y).item() == pytest.approx(expected, rel=1e-5)
    assert evidential_uncertainty(logits).item() == pytest.approx(3 / s, rel=1e-6)
    # KL(Dir(a) || Dir(1)) by hand for a = (1, alpha_2, alpha_3) (the true class's evidence removed)
    a = torch.tensor([[1.0, alpha[1], alpha[2]]])
    by_hand = (
        math.lgamma(a.sum().item())
        - math.lgamma(3)
        - sum(math.lgamma(v) for v in a[0].tolist())
        + sum((v - 1) * (torch.digamma(torch.tensor(v)) - torch.digamma(a.sum())).item() for v in a[0].tolist())
    )
    assert kl_to_uniform_dirichlet(a).item() == pytest.approx(by_hand, rel=1e-5)
    loss_fn.set_epoch(2)
    assert loss_fn.current_kl == pytest.approx(0.5)
    assert loss_fn(logits, y).item() == pytest.approx(expected + 0.5 * by_hand, rel=1e-5)


def test_uncertainty_summary_ranks_errors() -> None:
    summary = uncertainty_summary(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([True, True, False, True]), bins=2)
    assert summary["mean_u_wrong"] == pytest.approx(0.8)
    assert summary["auroc"] == pytest.approx(2 / 3)
    assert [row["error_rate"] for row in summary["bins"]] == [0.0, 0.5]


def test_mixing_strategies() -> None:
    torch.manual_seed(0)
    images = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 3, 32, 32).contiguous()
    mixed, kept = tokenmix(images, torch.tensor([1, 0]), lam=0.75, patch_size=8)
    # each 8x8 cell is wholly one image; the share kept matches the pixels that stayed
    cells = mixed[0, 0].unfold(0, 8, 8).unfold(1, 8, 8)
    assert bool((cells.amin((-1, -2)) == cells.amax((-1, -2))).all())
    assert kept == pytest.approx(1 - float(mixed[0, 0].mean()))
    assert kept == pytest.approx(0.75)
    targets = torch.eye(2)
    for strategy in ("mixup", "cutmix", "tokenmix"):
        batch = BatchMixer.strategy(strategy, alpha=1.0, patch_size=8).mix(images, targets)
        assert torch.allclose(batch.soft_targets.sum(1), torch.ones(2))
    assert BatchMixer.strategy("none").mix(images, targets).lam == 1.0
    with pytest.raises(ValueError):
        BatchMixer.strategy("bogus")


def test_every_run_builds_its_mixer_from_the_same_settings() -> None:
    from distillkit.classify.mixing import build_mixer
    from distillkit.config import build_config

    overrides = ["classifier.head=arcface", "classifier.mixup_alpha=0.2", "classifier.cutmix_alpha=1.0"]
    settings = build_config(["classifier"], overrides=overrides).classifier
    mixer, notices = build_mixer(settings, False, nn.Linear(2, 2))  # a margin-head run: cutmix too, not mixup only
    assert (mixer.mixup_alpha, mixer.cutmix_alpha) == (0.2, 1.0) and not notices
    assert not build_mixer(settings, True, nn.Linear(2, 2))[0].enabled  # auto: off for multi-label data
    settings.mixing = "tokenmix"
    mixer, notices = build_mixer(settings, True, nn.Linear(2, 2))
    assert mixer.tokenmix_alpha == settings.mixing_alpha and mixer.patch_size == 16 and "16-pixel" in notices[0]


def test_random_views_shape_and_difference() -> None:
    torch.manual_seed(0)
    views = random_views(torch.randn(3, 3, 16, 16), num_views=2)
    assert views.shape == (3, 2, 3, 16, 16)
    assert not torch.allclose(views[:, 0], views[:, 1])


# ------------------------------------------------------------------ optimisers


def quadratic() -> tuple[nn.Parameter, Any]:
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    target = torch.tensor([0.5, 0.5])

    def loss_at() -> torch.Tensor:
        return ((w - target) ** 2 * torch.tensor([1.0, 3.0])).sum()

    return w, loss_at


def test_sam_two_step_update_matches_hand_computation() -> None:
    w, loss_at = quadratic()
    optimizer = SAM(torch.optim.SGD([w], lr=0.1), rho=0.5)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_at()
        loss.backward()
        return loss

    closure()
    g = w.grad.detach().clone()  # gradient at w
    w0 = w.detach().clone()
    perturbed = w0 + 0.5 * g / g.norm()
    g_adv = 2 * (perturbed - torch.tensor([0.5, 0.5])) * torch.tensor([1.0, 3.0])
    optimizer.step(closure)
    assert torch.allclose(w.detach(), w0 - 0.1 * g_adv, atol=1e-6)
    assert optimizer.requires_closure
    with pytest.raises(RuntimeError):
        optimizer.step()


def test_lookahead_slow_and_fast_weights() -> None:
    w, loss_at = quadratic()
    optimizer = Lookahead(torch.optim.SGD([w], lr=0.1), k=2, alpha=0.5)
    start = w.detach().clone()
    fast = start.clone()
    for step in range(1, 5):
        optimizer.zero_grad()
        loss_at().backward()
        fast = fast - 0.1 * w.grad.detach()
        optimizer.step()
        if step % 2 == 0:
            start = start + 0.5 * (fast - start)
            fast = start.clone()
        assert torch.allclose(w.detach(), fast, atol=1e-6)
    assert torch.allclose(optimizer.slow[0], start, atol=1e-6)
    state = optimizer.state_dict()
    again = Lookahead(torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1), k=2, alpha=0.5)
    again.load_state_dict(state)
    assert again.fast_steps == 4 and torch.allclose(again.slow[0], start)


def test_gradient_centralization_gives_zero_mean_gradients() -> None:
    layer = nn.Linear(5, 3)
    optimizer = GradientCentralization(torch.optim.SGD(layer.parameters(), lr=0.0))
    layer(torch.randn(4, 5)).pow(2).sum().backward()
    bias_grad = layer.bias.grad.clone()
    optimizer.step()
    assert torch.allclose(layer.weight.grad.mean(dim=1), torch.zeros(3), atol=1e-6)
    assert torch.equal(layer.bias.grad, bias_grad)  # 1-D parameters are left alone


def test_wrappers_compose_with_a_scheduler_and_checkpoint() -> None:
    layer = nn.Linear(3, 2)
    optimizer = wrap_optimizer(
        torch.optim.AdamW(layer.parameters(), lr=0.1), sam_rho=0.05, lookahead_k=2, grad_centralization=True
    )
    assert isinstance(optimizer, Lookahead) and isinstance(optimizer.base, SAM)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    x = torch.randn(6, 3)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = layer(x).pow(2).mean()
        loss.backward()
        return loss

    for _ in range(3):
        closure()
        optimizer.step(closure)
        scheduler.step()
    innermost = optimizer.base.base.base
    assert innermost.param_groups[0]["lr"] == pytest.approx(0.05)
    state = optimizer.state_dict()
    twin = wrap_optimizer(
        torch.optim.AdamW(nn.Linear(3, 2).parameters(), lr=0.1), sam_rho=0.05, lookahead_k=2, grad_centralization=True
    )
    twin.load_state_dict(state)
    assert twin.fast_steps == 3
    with pytest.raises(ValueError):
        torch.optim.AdamW(layer.parameters()).load_state_dict(state) if False else Lookahead(
            torch.optim.AdamW(layer.parameters()), k=2
        ).load_state_dict(torch.optim.AdamW(layer.parameters()).state_dict())


# ------------------------------------------------------------------ end to end through train-classifier


def write_folders(root: Path, per_class: int = 10) -> Path:
    """Three colour classes, 32 px noise images in class-per-folder layout."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(3):
        folder = root / f"c{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (32, 32, 3)).astype(np.uint8)
            pixels[:, :, c] += 150
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


COMMON = [
    "training_dynamics.epochs=1",
    "training_dynamics.batch_size=8",
    "training_dynamics.num_workers=0",
    "training_dynamics.device=cpu",
    "classifier.imgsz=32",
    "classifier.pretrained=false",
    "augmentation.intensity=none",
    "classifier.topk=[1]",
]


def test_three_phase_recipe_end_to_end(tmp_path: Path) -> None:
    from distillkit.classify import load_classifier
    from distillkit.classify.research.recipe import run_three_phase_recipe

    data = write_folders(tmp_path / "data")
    result = run_three_phase_recipe(
        data,
        tmp_path / "exp",
        "test_efficientnet",
        overrides=COMMON,
        teacher_overrides=[
            "classifier.model=test_efficientnet",
            "classifier.hybrid_vit=test_vit",
            "classifier.token_learner_tokens=2",
            "classifier.fusion_dim=32",
            "classifier.sam_rho=0.05",
            "classifier.lookahead_k=2",
            "classifier.grad_centralization=true",
        ],
        student_overrides=["classifier.loss=evidential"],
    )
    assert "train/supcon" in result.supcon.history[0] and "train/probe" in result.supcon.history[0]
    teacher = load_classifier(result.finetune.best)
    assert teacher.meta.spec.name.startswith("research:") and "head=cosine" in teacher.meta.spec.name
    assert isinstance(teacher.model.backbone.get_classifier(), CosineHead)
    assert {"train/kd", "train/feature", "train/hard"} <= set(result.distill.history[0])
    student = load_classifier(result.distill.best)
    assert student.meta.spec.name == "research:backbone=test_efficientnet,evidential=1"
    config = (tmp_path / "exp" / "3_distill" / "classifier_config.yaml").read_text()
    assert "loss: evidential" in config and "2_finetune" in config
    # evaluate and infer report the evidential uncertainty u = K / S
    from distillkit.classify.evaluate import evaluate_classifiers
    from distillkit.classify.infer import classify_images

    evaluation = evaluate_classifiers([result.distill.best], data).to_dict()
    assert {"mean_u", "mean_u_right", "auroc", "bins"} <= set(evaluation["uncertainty"])
    images = sorted(data.rglob("*.png"))[:3]
    records = classify_images([result.distill.best], images).records
    assert all(0 < record["uncertainty"] <= 1 for record in records)
    assert "uncertainty" not in evaluate_classifiers([result.finetune.best], data).to_dict()


def test_lora_run_saves_adapters_and_resumes_with_wrapped_optimizer(tmp_path: Path) -> None:
    from distillkit.classify.train import train_classifier

    data = write_folders(tmp_path / "data", per_class=6)
    settings = [
        *COMMON,
        "classifier.model=test_vit",
        "classifier.lora_rank=2",
        "classifier.token_merging_ratio=0.25",
        "classifier.head=curricularface",
        "classifier.mixing=tokenmix",
        "classifier.sam_rho=0.05",
        "classifier.lookahead_k=2",
    ]
    first = train_classifier(data, tmp_path / "exp", overrides=settings)
    assert (tmp_path / "exp" / "lora_adapter" / "adapter_model.safetensors").is_file()
    assert "lora=2" in first.model and "tome=0.25" in first.model
    state = torch.load(tmp_path / "exp" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert state["optimizer"]["wrapper"] == "Lookahead" and state["optimizer"]["base"]["wrapper"] == "SAM"
    resumed = train_classifier(data, tmp_path / "exp", overrides=[*settings, "training_dynamics.epochs=2"], resume=True)
    assert resumed.epochs_run == 2


def test_research_switches_reject_multi_label_and_unknown_values(tmp_path: Path) -> None:
    from distillkit.config import build_config
    from distillkit.errors import ConfigError

    with pytest.raises(ConfigError):
        build_config(["classifier"], overrides=["classifier.head=sphereface"])
    with pytest.raises(ConfigError):
        build_config(["classifier"], overrides=["classifier.token_merging_ratio=0.9"])


def test_loss_computer_reuses_the_draw_for_the_same_batch_only() -> None:
    from distillkit.classify.loss_computer import LossComputer

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3 * 8 * 8, 2)
            self.seen: list[torch.Tensor] = []

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.seen.append(x.detach().clone())
            return self.linear(x.flatten(1)), x.flatten(1)

    model = Model()
    compute = LossComputer(criterion=nn.CrossEntropyLoss(), mixer=BatchMixer(mixup_alpha=1.0))
    torch.manual_seed(0)
    batch = (torch.randn(4, 3, 8, 8), torch.eye(2)[[0, 1, 0, 1]])
    compute(model, batch)
    compute(model, batch)  # SAM's second pass: the very same mixed images
    compute(model, (batch[0].clone(), batch[1]))  # a new batch: a new draw
    assert torch.equal(model.seen[0], model.seen[1]) and not torch.equal(model.seen[0], model.seen[2])


def test_research_architectures_say_they_have_no_published_weights() -> None:
    from distillkit.classify.models import ClassifierSpec, build_classifier

    built = build_classifier(ClassifierSpec("research:backbone=test_efficientnet,evidential=1", 3), pretrained=True)
    assert built.pretrained_from is None and len(built.notices) == 1
    assert "assembled by distillkit" in built.notices[0] and "Hugging Face cache" not in built.notices[0]
