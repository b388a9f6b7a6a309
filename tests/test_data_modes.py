"""Every Pillow image mode decodes to the uint8 RGB it shows, or is refused by name in one line.

Each image is written by Pillow in a format that keeps its mode, read back
through the package, and compared with values worked out here from the pixels
written: 16-bit grey scaled to 8 bits (not clipped to white), transparency
composited over black, CMYK by the usual (1 - C)(1 - K) formula.
"""
import colorsys

import numpy as np
from PIL import Image
import pytest

from jaxresnet import data
from jaxresnet.data import image_folder
from jaxresnet.infra.errors import DataError

H, W = 4, 6
RNG = np.random.default_rng(0)


def frombytes(mode, pixels):
  """An image of `mode` holding `pixels` (H, W[, bands]) as they are, band by band."""
  return Image.frombytes(mode, (pixels.shape[1], pixels.shape[0]), np.ascontiguousarray(pixels).tobytes())


def grey(values):
  return np.repeat(np.asarray(values, np.uint8)[..., None], 3, axis=-1)


def over_black(rgb, alpha):
  """Colour over a black background: what the pixel shows, whatever colour lies under full transparency."""
  return np.round(rgb.astype(np.float64) * alpha[..., None] / 255).astype(np.uint8)


def sixteen_bit():
  values = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
  values[0, :4] = [0, 257, 32896, 65535]  # Black, 1, mid-grey 128 and white in 8 bits.
  return values


def case_1(tmp_path):
  bits = RNG.integers(0, 2, (H, W)).astype(bool)
  path = tmp_path / 'one.png'
  Image.fromarray(bits).save(path)
  return path, grey(bits * 255)


def case_L(tmp_path):
  values = RNG.integers(0, 256, (H, W), np.uint8)
  path = tmp_path / 'l.png'
  Image.fromarray(values).save(path)
  return path, grey(values)


def case_I16(tmp_path):  # What a 16-bit greyscale PNG opens as.
  values = sixteen_bit()
  path = tmp_path / 'i16.png'
  Image.fromarray(values).save(path)  # uint16: mode I;16.
  return path, grey(np.round(values / 257))


def case_I16B(tmp_path):  # Big-endian 16-bit, as some TIFF writers store it.
  values = sixteen_bit()
  path = tmp_path / 'i16b.tif'
  Image.frombytes('I;16B', (W, H), values.astype('>u2').tobytes()).save(path)
  return path, grey(np.round(values / 257))


def case_I(tmp_path):  # 32-bit integers holding 16-bit values (a 16-bit PNG in older Pillows).
  values = sixteen_bit().astype(np.int32)
  path = tmp_path / 'i.tif'
  Image.fromarray(values).save(path)  # int32: mode I.
  return path, grey(np.round(values / 257))


def case_LA(tmp_path):
  values, alpha = RNG.integers(0, 256, (2, H, W), np.uint8)
  alpha[0, :3] = [0, 128, 255]
  path = tmp_path / 'la.png'
  frombytes('LA', np.stack([values, alpha], -1)).save(path)
  return path, over_black(grey(values), alpha)


def palette_image():
  palette = RNG.integers(0, 256, (16, 3), np.uint8)
  indices = RNG.integers(0, 16, (H, W)).astype(np.uint8)
  indices[0, 0] = 5
  image = frombytes('P', indices)
  image.putpalette(palette.flatten().tolist())
  return image, palette, indices


def case_P(tmp_path):
  image, palette, indices = palette_image()
  path = tmp_path / 'p.png'
  image.save(path)
  return path, palette[indices]


def case_P_with_transparency(tmp_path):  # A GIF's transparent colour: index 5 shows the background.
  image, palette, indices = palette_image()
  path = tmp_path / 'p.gif'
  image.save(path, transparency=5)
  return path, np.where((indices == 5)[..., None], 0, palette[indices]).astype(np.uint8)


def case_PA(tmp_path):
  image, palette, indices = palette_image()
  alpha = RNG.integers(0, 256, (H, W), np.uint8)
  pa = Image.merge('PA', [image, Image.fromarray(alpha)])
  pa.putpalette(palette.flatten().tolist())
  path = tmp_path / 'pa.tif'
  pa.save(path)
  return path, over_black(palette[indices], alpha)


def case_RGB(tmp_path):
  rgb = RNG.integers(0, 256, (H, W, 3), np.uint8)
  path = tmp_path / 'rgb.png'
  Image.fromarray(rgb).save(path)
  return path, rgb


def case_RGB_with_transparent_colour(tmp_path):  # A PNG tRNS chunk: this one colour is transparent.
  rgb = RNG.integers(0, 256, (H, W, 3), np.uint8)
  rgb[1, 2] = rgb[0, 0] = (1, 2, 3)
  path = tmp_path / 'rgb_key.png'
  Image.fromarray(rgb).save(path, transparency=(1, 2, 3))
  keyed = (rgb == (1, 2, 3)).all(-1)
  return path, np.where(keyed[..., None], 0, rgb).astype(np.uint8)


