#!/usr/bin/env python3
"""Layering check: every #include in src/ and include/limpet/ must be allowed by the meson build.

The meson files are the only source of truth for who may include whom:
  - the layers, bottom up, are the `foreach layer : [...]` list in src/meson.build;
  - src/<layer>/meson.build declares `limpet_<layer>_lib = static_library(..., dependencies: [...])`
    and `limpet_<layer>_dep = declare_dependency(..., dependencies: [...])`.
A file in src/<layer>/ may include `limpet/<x>/...` when x is the layer itself or is reachable from
the library's dependencies through the declare_dependency() of each (that is what the compiler and
linker actually get). A header in include/limpet/<layer>/ is read by every user of the layer, so it
may include only what limpet_<layer>_dep itself exports. The same goes for third-party headers:
<uv.h> needs libuv, <openssl/...> openssl, <toml.hpp> toml11, <llhttp.h> llhttp, <xxhash.h>
libxxhash in the closure (so that, e.g., balancer cannot include libuv).

It also checks that doc/architecture.md's "Layers" table lists the layers in the same order and,
per layer, exactly the library's direct dependencies (column "may include": layers; column
"third-party": the other meson dependencies, by their dependency() name).

    /usr/bin/python3 tests/layering/check_layering.py [--root DIR]   exit 1 and one line per problem
    /usr/bin/python3 tests/layering/check_layering.py --self-test     the check catches violations
"""

import argparse
import pathlib
import re
import shutil
import sys
import tempfile

# How a third-party dependency (by its meson dependency() name) shows in an #include.
THIRD_PARTY_HEADERS = {
    'libuv': re.compile(r'^uv\.h$|^uv/'),
    'openssl': re.compile(r'^openssl/'),
    'toml11': re.compile(r'^toml\.hpp$|^toml11/|^toml/'),
    'llhttp': re.compile(r'^llhttp\.h$'),
    'libxxhash': re.compile(r'^xxhash\.h$'),
    'hiredis': re.compile(r'^hiredis/'),
    'libcares': re.compile(r'^ares(_[a-z]+)?\.h$'),
}
SOURCE_SUFFIXES = {'.cpp', '.hpp', '.cc', '.h', '.c'}
INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*[<"]([^>"]+)[>"]', re.M)


class MesonError(Exception):
    pass


def strip_comments(text):
    # Meson comments run from '#' to the end of the line; '#' inside a '...' string is kept.
    out = []
    for line in text.splitlines():
        in_str = False
        for i, c in enumerate(line):
            if c == "'":
                in_str = not in_str
            elif c == '#' and not in_str:
                line = line[:i]
                break
        out.append(line)
    return '\n'.join(out)


def balanced(text, start, open_c, close_c):
    """The text between text[start] == open_c and its matching close_c."""
    depth = 0
    in_str = False
    for i in range(start, len(text)):
        c = text[i]
        if c == "'":
            in_str = not in_str
        elif in_str:
            continue
        elif c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return text[start + 1:i]
    raise MesonError(f'unbalanced {open_c}{close_c}')


def call_args(text, var, func, where):
    m = re.search(r'\b' + re.escape(var) + r'\s*=\s*' + re.escape(func) + r'\s*\(', text)
    if not m:
        raise MesonError(f'{where}: no `{var} = {func}(...)`')
    return balanced(text, m.end() - 1, '(', ')')


def list_vars(text):
    """`name = [ ... ]` assignments, so that `dependencies: name` can be read too."""
    found = {}
    for m in re.finditer(r'^\s*(\w+)\s*=\s*\[', text, re.M):
        found[m.group(1)] = balanced(text, m.end() - 1, '[', ']')
    return found


def dependencies_kwarg(args, text, where):
    """Identifiers in the `dependencies:` keyword of a call's argument text ([] when absent)."""
    m = re.search(r'\bdependencies\s*:\s*', args)
    if not m:
        return []
    rest = args[m.end():]
    if rest.startswith('['):
        body = balanced(rest, 0, '[', ']')
    else:
        ident = re.match(r'\w+', rest)
        if not ident:
            raise MesonError(f'{where}: cannot read dependencies: {rest[:40]!r}')
        body = ident.group(0)
    names = []
    variables = list_vars(text)
    for item in (s.strip() for s in body.split(',')):
        if not item:
            continue
        if not re.fullmatch(r'\w+', item):
            raise MesonError(f'{where}: cannot read dependency {item!r} (only plain names are understood)')
        if item in variables and not item.endswith('_dep'):
            names.extend(dependencies_kwarg('dependencies: [' + variables[item] + ']', text, where))
        else:
            names.append(item)
    return names


class Build:
    """What the meson files declare."""

    def __init__(self, root):
        self.root = root
        top = strip_comments((root / 'meson.build').read_text())
        src = strip_comments((root / 'src' / 'meson.build').read_text())
        m = re.search(r'foreach\s+layer\s*:\s*\[', src)
        if not m:
            raise MesonError('src/meson.build: no `foreach layer : [...]`')
        self.layers = re.findall(r"'(\w+)'", balanced(src, m.end() - 1, '[', ']'))
        # Third-party dependency variables by their dependency() name: uv_dep -> libuv.
        self.third_party = {v: n for v, n in re.findall(r"\b(\w+_dep)\s*=\s*dependency\s*\(\s*'([^']+)'", top)}
        for v in re.findall(r'\b(\w+_dep)\s*=\s*declare_dependency\s*\(', top):
            self.third_party.setdefault(v, v[:-len('_dep')])
        self.lib = {}  # layer -> (layers, third-party names) the static library is compiled with
        self.pub = {}  # layer -> (layers, third-party names) limpet_<layer>_dep hands on
        for i, layer in enumerate(self.layers):
            where = f'src/{layer}/meson.build'
            path = root / 'src' / layer / 'meson.build'
            if not path.is_file():
                raise MesonError(f'{where}: missing')
            text = strip_comments(path.read_text())
            self.lib[layer] = self._split(dependencies_kwarg(
                call_args(text, f'limpet_{layer}_lib', 'static_library', where), text, where), i, where)
            self.pub[layer] = self._split(dependencies_kwarg(
                call_args(text, f'limpet_{layer}_dep', 'declare_dependency', where), text, where), i, where)
        # Executables built from src/*.cpp: file -> (layers, third-party) like a library.
        self.executables = {}
        for m in re.finditer(r'\b\w+\s*=\s*executable\s*\(', top):
            args = balanced(top, m.end() - 1, '(', ')')
            deps = self._split(dependencies_kwarg(args, top, 'meson.build'), len(self.layers), 'meson.build')
            for f in re.findall(r"'(src/[^'/]+)'", args):
                self.executables[f] = deps

    def _split(self, names, index, where):
        layers, third = [], []
        for n in names:
            m = re.fullmatch(r'limpet_(\w+)_dep', n)
            if m:
                dep = m.group(1)
                if dep not in self.layers:
                    raise MesonError(f'{where}: {n} is not a layer of src/meson.build')
                if self.layers.index(dep) >= index:
                    raise MesonError(f'{where}: depends on {dep}, which is not below it in src/meson.build')
                layers.append(dep)
            elif n in self.third_party:
                third.append(self.third_party[n])
            else:
                raise MesonError(f'{where}: unknown dependency {n}')
        return layers, third

    def closure(self, direct):
        """Layers and third-party names reachable from (layers, third) through exported deps."""
        layers, third = set(), set(direct[1])
        todo = list(direct[0])
        while todo:
            layer = todo.pop()
            if layer in layers:
                continue
            layers.add(layer)
            todo.extend(self.pub[layer][0])
            third.update(self.pub[layer][1])
        return layers, third


def sources(directory):
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob('*') if p.suffix in SOURCE_SUFFIXES and p.is_file())


