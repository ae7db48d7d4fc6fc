"""Stable Diffusion pipelines for concept forgetting: load one, or build a tiny random one; make latents.

`load_pipeline` takes a local diffusers folder, a hub id (from the local cache first; the hub only when it
answers within seconds, so an offline machine gets a one-line error saying how to provide the weights,
never a hang), or "tiny": a randomly initialised pipeline built from small configs in under a second,
for tests and for showing the flow without weights. Its images are noise; only the mechanics are real.

Everything the unlearning loop needs from the pipeline is precomputed here: prompt embeddings (the text
encoder is frozen) and clean image latents (the VAE is frozen), so training touches the UNet alone.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import torch

from core.errors import CheckpointError, SalunError

TINY_MODEL = "tiny"
TINY_RESOLUTION = 32
CROSS_ATTENTION_GAIN = 6.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
_TRUE = {"1", "true", "yes", "on"}


_TINY_WORDS = ("a an the of in on with by and photo picture painting person people man woman child nude naked "
               "wearing clothes dressed cat dog car tree house street style van gogh").split()


def _tiny_tokenizer():
    """A small CLIP tokenizer: every byte symbol, plus whole-word tokens for a few common words.

    Whole words keep prompts short (a random text encoder's differences between prompts are otherwise
    drowned in padding); any other word is spelled out in characters. Prompts are cut at 16 tokens.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in sorted(ByteLevel.alphabet()):
            vocab[char + suffix] = len(vocab)
    merges = []
    for word in _TINY_WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:  # merge left to right: w, wo, wor, word</w>
            pair = (pieces[0], pieces[1])
            if pair not in merges:
                merges.append(pair)
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.setdefault(pieces[0], len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)


_TINY_UNET = dict(
    sample_size=TINY_RESOLUTION // 2, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=32, attention_head_dim=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)


def tiny_unet_parameters() -> int:
    """The tiny UNet's number of weights, counted on the meta device (nothing allocated)."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        return sum(p.numel() for p in UNet2DConditionModel(**_TINY_UNET).parameters())


def build_tiny_pipeline(seed: int = 0):
    """A Stable Diffusion pipeline with random weights and SD v1's layout at toy size (0.27 M UNet weights).

    UNet with two cross-attention blocks (16, 32 channels), a two-layer CLIP text encoder of width 32,
    a two-block VAE (latents at half the 32-pixel resolution) and a DDIM scheduler. Same seed, same weights.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**_TINY_UNET)
    # A random UNet barely listens to the prompt (its predictions for two prompts differ by ~0.3%), so
    # there would be nothing to forget; stronger cross-attention makes them differ by ~40%.
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                module.to_k.weight.mul_(CROSS_ATTENTION_GAIN)
                module.to_v.weight.mul_(CROSS_ATTENTION_GAIN)
                module.to_out[0].weight.mul_(CROSS_ATTENTION_GAIN / 2)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=TINY_RESOLUTION,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def hub_offline() -> bool:
    """True when the user asked huggingface_hub to stay offline (HF_HUB_OFFLINE), read at call time."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint accepts a TCP connection within `timeout` seconds, name lookup included
    (a lookup can hang far longer than a socket timeout, so the probe runs in a thread we stop waiting for)."""
    from huggingface_hub import constants

    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    answered = []

    def probe():
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
            answered.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _how_to_provide(model: str) -> str:
    return (f"download it where there is internet (`hf download {model} --local-dir DIR`) and give DIR as the "
            f"model, or point HF_HOME at a cache that holds it; the model `tiny` runs a tiny random pipeline")


def load_pipeline(model: str, device: torch.device | str = "cpu", half_precision_frozen: bool = False,
                  safety_checker: bool = False):
    """A `StableDiffusionPipeline` from "tiny", a local diffusers folder or a hub id, on `device`.

    Weights load in float32. `half_precision_frozen` casts the frozen text encoder and VAE to float16
    (sensible on a GPU; the UNet stays float32 because it is trained). The safety checker is dropped
    unless asked for: it costs 1.2 GB and the pipeline's images here are for inspecting the forgetting.
    """
    from diffusers import StableDiffusionPipeline

    model = (model or "").strip()
    if not model:
        raise SalunError("model is empty: give a diffusers folder, a hub id such as "
                         "CompVis/stable-diffusion-v1-4, or 'tiny'")
    if model == TINY_MODEL:
        pipe = build_tiny_pipeline()
    else:
        kwargs = {"dtype": torch.float32}
        if not safety_checker:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        path = Path(model).expanduser()
        if path.exists():
            pipe = _load_folder(StableDiffusionPipeline, path, kwargs)
        elif model.startswith((".", "/", "~")) or model.count("/") != 1 or not _HUB_ID.match(model):
            raise CheckpointError(f"model {model!r} is neither an existing folder nor a hub id like "
                                  "'CompVis/stable-diffusion-v1-4'")
        else:
            pipe = _load_hub(StableDiffusionPipeline, model, kwargs)
    pipe.set_progress_bar_config(disable=True)
    if half_precision_frozen:
        pipe.text_encoder.to(torch.float16)
        pipe.vae.to(torch.float16)
    return pipe.to(device)


