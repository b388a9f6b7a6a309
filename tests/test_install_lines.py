"""Every `pip install` line of the docs and the notebook: well formed here, and resolved by pip where the index answers.

The offline checks always run: each line is one requirement on this project
(`pip install -e '.[a]' '.[b]'` asks for two requirements on one project, which
pip refuses with ResolutionImpossible; extras combine inside one pair of
brackets, `'.[a,b]'`), `-e` applies to it, and every extra it names exists in
pyproject.toml. Then pip resolves them for real (`pip install --dry-run
--ignore-installed`, which downloads metadata but installs nothing): once, for
the union of all the extras the lines name, since a set of packages that
satisfies the union satisfies each line's subset of it; only if that fails,
line by line, to say which. A success is remembered in pytest's cache for the
same pyproject.toml, extras, Python and platform, so a rerun costs nothing. Skipped,
with the reason, when the package index cannot be reached.
"""
import glob
import hashlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import urllib.request

import pytest

from conftest import REPO
import test_notebook

DOCS = ['README.md', 'results/README.md', 'benchmarks/README.md'] + sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'docs', '*.md')))
INSTALL = re.compile(r'\bpip3? install\b[^`\n]*')
OPTIONS_WITH_VALUES = {'-r', '--requirement', '-c', '--constraint', '-i', '--index-url', '--extra-index-url',
                       '-f', '--find-links'}
PROJECT = re.compile(r'^(?:\.|jaxresnet)(?:\[(?P<extras>[^\]]*)\])?(?:\s*@\s*\S+)?$')


def pyproject_extras() -> set:
  try:
    import tomllib  # pylint: disable=g-import-not-at-top
  except ImportError:  # Python 3.10.
    tomllib = pytest.importorskip('tomli')
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    return set(tomllib.load(f)['project']['optional-dependencies'])


def doc_install_lines():
  """(where, command) for each `pip install ...` in the docs; `a && b` and comments cut off."""
  found = []
  for doc in DOCS:
    with open(os.path.join(REPO, doc)) as f:
      for number, line in enumerate(f, start=1):
        for match in INSTALL.finditer(line):
          command = re.split(r'&&|;|\s#', match.group(0))[0].strip()
          found.append((f'{doc}:{number}', command))
  return found


def notebook_requirements():
  """The requirements the notebook's install cell can hand to pip, for each accelerator and runtime."""
  decide = test_notebook.requirement_of()
  url = 'https://github.com/someone/jaxresnet'
  runtimes = [test_notebook.runtime(), test_notebook.runtime('tensorflow', 'tensorflow_datasets')]
  return sorted({decide(url, '', accelerator, runtime) for accelerator in ('tpu', 'cuda12', '') for runtime in runtimes})


def requirements_of(command: str):
  """The requirement arguments of one `pip install` command, and the one `-e` applies to (or None)."""
  tokens = shlex.split(command)[2:]
  requirements, editable, i = [], None, 0
  while i < len(tokens):
    token = tokens[i]
    if token in ('-e', '--editable'):
      editable = tokens[i + 1] if i + 1 < len(tokens) else ''
      requirements.append(editable)
      i += 2
    elif token in OPTIONS_WITH_VALUES:
      i += 2
    elif token.startswith('-'):
      i += 1
    else:
      requirements.append(token)
      i += 1
  return requirements, editable


def extras_of(requirement: str) -> frozenset:
  match = PROJECT.match(requirement)
  return frozenset(e.strip() for e in (match.group('extras') or '').split(',') if e.strip())


def test_the_docs_have_install_lines_and_the_notebook_installs_by_requirement():
  places = {where.split(':')[0] for where, _ in doc_install_lines()}
  assert {'README.md', 'results/README.md', 'benchmarks/README.md'} <= places
  assert notebook_requirements()


