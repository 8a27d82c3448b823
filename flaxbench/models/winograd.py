"""3x3 'same' convolutions by Winograd's F(2x2, 3x3), F(4x4, 3x3) or F(5x5, 3x3), for XLA:CPU.

Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016): an m x m tile of
a stride-1 3x3 convolution's output is A^T [(G g G^T) . (B^T d B)] A, where d is the (m+2) x (m+2)
input tile under it and g the 3x3 kernel of one input and one output channel. Summed over input
channels, the (m+2)^2 elementwise products become (m+2)^2 matmuls (tiles x Cin) @ (Cin x Cout):
16 multiplies per 4 outputs for F(2x2, 3x3) (2.25x fewer than the direct convolution's 9 per
output), 36 per 16 for F(4x4, 3x3) (4x fewer), 49 per 25 for F(5x5, 3x3) (4.6x fewer). The
gradients are written out as the same kind of matmuls, so the input gradient (itself a 3x3 'same'
convolution) and the kernel gradient gain too. In float32, F(4x4, 3x3)'s results differ from a
direct convolution by up to about 5e-6 of their scale (its transforms' coefficients reach 8),
F(5x5, 3x3)'s by up to about 1.3e-5 (coefficients up to 81), F(2x2, 3x3)'s (coefficients 0,
+-1/2, +-1) about as little as the direct convolution's; bfloat16 would lose too much, so none is
used there.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class WinogradTiling:
    """B^T, G and A^T of one F(m x m, 3x3): input tiles of m + 2 pixels a side give m x m outputs."""

    name: str
    input_transform: tuple[tuple[float, ...], ...] = dataclasses.field(repr=False)  # B^T, (m + 2) x (m + 2)
    kernel_transform: tuple[tuple[float, ...], ...] = dataclasses.field(repr=False)  # G, (m + 2) x 3
    output_transform: tuple[tuple[float, ...], ...] = dataclasses.field(repr=False)  # A^T, m x (m + 2)

    @property
    def out_tile(self) -> int:
        """m: output pixels per tile side."""
        return len(self.output_transform)

    @property
    def in_tile(self) -> int:
        """m + 2: input pixels per tile side, and the number of products per tile side."""
        return len(self.input_transform)


# Lavin and Gray's own F(2x2, 3x3), from the interpolation points 0, 1, -1 and infinity.
F2X2 = WinogradTiling(
    "F(2x2, 3x3)",
    input_transform=((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
    kernel_transform=((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
    output_transform=((1, 1, 1, 0), (0, 1, -1, -1)),
)
# F(4x4, 3x3) built by the Toom-Cook method (as Lavin and Gray build theirs) from the interpolation
# points 0, 1/2, -1/2, 2, -2 and infinity instead of their 0, 1, -1, 2, -2: the largest rounding
# error of a float32 convolution (8 x 19 x 19 x 128 channels, against float64) came out 2.1-2.3x
# smaller (tests/models/test_winograd.py).
F4X4 = WinogradTiling(
    "F(4x4, 3x3)",
    input_transform=(
        (1, 0, -17 / 4, 0, 1, 0),
        (0, -2, -4, 1 / 2, 1, 0),
        (0, 2, -4, -1 / 2, 1, 0),
        (0, -1 / 2, -1 / 4, 2, 1, 0),
        (0, 1 / 2, -1 / 4, -2, 1, 0),
        (0, 1, 0, -17 / 4, 0, 1),
    ),
    kernel_transform=(
        (1, 0, 0),
        (-8 / 15, -4 / 15, -2 / 15),
        (-8 / 15, 4 / 15, -2 / 15),
        (1 / 30, 1 / 15, 2 / 15),
        (1 / 30, -1 / 15, 2 / 15),
        (0, 0, 1),
    ),
    output_transform=(
        (1, 1, 1, 1, 1, 0),
        (0, 1 / 2, -1 / 2, 2, -2, 0),
        (0, 1 / 4, 1 / 4, 4, 4, 0),
        (0, 1 / 8, -1 / 8, 8, -8, 1),
    ),
)

# F(5x5, 3x3), Toom-Cook from the points 0, 1, -1, 1/2, -1/2, 3 and infinity (its input transform's
# coefficients are sums of quarters, exact in binary). Its 5 x 5 tiles cover the 5 x 5 and 10 x 10
# maps of the study's models at 150 px exactly, with 49 products per 25 outputs (4.6x fewer
# multiplies than a direct convolution). Of nine sets of points tried, this one and 0, +-1, +-2, 1/3
# had the smallest rounding error: at most 1.3e-5 of the output's scale over four shapes, against
# 5.6e-6 for F(4x4, 3x3) (2026-12-05).
F5X5 = WinogradTiling(
    "F(5x5, 3x3)",
    input_transform=(
        (-3 / 4, 1 / 4, 15 / 4, -5 / 4, -3, 1, 0),
        (0, 3 / 4, 1 / 2, -13 / 4, -2, 1, 0),
        (0, -3 / 4, 1, 11 / 4, -4, 1, 0),
        (0, 3 / 2, 5 / 2, -5 / 2, -5 / 2, 1, 0),
        (0, -3 / 2, 7 / 2, 1 / 2, -7 / 2, 1, 0),
        (0, 1 / 4, 0, -5 / 4, 0, 1, 0),
        (0, -3 / 4, 1 / 4, 15 / 4, -5 / 4, -3, 1),
    ),
    kernel_transform=(
        (-4 / 3, 0, 0),
        (-1 / 3, -1 / 3, -1 / 3),
        (-1 / 6, 1 / 6, -1 / 6),
        (16 / 15, 8 / 15, 4 / 15),
        (16 / 21, -8 / 21, 4 / 21),
        (1 / 210, 1 / 70, 3 / 70),
        (0, 0, 1),
    ),
    output_transform=(
        (1, 1, 1, 1, 1, 1, 0),
        (0, 1, -1, 1 / 2, -1 / 2, 3, 0),
        (0, 1, 1, 1 / 4, 1 / 4, 9, 0),
        (0, 1, -1, 1 / 8, -1 / 8, 27, 0),
        (0, 1, 1, 1 / 16, 1 / 16, 81, 1),
    ),
)
TILINGS = (F2X2, F4X4, F5X5)  # on equal cost the first, whose transforms are cheaper and rounding smaller

# When CPU convolutions take this route, and with which tiling: of the tilings whose tiles cover at
# most MAX_PADDING_AREA times the map and number at least MIN_TILES, the one with the fewest
# multiplies per output pixel (padding included), F(5x5, 3x3)'s weighted by MULTIPLY_WEIGHT for its
# larger transforms. Measured on the project's 2-core AMD EPYC, convolution with both gradients,
# XLA's time over Winograd's (more in benchmarks/README.md). At batch 64 (2026-12-05): F(5x5, 3x3)
# 1.85x at 5 x 5 x 512 (F(2x2, 3x3) 0.93x, XLA's convolution there is near this CPU's peak rate),
# 2.35x at 10 x 10 x 256 (F(4x4, 3x3) 1.39x), 1.76x at 9 x 9 x 256 (1.26x), 1.81x at 14 x 14 x 256
# (1.75x); level with F(4x4, 3x3) at 19 x 19 x 128 and 38 x 38 x 64 (1.46x and 1.06x, their
# multiplies 13% apart), behind it where its tiles pad more (7 x 7 x 512 1.12x against 1.67x,
# 28 x 28 x 128 1.15x against 1.67x). F(4x4, 3x3) 1.2x and F(2x2, 3x3) 1.58x at 6 x 6 x 256 (same
# multiplies). At batch 16: F(4x4, 3x3) 1.74x at 8 x 8 x 384 (64 tiles; 0.77x on 2026-12-04, before
# the kernel transform became one matmul), 1.3x at 7 x 7 x 512; F(5x5, 3x3) 1.65x at 10 x 10 x 256
# (64 tiles), 1.0x at 5 x 5 x 512 (16 tiles). Earlier (2026-12-04): Winograd loses where its tiles
# are mostly padding (F(4x4, 3x3) 0.4-0.9x at 2.6 and 1.8x the area) and where the matmuls are thin
# (128 -> 32 and 16 -> 32 channels).
# In a data-parallel jit the shapes seen here are one device's share of the batch (`local_batch.py`).
MAX_PADDING_AREA = {F2X2: 1.25, F4X4: 1.5, F5X5: 1.25}  # tile area over map area
MULTIPLY_WEIGHT = {F2X2: 1.0, F4X4: 1.0, F5X5: 1.2}
MIN_TILES = 64
MIN_CHANNEL_HARMONIC = 32  # Cin * Cout / (Cin + Cout): matmul work per transformed value
# Large batches are convolved in pieces of at most this many bytes of transformed input tiles
# (each piece keeping MIN_PIECE_TILES). Whole, tiles that outgrow the caches made it slower than XLA's
# convolution (38 x 38 x 64 at batch 64, 59 MB of tiles: 0.76-0.93x; 38 x 38 x 96: 0.95x); in
# pieces of 16 MiB, at batch 64: 38 x 38 x 64 1.11x, 38 x 38 x 96 1.41x, 56 x 56 x 64 1.45x against
# 1.06x whole, 28 x 28 x 128 1.54x against 1.29x, 19 x 19 x 128 1.42x against 1.24x (8 MiB and
# 4 MiB pieces were no better; all 2026-12-04). The pieces run in a `lax.map` loop.
MIN_PIECE_TILES = 256
CHUNK_BYTES = 16 * 2**20


def winograd_tiling(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Any
) -> WinogradTiling | None:
    """The tiling the CPU convolution of NHWC `x` by HWIO `kernel` should run by, or None for XLA's convolution."""
    if not (x.dtype == jnp.float32 and kernel.shape[:2] == (3, 3) and tuple(strides) == (1, 1)
            and padding == ((1, 1), (1, 1))):
        return None
    n, height, width = x.shape[:3]
    in_channels, out_channels = kernel.shape[2:]
    if in_channels * out_channels / (in_channels + out_channels) < MIN_CHANNEL_HARMONIC:
        return None

    def fits(tiling: WinogradTiling) -> bool:
        rows, cols = _tile_grid(height, width, tiling)
        return (_covered_area(height, width, tiling) <= MAX_PADDING_AREA[tiling] * height * width
                and n * rows * cols >= MIN_TILES)

    def weighted_multiplies(tiling: WinogradTiling) -> float:
        rows, cols = _tile_grid(height, width, tiling)
        return MULTIPLY_WEIGHT[tiling] * rows * cols * tiling.in_tile**2 / (height * width)

    return min((tiling for tiling in TILINGS if fits(tiling)), key=weighted_multiplies, default=None)