def case_RGBA(tmp_path):
  rgba = RNG.integers(0, 256, (H, W, 4), np.uint8)
  rgba[0, :3, 3] = [0, 128, 255]
  path = tmp_path / 'rgba.png'
  Image.fromarray(rgba).save(path)
  return path, over_black(rgba[..., :3], rgba[..., 3])


def case_RGBA_webp(tmp_path):  # Lossless WebP keeps the pixels exactly.
  rgba = RNG.integers(0, 256, (H, W, 4), np.uint8)
  path = tmp_path / 'rgba.webp'
  Image.fromarray(rgba).save(path, lossless=True, exact=True)
  return path, over_black(rgba[..., :3], rgba[..., 3])


def case_CMYK(tmp_path):
  cmyk = RNG.integers(0, 256, (H, W, 4), np.uint8)
  path = tmp_path / 'cmyk.tif'
  frombytes('CMYK', cmyk).save(path)
  c = cmyk.astype(np.float64)
  return path, np.round((255 - c[..., :3]) * (255 - c[..., 3:]) / 255).astype(np.uint8)


CASES = [case_1, case_L, case_I16, case_I16B, case_I, case_LA, case_P, case_P_with_transparency, case_PA, case_RGB,
         case_RGB_with_transparent_colour, case_RGBA, case_RGBA_webp, case_CMYK]


@pytest.mark.parametrize('case', CASES, ids=[c.__name__[len('case_'):] for c in CASES])
def test_each_mode_decodes_to_the_rgb_it_shows(tmp_path, case):
  path, expected = case(tmp_path)
  decoded = data.decode_image(str(path))
  assert decoded.dtype == np.uint8 and decoded.shape == (H, W, 3)
  np.testing.assert_array_equal(decoded, expected)


def test_sixteen_bit_grey_is_not_saturated(tmp_path):
  """The bug: Pillow's own conversion clips 16-bit values at 255, so nearly every pixel came out white."""
  path = tmp_path / 'dark.png'
  Image.fromarray(np.full((H, W), 4096, np.uint16)).save(path)  # 1/16 of full scale: dark grey.
  assert (data.decode_image(str(path)) == 16).all()


def test_modes_without_a_file_format(tmp_path):
  """HSV and YCbCr images come from code, not files; Pillow's own conversions are exact to one level."""
  hsv = RNG.integers(0, 256, (H, W, 3), np.uint8)
  expected = np.array([[colorsys.hsv_to_rgb(*(p / 255)) for p in row] for row in hsv]) * 255
  rgb = image_folder.rgb_pixels(frombytes('HSV', hsv), 'hsv')
  assert np.abs(rgb.astype(np.float64) - expected).max() <= 1
  ycbcr = RNG.integers(0, 256, (H, W, 3)).astype(np.float64)
  y, cb, cr = ycbcr[..., 0], ycbcr[..., 1] - 128, ycbcr[..., 2] - 128  # JFIF (ITU-R BT.601, full range).
  expected = np.clip(np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1), 0, 255)
  rgb = image_folder.rgb_pixels(frombytes('YCbCr', ycbcr.astype(np.uint8)), 'ycbcr')
  assert np.abs(rgb.astype(np.float64) - expected).max() <= 1


@pytest.mark.parametrize('make,mode', [
    (lambda: Image.fromarray(RNG.random((H, W)).astype(np.float32)), 'F'),
    (lambda: Image.fromarray(np.full((H, W), -5, np.int32)), 'I'),
    (lambda: Image.fromarray(np.full((H, W), 70000, np.int32)), 'I'),
    (lambda: Image.new('LAB', (W, H)), 'LAB'),
])
def test_modes_without_a_known_range_are_refused_by_name(tmp_path, make, mode):
  path = tmp_path / 'odd.tif'
  make().save(path)
  with pytest.raises(DataError) as error:
    data.decode_image(str(path))
  message = str(error.value)
  assert message.startswith(f'cannot read image {path}: mode {mode} ') and '\n' not in message, message


def test_a_folder_of_16_bit_pngs_trains_on_their_values(tmp_path):
  """The whole path: an image folder of 16-bit PNGs gives the scaled values, not white."""
  for split, count in (('train', 3), ('test', 1)):
    for name in ('a', 'b'):
      folder = tmp_path / 'images' / split / name
      folder.mkdir(parents=True)
      for i in range(count):
        Image.fromarray(np.full((8, 8), 257 * (40 + i), np.uint16)).save(folder / f'{i}.png')
  arrays = data.load_arrays('image_folder', str(tmp_path / 'images'), str(tmp_path / 'cache'))
  assert sorted(np.unique(arrays['train_images']).tolist()) == [40, 41, 42]
