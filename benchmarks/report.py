"""Renders benchmarks/results/ into benchmarks/README.md: every results file in its table, or one line saying why not.

    python -m benchmarks.report [--readme=benchmarks/README.md] [--results_dir=benchmarks/results]

Three kinds of results file, each rendered between its own markers in the README:
benchmarks.throughput's results/<device>.json (the Results section),
benchmarks.population's results/population_<device>.json (Populations) and
benchmarks.conv_layers' results/layers/<device>.json (Convolutions alone). A
JSON file that is none of these, or cannot be read, is named on one `skipped`
line and left out. benchmarks.throughput, population and conv_layers call this
after each run. Every number in those sections comes from a results file;
nothing is typed in.
"""
import glob
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from absl import flags

from jaxresnet.infra import cli

HERE = os.path.dirname(os.path.abspath(__file__))
BEGIN = '<!-- results: rendered by `python -m benchmarks.report` from benchmarks/results/*.json; do not edit -->'
END = '<!-- end of results -->'
POPULATION_BEGIN = ('<!-- populations: rendered by `python -m benchmarks.report` from '
                    'benchmarks/results/population_*.json; do not edit -->')
POPULATION_END = '<!-- end of populations -->'
CONV_BEGIN = ('<!-- conv layers: rendered by `python -m benchmarks.conv_layers` and `benchmarks.report` from '
              'benchmarks/results/layers/*.json; do not edit -->')
CONV_END = '<!-- end of conv layers -->'
LAYERS_DIR = 'layers'  # results/layers/<device>.json: benchmarks.conv_layers.


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


def population_section(name: str, result: Dict[str, Any]) -> str:
  """benchmarks.population's table of aggregate images/s against K, and its estimate of the He et al. table."""
  device = result['device']
  lines = [f'### {device["count"]} x {device["kind"]} (`results/{name}`)', '',
           f'- Command: `{result["command"]}`',
           f'- Hardware: {device["count"]} x {device["kind"]}; host: {device.get("host_cpu", "unknown")}, '
           f'{device.get("host_cores", "?")} cores',
           f'- Versions: jax {result["versions"]["jax"]}, flax {result["versions"]["flax"]}',
           f'- Timing: batch {result["batch_size"]} per member; {result["repeats"]} windows of '
           f'{result["steps_per_window"]} steps; median window', '',
           '| model | precision | ' + ' | '.join(f'K={k}' for k in result['num_seeds']) + ' | K=max / K=1 |',
           '|---|---|' + '---|' * (len(result['num_seeds']) + 1)]
  for key, rows in result['populations'].items():
    model, precision = key.split('/')
    by_k = {r['num_seeds']: r['images_per_second'] for r in rows}
    cells = [f'{by_k[k]:,.0f}' if k in by_k else '-' for k in result['num_seeds']]
    gain = f'{by_k[max(by_k)] / by_k[1]:.2f}x' if 1 in by_k else '-'
    lines.append(f'| {model} | {precision} | ' + ' | '.join(cells) + f' | {gain} |')
  for precision, estimate in result['table_estimates'].items():
    if 'rows' not in estimate:
      lines += ['', f'He et al. table estimate, {precision}: {estimate.get("skipped", "not made")}.']
      continue
    lines += ['', f'Estimated device-minutes of the He et al. table, {estimate["seeds"]} seeds per model as one '
              f'population, {estimate["steps"]} steps each, {precision} (step time: the measured K='
              f'{min(estimate["measured_k_per_model"].values())} step as a bound; other depths '
              f'{estimate["method"]}): **{estimate["total_minutes"]:.1f} minutes** in all.', '',
              '| ' + ' | '.join(r['model'] for r in estimate['rows']) + ' |',
              '|' + '---|' * len(estimate['rows']),
              '| ' + ' | '.join(f'{r["minutes"]:.1f}' + ('' if r['measured_k'] else '*') for r in estimate['rows'])
              + ' |', '', '(* interpolated, not measured)']
  return '\n'.join(lines)


