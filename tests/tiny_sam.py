"""A tiny random-weight SAM for tests (no downloads), saved the way users copy weights offline.

``write_tiny_sam`` saves a ~90 k-parameter ``SamModel`` (64 px input, 8x8 embedding grid, 32 px
low-resolution masks) and, unless told otherwise, a matching ``SamProcessor`` through
``save_pretrained``. transformers' SAM initialises its vision encoder with ``initializer_range``
1e-10, which makes every output nearly zero; the layers are re-initialised with torch's defaults so
outputs differ between inputs and training visibly moves them.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SIZE = 64
PATCH_SIZE = 8


def write_tiny_sam(folder: Path, seed: int = 0, save_processor: bool = True) -> Path:
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor
    from transformers.models.sam.configuration_sam import (
        SamMaskDecoderConfig,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    vision = SamVisionConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        output_channels=32,
        mlp_dim=64,
        global_attn_indexes=[1],
        window_size=4,
        num_pos_feats=16,  # = decoder hidden size / 2: the shared positional embedding feeds the decoder
    )
    prompt = SamPromptEncoderConfig(hidden_size=32, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, mask_input_channels=8)
    decoder = SamMaskDecoderConfig(
        hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32
    )
    config = SamConfig(
        vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(), mask_decoder_config=decoder.to_dict()
    )
    torch.manual_seed(seed)
    model = SamModel(config)
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    model.save_pretrained(folder)
    if save_processor:
        low = 4 * config.prompt_encoder_config.image_embedding_size
        image_processor = SamImageProcessor(
            size={"longest_edge": IMAGE_SIZE},
            pad_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            mask_size={"longest_edge": low},
            mask_pad_size={"height": low, "width": low},
        )
        SamProcessor(image_processor=image_processor).save_pretrained(folder)
    return folder
