"""Renders benchmarks/results/*.json into the results section of benchmarks/README.md.

    python -m benchmarks.report [--readme=benchmarks/README.md] [--results_dir=benchmarks/results]

benchmarks.throughput calls this after each run. Every number in the section
comes from a results file, which the throughput tool wrote; nothing is typed in.
"""
import glob
import json
import os
from typing import Any, Dict, List

from absl import app
from absl import flags

HERE = os.path.dirname(os.path.abspath(__file__))
BEGIN = '<!-- results: rendered by `python -m benchmarks.report` from benchmarks/results/*.json; do not edit -->'
END = '<!-- end of results -->'


def _num(x, digits=0) -> str:
  return '—' if x is None else f'{x:,.{digits}f}'


def _ips(r) -> str:
  """Median images/s with the spread of the windows."""
  if not r:
    return '—'
  return f'{r["images_per_second"]:,.0f} ({r["min"]:,.0f}–{r["max"]:,.0f})'


def _ratio(x) -> str:
  return '—' if x is None else f'**{x:.2f}**'


def _mib(x) -> str:
  return '—' if x is None else f'{x / 2**20:,.0f} MiB'


def _skip_note(section: Dict[str, Any]) -> str:
  return f'skipped: {section["skipped"]}' if 'skipped' in section else ''


def section(name: str, r: Dict[str, Any]) -> str:
  d, v, s = r['device'], r['versions'], r['settings']
  lines = [f'### {d["count"]} x {d["kind"]}, {s["precision"]} (`results/{name}`)', '']
  hardware = f'{d["count"]} x {d["kind"]}; host: {d["host_cpu"]}, {d["host_cores"]} cores'
  if d.get('host_cpu_flags'):
    hardware += f' ({", ".join(d["host_cpu_flags"])})'
  env = ' '.join(f'{k}={v}' for k, v in (r.get('environment') or {}).items())
  lines += [f'- Command: `{env + " " if env else ""}{r["command"]}`',
            f'- Hardware: {hardware}',
            f'- Versions: python {v["python"]}, jax {v["jax"]}, jaxlib {v["jaxlib"]}, flax {v["flax"]}, '
            f'optax {v["optax"]}, numpy {v["numpy"]}, torch {v.get("torch") or "not installed"}',
            f'- Run {r["date"]}; load average {", ".join(f"{x:.1f}" for x in r["load_average"]["start"][:1])} '
            f'at the start, {", ".join(f"{x:.1f}" for x in r["load_average"].get("end", [None])[:1] if x is not None)} '
            'at the end (1-minute)',
            f'- Timing: batch {s["batch_size"]}; {s["repeats"]} windows of {s["steps"]} steps per variant, '
            f'JAX and PyTorch interleaved; median window, (min–max) of the windows',
            '']
  if r.get('torch_skipped'):
    lines += [f'PyTorch reference: {r["torch_skipped"]}.', '']
  peak = (d.get('peak_tflops') or {}).get(s['precision'])
  lines += ['| Model | Params (JAX / PyTorch) | JAX train img/s | PyTorch eager img/s | Best PyTorch img/s '
            '| JAX/PyTorch eager | JAX/best PyTorch | JAX eval img/s | PyTorch eval img/s (best) '
            '| Eval JAX/best | JAX compile s (train, eval) | JAX train TFLOP/s'
            + (f' (% of {peak:g})' if peak else '') + ' | Memory (JAX executable; PyTorch peak) |',
            '|' + '---|' * 13]
  for model, m in r['models'].items():
    j, t, ratios = m.get('jax', {}), m.get('torch', {}), m.get('ratios', {})
    variants = t.get('variants') or {}
    best = ratios.get('best_torch_train_variant')
    best_eval = ratios.get('best_torch_eval_variant')
    params = f'{_num(j.get("params"))} / {_num(t.get("params"))}'
    tflops = (m.get('tflops') or {}).get('jax_train')
    tflops_cell = _num(tflops, 3) + (f' ({100 * tflops / peak:.1f}%)' if tflops and peak else '')
    torch_peak = variants.get(best, {}).get('peak_bytes') if best else None
    memory = f'{_mib((j.get("executable_bytes") or {}).get("train"))}; {_mib(torch_peak)}'
    compile_s = j.get('compile_seconds') or {}
    cells = [model, params,
             _ips(j.get('train')) if 'train' in j else _skip_note(j),
             _ips(variants.get('eager', {}).get('train')) if variants else _skip_note(t) or '—',
             f'{_ips(variants[best]["train"])} {best}' if best else '—',
             _ratio(ratios.get('train_vs_torch_eager')), _ratio(ratios.get('train_vs_torch_best')),
             _ips(j.get('eval')), f'{_ips(variants[best_eval]["eval"])} {best_eval}' if best_eval else '—',
             _ratio(ratios.get('eval_vs_torch_best')),
             f'{_num(compile_s.get("train"), 1)}, {_num(compile_s.get("eval"), 1)}' if compile_s else '—',
             tflops_cell, memory]
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += [''] + _variants_table(r) + _end_to_end(r)
  return '\n'.join(lines)