def conv_layers_section(name: str, result: Dict[str, Any]) -> str:
  """benchmarks.conv_layers' milliseconds per convolution, by direction and implementation."""
  directions = ('fwd', 'dx', 'dw')
  lines = [f'- Command: `{result["command"]}` (`results/{LAYERS_DIR}/{name}`)',
           f'- Hardware: {result["hardware"]}',
           f'- Versions: {result["versions"]}',
           f'- Run {result["time"]}; load average {result["load_start"]:.1f} at the start, '
           f'{result["load_end"]:.1f} at the end (1-minute)',
           '- Milliseconds per call, median of the windows; x19 = ResNet-20\'s 19 convs summed', '',
           '| Implementation | ' + ' | '.join(f'{s}: fwd / dx / dw' for s in result['shapes'] + ['x19']) + ' |',
           '|---|' + '---|' * (len(result['shapes']) + 1)]
  for implementation, by_shape in result['rows'].items():
    cells = [' / '.join(f'{by_shape[s][d]:.1f}' for d in directions) for s in result['shapes'] + ['x19']]
    lines.append(f'| {implementation} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def kind_of(result: Any) -> Optional[str]:
  """Which tool wrote a results file, from the fields it has: 'throughput', 'population', 'conv_layers' or None."""
  if not isinstance(result, dict):
    return None
  if {'device', 'settings', 'models'} <= result.keys():
    return 'throughput'
  if {'device', 'populations', 'num_seeds'} <= result.keys():
    return 'population'
  if {'rows', 'shapes', 'command'} <= result.keys():
    return 'conv_layers'
  return None


# kind -> (where its files are, relative to results_dir; how one is rendered; the README block; heading; if none).
KINDS: Dict[str, Tuple[str, Callable[[str, Dict[str, Any]], str], str, str, str, str]] = {
    'throughput': ('*.json', section, BEGIN, END, '## Results',
                   '_No results yet: run `python -m benchmarks.throughput`._'),
    'population': ('*.json', population_section, POPULATION_BEGIN, POPULATION_END, '## Populations',
                   '_No results yet: run `python -m benchmarks.population`._'),
    'conv_layers': (os.path.join(LAYERS_DIR, '*.json'), conv_layers_section, CONV_BEGIN, CONV_END,
                    '## Convolutions alone', '_No results yet: run `python -m benchmarks.conv_layers`._'),
}
EXPECTED = {'*.json': ('throughput', 'population'), os.path.join(LAYERS_DIR, '*.json'): ('conv_layers',)}


def render_all(results_dir: str) -> Tuple[Dict[str, str], List[str]]:
  """Each kind's rendered block, and one `skipped <file>: why` line per results file left out."""
  sections = {kind: [] for kind in KINDS}
  skipped = []
  for pattern, expected in EXPECTED.items():
    for path in sorted(glob.glob(os.path.join(results_dir, pattern))):
      name = os.path.relpath(path, results_dir)
      try:
        with open(path) as f:
          result = json.load(f)
      except (OSError, ValueError) as e:
        skipped.append(f'skipped {name}: not readable as JSON ({str(e).splitlines()[0]})')
        continue
      kind = kind_of(result)
      if kind not in expected:
        tools = ' or '.join(f'benchmarks.{k}' for k in expected)
        skipped.append(f'skipped {name}: not a {tools} results file' +
                       (f' (it looks like benchmarks.{kind}\'s)' if kind else ''))
        continue
      try:
        sections[kind].append(KINDS[kind][1](os.path.basename(path), result))
      except (KeyError, TypeError, ValueError, IndexError) as e:
        skipped.append(f'skipped {name}: a benchmarks.{kind} file without {type(e).__name__} {e}')
  blocks = {kind: '\n\n'.join(found) if found else KINDS[kind][5] for kind, found in sections.items()}
  return blocks, skipped


def render(results_dir: str) -> str:
  """The Results section's block (benchmarks.throughput's files)."""
  return render_all(results_dir)[0]['throughput']


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


def update_readme(readme: str, results_dir: str) -> List[str]:
  """Re-renders every block of `readme` from `results_dir`; returns the `skipped` lines (also on stderr)."""
  blocks, skipped = render_all(results_dir)
  for kind, (_, _, begin, end, heading, _) in KINDS.items():
    replace_block(readme, begin, end, blocks[kind], heading=heading)
  for line in skipped:
    print(line, file=sys.stderr, flush=True)
  return skipped


def main(argv):
  cli.exit_on_extra_arguments(argv)
  skipped = update_readme(flags.FLAGS.readme, flags.FLAGS.results_dir)
  print(f'updated {flags.FLAGS.readme} from {flags.FLAGS.results_dir}'
        + (f' ({len(skipped)} file{"s" if len(skipped) > 1 else ""} skipped)' if skipped else ''))


if __name__ == '__main__':
  # Defined here, not at import: benchmarks.throughput imports this module and has its own --readme.
  flags.DEFINE_string('readme', os.path.join(HERE, 'README.md'), 'The README to update.')
  flags.DEFINE_string('results_dir', os.path.join(HERE, 'results'), 'Where the <device>.json files are.')
  cli.run_cli(main)
