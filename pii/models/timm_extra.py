"""Generic timm entry points whose whole architecture comes from `model.kwargs`.

timm's named variants fix their shape (mixer_s16_224 hard-codes patch_size,
num_blocks and embed_dim, so kwargs cannot change them). These take every
architecture argument from the config, e.g. conf/model/digits_mixer.yaml:
    name: pii_mlp_mixer
    kwargs: {img_size: 32, patch_size: 4, num_blocks: 4, embed_dim: 128}
Imported by pii.models so that timm knows these names.
"""

from timm.models import register_model
from timm.models.mlp_mixer import MlpMixer, _create_mixer


@register_model
def pii_mlp_mixer(pretrained: bool = False, **kwargs) -> MlpMixer:
    """An MLP-Mixer of any shape (timm's MlpMixer with mixer_s16_224's pretrained-config metadata)."""
    return _create_mixer("mixer_s16_224", pretrained=pretrained, **kwargs)
