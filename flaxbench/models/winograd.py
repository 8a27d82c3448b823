"""3x3 'same' convolutions by Winograd's F(4x4, 3x3), with 2.25x fewer multiplies, for XLA:CPU.

Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016): a 4x4 tile of
a stride-1 3x3 convolution's output is A^T [(G g G^T) . (B^T d B)] A, where d is the 6x6 input
tile under it and g the 3x3 kernel of one input and one output channel. Summed over input
channels, the 36 elementwise products become 36 matmuls (tiles x Cin) @ (Cin x Cout): 36
multiplies per 16 outputs instead of 9 per output. The gradients are written out as the same
kind of matmuls, so the input gradient (itself a 3x3 'same' convolution) and the kernel gradient
gain too. In float32 the results differ from a direct convolution by up to about 5e-6 of their
scale (the transforms' coefficients reach 8); bfloat16 would lose too much, so it is not used there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# B^T, G and A^T of F(4x4, 3x3) built by the Toom-Cook method (as Lavin and Gray build theirs) from
# the interpolation points 0, 1/2, -1/2, 2, -2 and infinity instead of their 0, 1, -1, 2, -2: the
# largest rounding error of a float32 convolution (8 x 19 x 19 x 128 channels, against float64)
# came out 2.1-2.3x smaller (tests/models/test_winograd.py).
INPUT_TRANSFORM = (
    (1, 0, -17 / 4, 0, 1, 0),
    (0, -2, -4, 1 / 2, 1, 0),
    (0, 2, -4, -1 / 2, 1, 0),
    (0, -1 / 2, -1 / 4, 2, 1, 0),
    (0, 1 / 2, -1 / 4, -2, 1, 0),
    (0, 1, 0, -17 / 4, 0, 1),
)
KERNEL_TRANSFORM = (
    (1, 0, 0),
    (-8 / 15, -4 / 15, -2 / 15),
    (-8 / 15, 4 / 15, -2 / 15),
    (1 / 30, 1 / 15, 2 / 15),
    (1 / 30, -1 / 15, 2 / 15),
    (0, 0, 1),
)
OUTPUT_TRANSFORM = (
    (1, 1, 1, 1, 1, 0),
    (0, 1 / 2, -1 / 2, 2, -2, 0),
    (0, 1 / 4, 1 / 4, 4, 4, 0),
    (0, 1 / 8, -1 / 8, 8, -8, 1),
)
OUT_TILE, IN_TILE = len(OUTPUT_TRANSFORM), len(INPUT_TRANSFORM)

# When CPU convolutions take this route. Measured on the project's 2-core AMD EPYC (2026-12-04),
# convolution with both gradients, XLA's time over this one's (more in benchmarks/README.md): at
# batch 64, 1.4-1.9x for 8 x 8 x 384, 10 x 10 x 256, 7 x 7 x 256 and 28 x 28 x 64 (channels in and
# out alike), 1.3x for 19 x 19 x 128 and 24 x 24 x 96, 1.2x for 7 x 7 x 512 and 38 x 38 x 128; but
# 0.5-0.9x where the tiles are mostly padding (5 x 5, 6 x 6 and 9 x 9 maps: 2.6, 1.8 and 1.8x the
# map's area), where the matmuls are thin (128 -> 32 and 16 -> 32 channels), where there are few
# tiles (batch 16: 0.77x at 8 x 8, 64 tiles; 0.99x at 10 x 10, 144 tiles) and where the transformed
# tiles of a thin convolution far outgrow the caches (38 x 38 x 64: 0.76x with 59 MB of them at
# batch 64, 1.14x with 30 MB at batch 32; 56 x 56 x 64: 0.92x). In a data-parallel jit the shapes
# seen here are the global batch's.
MAX_PADDING_AREA = 1.5  # tile area over map area
MIN_TILES = 256
MIN_CHANNEL_HARMONIC = 32  # Cin * Cout / (Cin + Cout): matmul work per transformed value
MAX_THIN_TILE_BYTES = 48 * 2**20  # transformed input tiles of convolutions below twice that harmonic


def winograd_applies(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding) -> bool:
    """Whether the CPU convolution of NHWC `x` by HWIO `kernel` should run as `winograd_conv3x3`."""
    if not (x.dtype == jnp.float32 and kernel.shape[:2] == (3, 3) and tuple(strides) == (1, 1)
            and padding == ((1, 1), (1, 1))):
        return False
    n, height, width = x.shape[:3]
    in_channels, out_channels = kernel.shape[2:]
    rows, cols = _tile_grid(height, width)
    tiles = n * rows * cols
    harmonic = in_channels * out_channels / (in_channels + out_channels)
    tile_bytes = IN_TILE * IN_TILE * tiles * in_channels * x.dtype.itemsize
    return (tiles * OUT_TILE * OUT_TILE <= MAX_PADDING_AREA * n * height * width and tiles >= MIN_TILES
            and harmonic >= MIN_CHANNEL_HARMONIC
            and (tile_bytes <= MAX_THIN_TILE_BYTES or harmonic >= 2 * MIN_CHANNEL_HARMONIC))


@jax.custom_vjp
def winograd_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 3x3 convolution of NHWC `x` with an HWIO `kernel`, zero padding 1 (output size = input size)."""
    return _convolve(x, kernel)[0]


