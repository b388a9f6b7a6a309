"""The test suite never writes to the user's cache (~/.cache/jaxresnet or $JAXRESNET_CACHE_DIR)."""
import os

import pytest

from jaxresnet import data


@pytest.fixture(scope='module')
def module_cache_dir():
  """Where a module-wide fixture (a run trained once for several tests) would cache its arrays.

  Such fixtures are set up before any per-test fixture, so a per-test cache
  folder does not reach them.
  """
  return data.default_cache_dir()


def test_a_module_fixture_caches_in_the_session_temporary_folder(module_cache_dir, tmp_path_factory):
  base = str(tmp_path_factory.getbasetemp())
  assert os.path.commonpath([module_cache_dir, base]) == base, module_cache_dir


def test_each_test_caches_in_its_own_folder(tmp_path):
  assert data.default_cache_dir() == str(tmp_path / 'cache')