def test_every_install_line_is_one_requirement_on_this_project_with_known_extras():
  known = pyproject_extras()
  problems = []
  for where, command in doc_install_lines():
    requirements, editable = requirements_of(command)
    ours = [r for r in requirements if PROJECT.match(r)]
    if len(ours) != 1:
      problems.append(f'{where}: `{command}` names this project {len(ours)} times; put the extras in one '
                      "pair of brackets, e.g. '.[cuda12,peer]'")
      continue
    if ours[0].startswith('jaxresnet') and '@' not in ours[0]:
      problems.append(f"{where}: `{command}` would fetch 'jaxresnet' from PyPI, where this project is not "
                      "published; install the checkout: pip install -e '.[...]'")
    if editable is not None and editable != ours[0]:
      problems.append(f'{where}: `{command}`: -e applies to {editable!r}, not to {ours[0]!r}')
    unknown = extras_of(ours[0]) - known
    if unknown:
      problems.append(f'{where}: `{command}`: no extra {", ".join(sorted(unknown))} in pyproject.toml')
  for requirement in notebook_requirements():
    unknown = extras_of(requirement) - known
    if not PROJECT.match(requirement) or unknown:
      problems.append(f'notebook: {requirement!r}: not one requirement on jaxresnet with known extras')
  assert not problems, '\n'.join(problems)


def test_two_bracketed_requirements_on_one_project_are_caught():
  """The results/README.md line that failed with ResolutionImpossible, and the form that works."""
  requirements, editable = requirements_of("pip install -e '.[cuda12]' '.[bench]'")
  assert [r for r in requirements if PROJECT.match(r)] == ['.[cuda12]', '.[bench]'] and editable == '.[cuda12]'
  assert requirements_of("pip install 'jaxresnet[peer]'")[0] == ['jaxresnet[peer]']  # A PyPI name: refused above.
  requirements, _ = requirements_of("pip install -e '.[cuda12,peer]'")
  assert requirements == ['.[cuda12,peer]'] and extras_of(requirements[0]) == {'cuda12', 'peer'}


def all_extras() -> list:
  lines = [requirements_of(command)[0] for _, command in doc_install_lines()]
  sets = [extras_of(r) for rs in lines for r in rs if PROJECT.match(r)]
  sets += [extras_of(r) for r in notebook_requirements()]
  return sets


def index_url() -> str:
  return os.environ.get('PIP_INDEX_URL') or 'https://pypi.org/simple/'


def index_unreachable_reason():
  url = index_url().rstrip('/') + '/pip/'
  try:
    with urllib.request.urlopen(urllib.request.Request(url, method='HEAD'), timeout=10):
      return None
  except Exception as e:  # pylint: disable=broad-except  # Any failure means: no index to resolve against.
    return f'the package index cannot be reached ({url}: {e})'


def dry_run(extras: frozenset, tmp_path):
  """`pip install --dry-run --ignore-installed -e '.[extras]'` from the repository root; returns the result."""
  report = tmp_path / f'report-{"-".join(sorted(extras)) or "none"}.json'
  command = [sys.executable, '-m', 'pip', 'install', '--dry-run', '--ignore-installed', '--quiet',
             '--disable-pip-version-check', '--report', str(report), '-e', f'.[{",".join(sorted(extras))}]']
  try:
    import setuptools  # pylint: disable=g-import-not-at-top,unused-import
    command.insert(4, '--no-build-isolation')  # The build backend is here already: no temporary build env.
  except ImportError:
    pass
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
  installs = json.loads(report.read_text())['install'] if result.returncode == 0 else []
  return result, {i['metadata']['name'].lower() for i in installs}


@pytest.mark.slow
def test_pip_resolves_every_install_line(tmp_path, request):
  reason = index_unreachable_reason()
  if reason:
    pytest.skip(reason)
  union = frozenset().union(*all_extras())
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    key = hashlib.sha256(f.read() + repr((sorted(union), sys.version, platform.platform())).encode()).hexdigest()
  cache_key = f'jaxresnet/pip_resolves/{key}'
  cache = getattr(request.config, 'cache', None)  # None under -p no:cacheprovider.
  if cache is not None and cache.get(cache_key, False):
    return  # Resolved before for exactly this pyproject.toml, extras, Python and platform.
  result, names = dry_run(union, tmp_path)
  if result.returncode != 0:  # Say which of the documented sets fails.
    failing = []
    for extras in sorted(set(all_extras()), key=sorted):
      one, _ = dry_run(extras, tmp_path)
      if one.returncode != 0:
        failing.append(f".[{','.join(sorted(extras))}]: {one.stderr.strip().splitlines()[-1:]}")
    pytest.fail(f'pip cannot resolve .[{",".join(sorted(union))}] ({result.stderr.strip()[-1500:]}); '
                f'failing lines: {failing}')
  assert {'jaxresnet', 'jax', 'jaxlib'} <= names
  if cache is not None:
    cache.set(cache_key, True)