def _variants_table(r) -> List[str]:
  """The JAX variants (step alone, several steps per call, XLA options) against the best PyTorch."""
  keys = []
  for m in r['models'].values():
    for k, x in (m.get('jax') or {}).items():
      if k.startswith('train') and isinstance(x, dict) and 'images_per_second' in x and k not in keys:
        keys.append(k)
  if not keys:
    return []
  lines = ['JAX variants, img/s and ratio to the best PyTorch variant (`train` is the product\'s '
           '`make_train_fn`; `train_step_only` is `train_step` on a ready batch, without the on-device '
           'gather and augmentation; `train_scanK` runs K steps per jit call; `train_compiler_options` '
           f'is `train` compiled with {json.dumps(r["settings"].get("compiler_options") or {})}):', '',
           '| Model | ' + ' | '.join(keys) + ' | CPU ms per train step (process, JAX `train` / PyTorch eager) |',
           '|' + '---|' * (len(keys) + 2)]
  for model, m in r['models'].items():
    j, ratios = m.get('jax') or {}, m.get('ratios') or {}
    cells = [model]
    for k in keys:
      if k in j:
        ratio = ratios.get(f'{k}_vs_torch_best') if k != 'train' else ratios.get('train_vs_torch_best')
        cells.append(f'{_ips(j[k])}' + (f', {_ratio(ratio)}' if ratio is not None else ''))
      else:
        cells.append('—')
    eager = ((m.get('torch') or {}).get('variants') or {}).get('eager', {}).get('train')
    cells.append(f'{_num((j.get("train") or {}).get("cpu_ms_per_step"))} / '
                 f'{_num(eager.get("cpu_ms_per_step") if eager else None)}')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines + ['']


def _end_to_end(r) -> List[str]:
  e = r.get('end_to_end')
  if not e:
    return []
  if 'skipped' in e:
    return [f'End to end ({e["model"]}): {e["skipped"]}.', '']
  how = (f'timed over {e["timed_steps"]} of the {e["steps_per_epoch"]} steps and extrapolated to the epoch'
         if e['extrapolated'] else f'one whole epoch of {e["steps_per_epoch"]} steps')
  lines = [f'End to end, {e["model"]} on CIFAR-10-JPEG ({e["train_examples"]:,} training images, '
           f'input pipeline included; {how}):', '',
           '| Framework | Seconds per epoch | Seconds per step | Input pipeline |', '|---|---|---|---|']
  for name, key in (('jaxresnet', 'jax'), ('PyTorch', 'torch')):
    x = e.get(key) or {}
    if 'seconds_per_epoch' in x:
      lines.append(f'| {name} | {x["seconds_per_epoch"]:,.1f} | {x["seconds_per_step"]:.3f} | {x["pipeline"]} |')
    else:
      lines.append(f'| {name} | — | — | {_skip_note(x)} |')
  if e.get('jax_over_torch_throughput') is not None:
    lines += ['', f'JAX/PyTorch epoch throughput: {_ratio(e["jax_over_torch_throughput"])}.']
  return lines + ['']


def render(results_dir: str) -> str:
  paths = sorted(glob.glob(os.path.join(results_dir, '*.json')))
  if not paths:
    return '_No results yet: run `python -m benchmarks.throughput`._'
  sections = []
  for path in paths:
    with open(path) as f:
      sections.append(section(os.path.basename(path), json.load(f)))
  return '\n\n'.join(sections)


def replace_block(readme: str, begin: str, end: str, body: str, heading: str) -> None:
  """Replaces the text between the markers (or appends the heading and markers) with `body`."""
  text = open(readme).read() if os.path.exists(readme) else '# Benchmarks\n'
  block = f'{begin}\n\n{body}\n\n{end}'
  if begin in text and end in text:
    text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
  else:
    text = text.rstrip('\n') + f'\n\n{heading}\n\n' + block + '\n'
  with open(readme, 'w') as f:
    f.write(text)


def update_readme(readme: str, results_dir: str) -> None:
  replace_block(readme, BEGIN, END, render(results_dir), heading='## Results')


def main(argv):
  del argv
  update_readme(flags.FLAGS.readme, flags.FLAGS.results_dir)
  print(f'updated {flags.FLAGS.readme} from {flags.FLAGS.results_dir}')


if __name__ == '__main__':
  # Defined here, not at import: benchmarks.throughput imports this module and has its own --readme.
  flags.DEFINE_string('readme', os.path.join(HERE, 'README.md'), 'The README to update.')
  flags.DEFINE_string('results_dir', os.path.join(HERE, 'results'), 'Where the <device>.json files are.')
  app.run(main)