def _convolve(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The convolution and the transformed input tiles it multiplied (its kernel gradient needs them)."""
    tiles = _input_tiles(x)
    products = _per_tile_matmul(tiles, _transformed_kernel(kernel), contract=(2, 1))
    return _output_tiles_joined(products, x.shape[:3]), tiles


def _fwd(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    out, tiles = _convolve(x, kernel)
    return out, (tiles, kernel)


def _bwd(residuals: tuple[jax.Array, jax.Array], grad_out: jax.Array) -> tuple[jax.Array, jax.Array]:
    tiles, kernel = residuals
    # d input: a 'same' 3x3 convolution too, of the cotangent with the kernel flipped and its
    # input and output channels swapped.
    grad_x = _convolve(grad_out, jnp.swapaxes(kernel[::-1, ::-1], 2, 3))[0]
    # d kernel: the transposed output transform spreads each 4x4 tile of the cotangent over the
    # 36 products; each product's gradient is its tiles' transformed input against that, and the
    # transposed kernel transform takes the 6x6 result back to 3x3.
    grad_products = _per_tile_matmul(tiles, _output_transform_transposed(grad_out), contract=(1, 1))
    g = jnp.asarray(KERNEL_TRANSFORM, grad_products.dtype)
    grad_kernel = jnp.einsum("ai,abck,bj->ijck", g, grad_products.reshape(IN_TILE, IN_TILE, *grad_products.shape[1:]), g)
    return grad_x, grad_kernel


winograd_conv3x3.defvjp(_fwd, _bwd)


def _combine(parts: list[jax.Array], coefficients: tuple[float, ...]) -> jax.Array:
    """sum of coefficient * part, skipping zero coefficients and multiplications by +-1."""
    total = None
    for coefficient, part in zip(coefficients, parts):
        if coefficient == 0:
            continue
        term = part if coefficient == 1 else -part if coefficient == -1 else part * coefficient
        total = term if total is None else total + term
    return total


def _tile_grid(height: int, width: int) -> tuple[int, int]:
    return -(-height // OUT_TILE), -(-width // OUT_TILE)


def _input_tiles(x: jax.Array) -> jax.Array:
    """B^T d B for every overlapping 6x6 tile d of the padded input: (36, tiles, Cin)."""
    n, height, width, channels = x.shape
    rows, cols = _tile_grid(height, width)
    # one pixel of zeros before, and after as many as the last tile needs
    padded = jnp.pad(x, [(0, 0), (1, OUT_TILE * rows + 1 - height), (1, OUT_TILE * cols + 1 - width), (0, 0)])
    # row i of every tile, for each i: every 4th row of the padded input from row i
    tile_rows = [padded[:, i : i + OUT_TILE * (rows - 1) + 1 : OUT_TILE] for i in range(IN_TILE)]
    transformed = []
    for row_mix in (_combine(tile_rows, coefficients) for coefficients in INPUT_TRANSFORM):
        tile_cols = [row_mix[:, :, j : j + OUT_TILE * (cols - 1) + 1 : OUT_TILE] for j in range(IN_TILE)]
        transformed += [_combine(tile_cols, coefficients) for coefficients in INPUT_TRANSFORM]
    return jnp.stack(transformed).reshape(IN_TILE * IN_TILE, n * rows * cols, channels)


def _transformed_kernel(kernel: jax.Array) -> jax.Array:
    """G g G^T for every (input, output) channel pair: (36, Cin, Cout)."""
    g = jnp.asarray(KERNEL_TRANSFORM, kernel.dtype)
    return jnp.einsum("ai,ijco,bj->abco", g, kernel, g).reshape(IN_TILE * IN_TILE, *kernel.shape[2:])


def _per_tile_matmul(a: jax.Array, b: jax.Array, contract: tuple[int, int]) -> jax.Array:
    """The 36 matmuls, one per position in the 6x6 tile (axis 0 of both), contracting `contract`."""
    return jax.lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((0,), (0,))))


def _output_tiles_joined(products: jax.Array, nhw: tuple[int, int, int]) -> jax.Array:
    """A^T m A for every tile, the 4x4 tiles laid side by side and cut to the input's size: NHWC."""
    n, height, width = nhw
    rows, cols = _tile_grid(height, width)
    products = products.reshape(IN_TILE, IN_TILE, n, rows, cols, -1)
    row_mixes = [_combine([products[i] for i in range(IN_TILE)], coefficients) for coefficients in OUTPUT_TRANSFORM]
    out = jnp.stack([
        jnp.stack([_combine([mix[j] for j in range(IN_TILE)], coefficients) for coefficients in OUTPUT_TRANSFORM], axis=3)
        for mix in row_mixes
    ], axis=2)  # (n, rows, 4, cols, 4, Cout)
    return out.reshape(n, OUT_TILE * rows, OUT_TILE * cols, -1)[:, :height, :width]


def _output_transform_transposed(grad_out: jax.Array) -> jax.Array:
    """A d A^T for every 4x4 tile d of the (zero-extended) cotangent: (36, tiles, Cout)."""
    n, height, width, channels = grad_out.shape
    rows, cols = _tile_grid(height, width)
    extended = jnp.pad(grad_out, [(0, 0), (0, OUT_TILE * rows - height), (0, OUT_TILE * cols - width), (0, 0)])
    tiles = extended.reshape(n, rows, OUT_TILE, cols, OUT_TILE, channels)
    tile_rows = [tiles[:, :, a] for a in range(OUT_TILE)]  # each (n, rows, cols, 4, Cout)
    spread = []
    for i in range(IN_TILE):
        row_mix = _combine(tile_rows, tuple(coefficients[i] for coefficients in OUTPUT_TRANSFORM))
        tile_cols = [row_mix[:, :, :, b] for b in range(OUT_TILE)]
        spread += [_combine(tile_cols, tuple(coefficients[j] for coefficients in OUTPUT_TRANSFORM)) for j in range(IN_TILE)]
    return jnp.stack(spread).reshape(IN_TILE * IN_TILE, n * rows * cols, channels)
