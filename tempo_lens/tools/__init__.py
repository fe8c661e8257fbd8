"""Research tools on siblings: pure functions of a model and a run (generated, saved, or a bare layout) to frames.

- :func:`logit_lens`: each sibling's probability and rank at every layer, and KL to the last layer;
- :func:`activation_patching` (+ :func:`patching_figure`): patch hook points of chosen siblings from
  one replay condition into another, swept over layers and heads;
- :func:`attribution_patching` (+ :func:`attribution_totals`): the gradient estimate of activation patching, per
  sibling, every layer and head from one backward;
- :func:`direct_logit_attribution` (+ :func:`sibling_contrast`): each layer's and head's share of a
  sibling's logit, and which heads push siblings apart;
- :func:`sae_latents` (+ :func:`compare_sae_latents`): an SAE's latents on every generated token, and the
  latents that differ most between parallel and non-parallel tokens, with intervals across runs;
- :func:`latent_figure` (one latent on parallel against non-parallel tokens, across runs) and :func:`sae_lattice`
  (each token's top latents on the token lattice), with :func:`neuronpedia_url`;
- :func:`residual_difference` (+ :func:`residual_figure`): each sibling's residual stream under two
  replay conditions, compared layer by layer.

Siblings are named by :class:`~tempo_lens.siblings.Sibling` (step, rank, token); replays by
:class:`Condition` (mask, positions, pruned).

May import: the layers below (generation, replaying, capture, analysis) and :mod:`tempo_lens.figures`;
never report or app.
"""

from ..siblings import Sibling, siblings
from .attribution import direct_logit_attribution, sibling_contrast
from .attribution_patching import attribution_patching, attribution_totals
from .common import Condition
from .logit_lens import lens_logits, logit_lens
from .patching import HOOK_POINTS, LogitDifference, activation_patching, patching_figure
from .residuals import residual_difference, residual_figure
from .sae import compare_sae_latents, sae_latents
from .sae_figures import latent_figure, latent_table, neuronpedia_url, sae_lattice, top_latents

__all__ = [
    "Condition",
    "HOOK_POINTS",
    "LogitDifference",
    "Sibling",
    "activation_patching",
    "attribution_patching",
    "attribution_totals",
    "compare_sae_latents",
    "direct_logit_attribution",
    "latent_figure",
    "latent_table",
    "lens_logits",
    "logit_lens",
    "neuronpedia_url",
    "patching_figure",
    "residual_difference",
    "residual_figure",
    "sae_latents",
    "sae_lattice",
    "sibling_contrast",
    "siblings",
    "top_latents",
]