def check_file(path, build, own_layer, allowed, problems, used):
    layers, third = allowed
    rel = path.relative_to(build.root)
    text = path.read_text(errors='replace')
    for m in INCLUDE_RE.finditer(text):
        header = m.group(1)
        line = text.count('\n', 0, m.start()) + 1
        lm = re.match(r'limpet/([^/]+)/', header)
        if lm:
            target = lm.group(1)
            if target == own_layer:
                continue
            used.add(target)
            if target not in layers:
                why = 'not a dependency' if target in build.layers else 'not a layer'
                problems.append(f'{rel}:{line}: includes {header}, but {target} is {why} of '
                                f'{own_layer or "this executable"} in the meson build')
            continue
        for name, pattern in THIRD_PARTY_HEADERS.items():
            if pattern.search(header) and name not in third:
                problems.append(f'{rel}:{line}: includes <{header}>, but {name} is not among the '
                                f'dependencies of {own_layer or "this executable"} in the meson build')


def check_includes(build):
    problems, notes = [], []
    root = build.root
    for layer in build.layers:
        lib_allowed = build.closure(build.lib[layer])
        pub_allowed = build.closure(build.pub[layer])
        used = set()
        for path in sources(root / 'src' / layer):
            check_file(path, build, layer, lib_allowed, problems, used)
        for path in sources(root / 'include' / 'limpet' / layer):
            check_file(path, build, layer, pub_allowed, problems, used)
        unused = [d for d in build.lib[layer][0] if d not in used]
        if unused:
            notes.append(f'note: {layer} declares {", ".join(unused)} but includes none of its headers')
    known = set(build.layers)
    for directory in sorted(p for p in (root / 'src').iterdir() if p.is_dir()):
        if directory.name not in known:
            problems.append(f'src/{directory.name}/ is not a layer of src/meson.build')
    for directory in sorted(p for p in (root / 'include' / 'limpet').iterdir() if p.is_dir()):
        if directory.name not in known:
            problems.append(f'include/limpet/{directory.name}/ is not a layer of src/meson.build')
    for path in sorted((root / 'src').glob('*')):
        if path.suffix not in SOURCE_SUFFIXES:
            continue
        rel = str(path.relative_to(root))
        if rel not in build.executables:
            problems.append(f'{rel}: not in any executable() of meson.build')
            continue
        allowed = build.closure(build.executables[rel])
        check_file(path, build, None, allowed, problems, set())
    return problems, notes


