"""Writing a matplotlib figure as the PNG a command was asked for (--out)."""

import os
from typing import Any

from simclr_jax.errors import UserError


def save_png(fig: Any, out: str) -> str:
    """Saves `fig` to `out` and closes it; a missing folder or a failed write is one UserError."""
    import matplotlib.pyplot as plt  # deferred: matplotlib is only needed to draw

    parent = os.path.dirname(os.path.abspath(out))
    try:
        if not os.path.isdir(parent):
            raise UserError(f"folder {parent} of --out={out} does not exist: create it or write "
                            f"the PNG elsewhere")
        fig.savefig(out, dpi=100)
    except OSError as e:
        raise UserError(f"could not write {out} (--out): {e}") from None
    finally:
        plt.close(fig)
    return out