def batch_chunks(x: jax.Array, tiling: WinogradTiling) -> int:
    """Into how many equal pieces to split the batch of NHWC `x` so each one's transformed tiles take about CHUNK_BYTES."""
    n, height, width, channels = x.shape
    rows, cols = _tile_grid(height, width, tiling)
    wanted = -(-n * rows * cols * tiling.in_tile**2 * channels * x.dtype.itemsize // CHUNK_BYTES)
    allowed = [d for d in range(1, n + 1) if n % d == 0 and n // d * rows * cols >= MIN_PIECE_TILES]
    # the fewest pieces that are small enough, else the most that keep MIN_PIECE_TILES each
    return next((d for d in allowed if d >= wanted), allowed[-1] if allowed else 1)


def winograd_conv3x3_chunked(x: jax.Array, kernel: jax.Array, tiling: WinogradTiling, chunks: int) -> jax.Array:
    """`winograd_conv3x3` of `chunks` equal pieces of the batch, one after another in a loop, joined again."""
    n = x.shape[0]
    if chunks == 1:
        return winograd_conv3x3(x, kernel, tiling)
    if n % chunks:
        raise ValueError(f"a batch of {n} does not split into {chunks} equal pieces")
    # a loop rather than one Winograd per piece: the same speed, and half the compile time (ResNet-18)
    out = jax.lax.map(lambda piece: winograd_conv3x3(piece, kernel, tiling), x.reshape(chunks, n // chunks, *x.shape[1:]))
    return out.reshape(n, *out.shape[2:])


def _covered_area(height: int, width: int, tiling: WinogradTiling) -> int:
    rows, cols = _tile_grid(height, width, tiling)
    return rows * cols * tiling.out_tile**2


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def winograd_conv3x3(x: jax.Array, kernel: jax.Array, tiling: WinogradTiling = F4X4) -> jax.Array:
    """Stride-1 3x3 convolution of NHWC `x` with an HWIO `kernel`, zero padding 1 (output size = input size)."""
    return _convolve(x, kernel, tiling)[0]


def _convolve(x: jax.Array, kernel: jax.Array, tiling: WinogradTiling) -> tuple[jax.Array, jax.Array]:
    """The convolution and the transformed input tiles it multiplied (its kernel gradient needs them)."""
    tiles = _input_tiles(x, tiling)
    products = _per_tile_matmul(tiles, _transformed_kernel(kernel, tiling), contract=(2, 1))
    return _output_tiles_joined(products, x.shape[:3], tiling), tiles


def _fwd(x: jax.Array, kernel: jax.Array, tiling: WinogradTiling) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    out, tiles = _convolve(x, kernel, tiling)
    return out, (tiles, kernel)


def _bwd(tiling: WinogradTiling, residuals: tuple[jax.Array, jax.Array], grad_out: jax.Array) -> tuple[jax.Array, jax.Array]:
    tiles, kernel = residuals
    # d input: a 'same' 3x3 convolution too, of the cotangent with the kernel flipped and its
    # input and output channels swapped.
    grad_x = _convolve(grad_out, jnp.swapaxes(kernel[::-1, ::-1], 2, 3), tiling)[0]
    # d kernel: the transposed output transform spreads each tile of the cotangent over the
    # products; each product's gradient is its tiles' transformed input against that, and the
    # transposed kernel transform takes the (m+2) x (m+2) result back to 3x3.
    grad_products = _per_tile_matmul(tiles, _output_transform_transposed(grad_out, tiling), contract=(1, 1))
    grad_kernel = _kernel_transform_pairs(tiling, grad_products.dtype).T @ grad_products.reshape(tiling.in_tile**2, -1)
    return grad_x, grad_kernel.reshape(3, 3, *grad_products.shape[1:])


winograd_conv3x3.defvjp(_fwd, _bwd)


def _combine(parts: list[jax.Array], coefficients) -> jax.Array:
    """sum of coefficient * part; for a tuple of numbers skipping zeros and multiplications by +-1, for an array all of them."""
    if isinstance(coefficients, jax.Array):
        return sum(coefficients[k] * part for k, part in enumerate(parts))
    total = None
    for coefficient, part in zip(coefficients, parts):
        if coefficient == 0:
            continue
        term = part if coefficient == 1 else -part if coefficient == -1 else part * coefficient
        total = term if total is None else total + term
    return total


def _for_each_row(one_row: Callable[..., jax.Array], coefficient_rows: tuple[tuple[float, ...], ...],
                  tiling: WinogradTiling, dtype) -> jax.Array:
    """`one_row(coefficients)` for every row of a transform's matrix, stacked on a new leading axis.

    F(2x2, 3x3)'s transforms (coefficients 0, +-1/2, +-1) run unrolled, each coefficient folded in.
    The larger tilings' are vectorised over the rows, the coefficients as data: unrolled, XLA:CPU
    compiled an F(5x5, 3x3) convolution with both gradients 4-8x slower (3.2-3.8 s against 0.4-0.5 s
    at 10 x 10 x 256, most of it generating code for one fused 25-way concatenation), and F(4x4, 3x3)'s
    2-6x slower, at the same speed or slower. F(2x2, 3x3)'s vectorised ran up to 1.4x slower
    (2026-12-05, benchmarks/README.md).
    """
    if tiling.in_tile <= 4:
        return jnp.stack([one_row(row) for row in coefficient_rows])
    return jax.vmap(one_row)(jnp.asarray(np.asarray(coefficient_rows, np.float64), dtype))


def _tile_grid(height: int, width: int, tiling: WinogradTiling) -> tuple[int, int]:
    return -(-height // tiling.out_tile), -(-width // tiling.out_tile)


def _input_tiles(x: jax.Array, tiling: WinogradTiling) -> jax.Array:
    """B^T d B for every overlapping (m+2) x (m+2) tile d of the padded input: ((m+2)^2, tiles, Cin)."""
    n, height, width, channels = x.shape
    rows, cols = _tile_grid(height, width, tiling)
    step, side = tiling.out_tile, tiling.in_tile
    # one pixel of zeros before, and after as many as the last tile needs
    padded = jnp.pad(x, [(0, 0), (1, step * rows + 1 - height), (1, step * cols + 1 - width), (0, 0)])
    # row i of every tile, for each i: every m-th row of the padded input from row i
    tile_rows = [padded[:, i : i + step * (rows - 1) + 1 : step] for i in range(side)]

    def transformed_row(row_coefficients) -> jax.Array:
        row_mix = _combine(tile_rows, row_coefficients)
        tile_cols = [row_mix[:, :, j : j + step * (cols - 1) + 1 : step] for j in range(side)]
        return jnp.stack([_combine(tile_cols, coefficients) for coefficients in tiling.input_transform])

    transformed = _for_each_row(transformed_row, tiling.input_transform, tiling, x.dtype)
    return transformed.reshape(side * side, n * rows * cols, channels)


def _transformed_kernel(kernel: jax.Array, tiling: WinogradTiling) -> jax.Array:
    """G g G^T for every (input, output) channel pair: ((m+2)^2, Cin, Cout)."""
    # one (m+2)^2 x 9 matmul over the flattened kernel: XLA:CPU ran the einsum G g G^T of a
    # 512 x 512-channel kernel 5x slower (57 ms against 11 for F(4x4, 3x3), 2026-12-05), and its
    # transpose in the kernel gradient 7-10x slower
    transformed = _kernel_transform_pairs(tiling, kernel.dtype) @ kernel.reshape(9, -1)
    return transformed.reshape(tiling.in_tile**2, *kernel.shape[2:])


def _kernel_transform_pairs(tiling: WinogradTiling, dtype) -> jax.Array:
    """G (x) G, ((m+2)^2, 9): row (a, b), column (i, j) is G[a, i] * G[b, j], so G g G^T is one matmul for every channel pair."""
    g = np.asarray(tiling.kernel_transform, np.float64)
    return jnp.asarray(np.kron(g, g), dtype)


def _per_tile_matmul(a: jax.Array, b: jax.Array, contract: tuple[int, int]) -> jax.Array:
    """The (m+2)^2 matmuls, one per position in the tile (axis 0 of both), contracting `contract`."""
    return jax.lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((0,), (0,))))


def _output_tiles_joined(products: jax.Array, nhw: tuple[int, int, int], tiling: WinogradTiling) -> jax.Array:
    """A^T P A for every tile's products P, the m x m tiles laid side by side and cut to the input's size: NHWC."""
    n, height, width = nhw
    rows, cols = _tile_grid(height, width, tiling)
    side, mix_rows = tiling.in_tile, tiling.output_transform
    products = products.reshape(side, side, n, rows, cols, -1)

    def output_row(row_coefficients) -> jax.Array:
        # materialised once: fused into each of the m sums below, it would be computed m times
        row_mix = jax.lax.optimization_barrier(_combine([products[i] for i in range(side)], row_coefficients))
        return jnp.stack([_combine([row_mix[j] for j in range(side)], coefficients) for coefficients in mix_rows], axis=3)

    # stacked on axis 3 and moved after: stacked on axis 2 directly ran 1.2x slower (F(5x5, 3x3), 10 x 10 x 256)
    out = _for_each_row(output_row, mix_rows, tiling, products.dtype).transpose(1, 2, 0, 3, 4, 5)  # (n, rows, m, cols, m, Cout)
    return out.reshape(n, tiling.out_tile * rows, tiling.out_tile * cols, -1)[:, :height, :width]


def _output_transform_transposed(grad_out: jax.Array, tiling: WinogradTiling) -> jax.Array:
    """A d A^T for every m x m tile d of the (zero-extended) cotangent: ((m+2)^2, tiles, Cout)."""
    n, height, width, channels = grad_out.shape
    rows, cols = _tile_grid(height, width, tiling)
    step, side, mix_rows = tiling.out_tile, tiling.in_tile, tiling.output_transform
    extended = jnp.pad(grad_out, [(0, 0), (0, step * rows - height), (0, step * cols - width), (0, 0)])
    tiles = extended.reshape(n, rows, step, cols, step, channels)
    tile_rows = [tiles[:, :, a] for a in range(step)]  # each (n, rows, cols, m, Cout)
    columns = tuple(zip(*mix_rows))  # A's rows: column i of A^T

    def spread_row(row_coefficients) -> jax.Array:
        row_mix = _combine(tile_rows, row_coefficients)
        tile_cols = [row_mix[:, :, :, b] for b in range(step)]
        return jnp.stack([_combine(tile_cols, coefficients) for coefficients in columns])

    spread = _for_each_row(spread_row, columns, tiling, grad_out.dtype)
    return spread.reshape(side * side, n * rows * cols, channels)
