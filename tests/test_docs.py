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
  assert targets and not missing, f'{doc} links to {missing}, which are not there relative to {doc}'
