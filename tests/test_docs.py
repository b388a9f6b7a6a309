"""The docs' relative links lead to files of the checkout (issue 35: docs/reproduce.md's link to the notebook did not)."""
import glob
import os
import re

import pytest

from conftest import REPO

DOCS = ['README.md', 'benchmarks/README.md'] + sorted(os.path.relpath(p, REPO)
                                                      for p in glob.glob(os.path.join(REPO, 'docs', '*.md')))
LINK = re.compile(r'\]\(([^)\s]+)\)')


@pytest.mark.parametrize('doc', DOCS)
def test_every_relative_link_of_a_doc_leads_to_a_file_of_the_checkout(doc):
  with open(os.path.join(REPO, doc)) as f:
    text = f.read()
  targets = [t.split('#', 1)[0] for t in LINK.findall(text) if not re.match(r'^[a-z]+:|^#', t)]
  missing = [t for t in targets if t and not os.path.exists(os.path.join(REPO, os.path.dirname(doc), t))]
  assert not missing, f'{doc} links to {missing}, which are not there relative to {doc}'


def test_the_link_check_finds_the_links_it_checks():
  # A LINK pattern that matched nothing would pass every doc above; the README links to the docs and results.
  with open(os.path.join(REPO, 'README.md')) as f:
    assert {'docs/reproduce.md', 'docs/design.md', 'results/README.md'} <= {t.split('#', 1)[0] for t in LINK.findall(f.read())}