def _load_folder(pipeline_class, path: Path, kwargs: dict):
    if not path.is_dir():
        raise CheckpointError(f"{str(path)!r} is a file; give the diffusers folder that holds model_index.json "
                              "(single .ckpt/.safetensors files are not supported)")
    if not (path / "model_index.json").is_file():
        raise CheckpointError(f"{str(path)!r} is not a diffusers pipeline folder: it has no model_index.json")
    try:
        return pipeline_class.from_pretrained(str(path), local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"could not load the pipeline in {str(path)!r}: {_one_line(exc)}") from None


def _load_hub(pipeline_class, model: str, kwargs: dict):
    try:  # the local cache first: works offline and costs no network round trip
        return pipeline_class.from_pretrained(model, local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:
        cache_reason = _one_line(exc)
    if hub_offline():
        raise CheckpointError(f"{model!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                              + _how_to_provide(model))
    if not hub_reachable():
        raise CheckpointError(f"{model!r} is not in the local Hugging Face cache and the hub cannot be reached "
                              f"(offline?); " + _how_to_provide(model))
    try:
        return pipeline_class.from_pretrained(model, **kwargs)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"could not download {model!r}: {_one_line(exc)} (cache: {cache_reason})") from None


def encode_prompts(pipe, prompts: list[str]) -> torch.Tensor:
    """CLIP hidden states for each prompt, shape (len(prompts), tokens, width), on the pipeline's device."""
    tokens = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                            truncation=True, return_tensors="pt")
    with torch.no_grad():
        return pipe.text_encoder(tokens.input_ids.to(pipe.text_encoder.device))[0]


def default_resolution(pipe) -> int:
    return int(pipe.unet.config.sample_size) * pipe.vae_scale_factor


def generate(pipe, prompt: str, seeds: list[int], steps: int, guidance: float, resolution: int,
             output_type: str = "pil", batch_size: int = 4):
    """Sample one image per seed (a CPU generator per seed, so the same seed gives the same start noise
    on any device). `output_type="latent"` returns the clean latents the UNet is trained on (already
    scaled by the VAE's scaling factor), skipping the decode and re-encode of the images."""
    outputs = []
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start:start + batch_size]
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in chunk]
        result = pipe(prompt=[prompt] * len(chunk), num_inference_steps=steps, guidance_scale=guidance,
                      height=resolution, width=resolution, generator=generators, output_type=output_type)
        outputs.append(result.images)
    if output_type == "latent":
        return torch.cat(outputs).float() if outputs else torch.zeros(0)
    return [image for chunk in outputs for image in chunk]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def count_images(folder: str | Path) -> int:
    """How many images `read_image_folder` would read from `folder` (nothing is decoded)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise SalunError(f"image folder {str(folder)!r} does not exist")
    return len(_image_files(folder))


def read_image_folder(folder: str | Path, resolution: int) -> tuple[torch.Tensor, list[str | None]]:
    """Images in `folder` as a (N, 3, H, W) tensor in [-1, 1], centre-cropped and resized, and each
    image's caption from a .txt file of the same name (None where there is none)."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise SalunError(f"image folder {str(folder)!r} does not exist")
    files = _image_files(folder)
    if not files:
        raise SalunError(f"image folder {str(folder)!r} holds no .png/.jpg/.webp/.bmp images")
    images, captions = [], []
    for file in files:
        try:
            image = Image.open(file).convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise SalunError(f"image {file.name!r} cannot be read: {_one_line(exc)}") from None
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.BICUBIC)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(resolution, resolution, 3)
        images.append(pixels.permute(2, 0, 1).float() / 127.5 - 1.0)
        caption_file = file.with_suffix(".txt")
        caption = caption_file.read_text().strip() if caption_file.is_file() else ""
        captions.append(caption or None)
    return torch.stack(images), captions


def encode_images(pipe, images: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    """Clean latents of images in [-1, 1] (the VAE posterior's mean, scaled), on the pipeline's device."""
    latents = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(pipe.vae.device, pipe.vae.dtype)
            latents.append(pipe.vae.encode(batch).latent_dist.mean.float() * pipe.vae.config.scaling_factor)
    return torch.cat(latents)
