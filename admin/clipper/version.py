"""The Clipper release this drop-in follows, and the registry its images were named in.

Clipper's tests build image names from these (``"{__registry__}/noop-container:
{__version__}"``); the drop-in recognises such names as Clipper's own images
(``_images``) and never pulls them.
"""

from __future__ import annotations

__all__ = ["__registry__", "__version__"]

__version__ = "0.4.1"
__registry__ = "clipper"
