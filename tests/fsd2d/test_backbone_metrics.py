"""Table 1's backbone metrics through torchmetrics, on tiny random networks built here (no downloads)."""
import pytest
import torch

from fsd2d import backbone_metrics as bm
from fsd2d.errors import InputError

pytest.importorskip("torchmetrics")  # in the test extra; torch-fidelity is not needed with custom features


class TinyFeature(torch.nn.Module):
    """A fixed random conv feature: uint8 images -> [N, 16] (stands in for Inception)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 3, stride=2)
        self.num_features = 16

    def forward(self, x):
        return self.conv(x.float() / 255.0).mean(dim=(2, 3))


def images(seed, n=24, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_cross_fid_is_zero_for_the_same_set_and_grows_with_difference():
    f = TinyFeature()
    a = images(0)
    same = bm.cross_fid(a, a, f)
    assert abs(same) < 1e-3
    shifted = bm.cross_fid(a, (a * 0.5 + 0.5), f)
    assert shifted > 10 * max(same, 1e-6)


def test_inception_score_of_identical_images_is_one():
    class Logits(TinyFeature):
        def forward(self, x):
            return super().forward(x)[:, :10] * 10

    mean, _ = bm.inception_score(images(1)[:1].repeat(20, 1, 1, 1), Logits())
    assert abs(mean - 1.0) < 1e-4
    varied, _ = bm.inception_score(images(2, n=40), Logits())
    assert varied > 1.0


def save_tiny_clip(tmp_path):
    """A tiny random CLIP saved as a local folder (safetensors weights: model.safetensors)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from fsd2d.priors.random_sd import write_tokenizer

    tok = write_tokenizer(tmp_path / "tok")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    folder = tmp_path / "clip"
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32),
                  tokenizer=tok).save_pretrained(folder)
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    return folder


def test_clip_score_with_a_local_tiny_clip(tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    folder = save_tiny_clip(tmp_path)
    ims, texts = images(3, n=4), ["a cat", "a dog", "a cat", "gravel"]
    score = bm.clip_score(ims, texts, str(folder))
    # independently: the towers and projections by hand, then 100 * max(cos, 0), averaged
    model = CLIPModel.from_pretrained(folder).eval()
    proc = CLIPProcessor.from_pretrained(folder)
    inputs = proc(text=texts, images=list(bm.to_uint8(ims)), return_tensors="pt", padding=True)
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=inputs["pixel_values"]).pooler_output)
        txt = model.text_projection(model.text_model(input_ids=inputs["input_ids"],
                                                     attention_mask=inputs["attention_mask"]).pooler_output)
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    assert score == pytest.approx(float((100 * cos.clamp_min(0)).mean()), abs=1e-4)
    assert 0.0 <= score <= 100.0


def test_missing_weights_are_reported_not_raised(tmp_path):
    assert bm.missing(None, None) == ["no CLIP model given", "no Inception weights given"]
    with pytest.raises(InputError, match="not a folder"):
        bm.missing(str(tmp_path / "nope"), None)
    with pytest.raises(InputError, match="not a file"):
        bm.missing(None, str(tmp_path / "nope.pth"))


def test_clip_without_safetensors_is_refused_in_one_line(tmp_path):
    """Only safetensors is loaded: a folder holding pickled pytorch_model.bin weights is refused up front."""
    from safetensors.torch import load_file

    folder = save_tiny_clip(tmp_path)
    state = load_file(folder / "model.safetensors")
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    for call in (lambda: bm.clip_score(images(3, n=2), ["a cat", "a dog"], str(folder)),
                 lambda: bm.missing(str(folder), None)):
        with pytest.raises(InputError, match="no .safetensors weights") as e:
            call()
        assert "\n" not in str(e.value)