def cell_names(cell):
    cell = re.sub(r'\([^)]*\)', '', cell)  # "(why)" remarks are prose
    return [n.strip(' `*') for n in cell.split(',') if n.strip(' `*') not in ('', '—', '-')]


def check_doc(build):
    path = build.root / 'doc' / 'architecture.md'
    lines = path.read_text().splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if re.match(r'#+\s*Layers\b', l))
    except StopIteration:
        return ['doc/architecture.md: no "Layers" section']
    table = []
    for line in lines[start + 1:]:
        if line.startswith('|'):
            table.append([c.strip() for c in line.strip().strip('|').split('|')])
        elif table:
            break
    if len(table) < 3:
        return ['doc/architecture.md: no table under "Layers"']
    head = [h.lower() for h in table[0]]
    try:
        col_layers = head.index('may include')
        col_third = head.index('third-party')
    except ValueError:
        return ['doc/architecture.md: the Layers table needs columns "may include" and "third-party"']
    problems = []
    rows = {}
    order = []
    for row in table[2:]:
        name = row[0].strip('` ')
        order.append(name)
        rows[name] = row
    if order != build.layers:
        problems.append(f'doc/architecture.md: Layers table lists {order}, src/meson.build {build.layers}')
    for layer in build.layers:
        if layer not in rows:
            continue
        row = rows[layer]
        want_layers, want_third = build.lib[layer]
        got_layers = cell_names(row[col_layers]) if col_layers < len(row) else []
        got_third = cell_names(row[col_third]) if col_third < len(row) else []
        if sorted(got_layers) != sorted(want_layers):
            problems.append(f'doc/architecture.md: {layer} "may include" says {got_layers or "nothing"}, '
                            f'src/{layer}/meson.build declares {want_layers or "nothing"}')
        if sorted(got_third) != sorted(want_third):
            problems.append(f'doc/architecture.md: {layer} "third-party" says {got_third or "nothing"}, '
                            f'src/{layer}/meson.build declares {want_third or "nothing"}')
    return problems


def run(root):
    try:
        build = Build(root)
    except MesonError as e:
        return [f'cannot read the meson build: {e}'], []
    problems, notes = check_includes(build)
    problems += check_doc(build)
    return problems, notes


def self_test(root):
    """Copies what the check reads, adds violations one at a time, and expects each to be caught."""
    cases = [
        # (file to append to, line appended, what the problem line must contain)
        ('src/config/values.cpp', '#include "limpet/proxy/relay.hpp"\n', 'limpet/proxy/relay.hpp'),
        ('src/health/checker.cpp', '#include "limpet/proxy/exchange.hpp"\n', 'limpet/proxy/exchange.hpp'),
        ('include/limpet/net/stream.hpp', '#include "limpet/tls/context.hpp"\n', 'limpet/tls/context.hpp'),
        ('src/util/log.cpp', '#include "limpet/config/config.hpp"\n', 'limpet/config/config.hpp'),
        ('include/limpet/balancer/upstream.hpp', '#include <uv.h>\n', '<uv.h>'),
        ('include/limpet/config/config.hpp', '#include <toml.hpp>\n', '<toml.hpp>'),
        ('doc/architecture.md', None, 'doc/architecture.md'),
    ]
    failures = []
    with tempfile.TemporaryDirectory(prefix='layering-') as tmp:
        base = pathlib.Path(tmp) / 'clean'
        base.mkdir()
        for part in ('meson.build', 'src', 'include', 'doc'):
            src = root / part
            (shutil.copytree if src.is_dir() else shutil.copy)(src, base / part)
        before = set(run(base)[0])  # the plain check's business; here only new problems count
        for i, (rel, line, expect) in enumerate(cases):
            tree = pathlib.Path(tmp) / f'case{i}'
            shutil.copytree(base, tree)
            target = tree / rel
            text = target.read_text()
            if line is None:
                # The doc forgets one of the health layer's dependencies.
                text = re.sub(r'^(\|\s*`health`\s*\|[^|]*\|)([^|]*)\|', r'\1 net |', text, count=1, flags=re.M)
            else:
                text += line
            target.write_text(text)
            problems = [p for p in run(tree)[0] if p not in before]
            if not any(expect in p for p in problems):
                failures.append(f'{rel} with {line or "a wrong table row"!r}: not caught (got {problems})')
            else:
                print(f'ok: caught {rel} + {(line or "wrong health row").strip()}')
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', type=pathlib.Path, default=pathlib.Path(__file__).resolve().parents[2])
    parser.add_argument('--self-test', action='store_true')
    args = parser.parse_args()
    if args.self_test:
        failures = self_test(args.root)
        for f in failures:
            print('FAIL:', f)
        return 1 if failures else 0
    problems, notes = run(args.root)
    for n in notes:
        print(n)
    for p in problems:
        print(p)
    if not problems:
        print('layering: ok')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
