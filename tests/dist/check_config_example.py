#!/usr/bin/env python3
"""Checks dist/actiond.conf.example against actiond itself:

- `actiond --check-config -c` accepts it as shipped;
- every setting ad_config_set() knows (its KEY("section", "key") pairs in
  src/util/config.c), and every [api_key] setting, appears in it, set or
  commented out, under its section, and it names no other (but for the
  free-form [rate_limits] and [module.NAME], which it shows an example of);
- each setting follows a comment that says what it does;
- the values it sets agree with the defaults of README.md's configuration
  table.

Usage: check_config_example.py ACTIOND EXAMPLE CONFIG_C README"""
import re
import subprocess
import sys

actiond, example, config_c, readme = sys.argv[1:5]
failures = []


def fail(msg):
    failures.append(msg)
    print('FAIL:', msg)


# 1. actiond accepts it.
r = subprocess.run([actiond, '--check-config', '-c', example],
                   capture_output=True, text=True)
print(f'actiond --check-config: exit {r.returncode}: {(r.stdout + r.stderr).strip()}')
if r.returncode != 0 or not r.stdout.startswith('configuration ok'):
    fail('actiond --check-config refused the example')

# 2. The settings actiond knows.
src = open(config_c).read()
known = set(re.findall(r'KEY\("(\w+)", "(\w+)"\)', src))
api_body = src[src.index('static int set_api_key('):]
api_body = api_body[:api_body.index('\n}\n')]
known |= {('api_key', k) for k in re.findall(r'!strcmp\(key, "(\w+)"\)', api_body)}
print(f'{len(known)} settings in {config_c}')
if len(known) < 30 or ('server', 'listen') not in known or ('api_key', 'token_hash') not in known:
    fail('could not read the settings out of config.c')

# 3. The settings the example names: set, or commented out with no space
#    after the # ("#url = ..."); prose comments have one ("# A libpq ...").
section = None
named, active = set(), {}
prev_is_comment = prev_is_key = False
for n, line in enumerate(open(example), 1):
    text = line.strip()
    m = re.match(r'^[#;]?\[\s*(\w+)[^\]]*\]$', text)
    if m:
        section = m.group(1)
        prev_is_comment = prev_is_key = False
        continue
    m = re.match(r'^([#;]?)([\w.]+)\s*=\s*(.*)$', text)
    if m and section:
        key = (section, m.group(2))
        named.add(key)
        if not m.group(1):
            active[key] = m.group(3)
        if not (prev_is_comment or prev_is_key):
            fail(f'{example}:{n}: {section}.{m.group(2)} has no comment saying what it does')
        prev_is_key, prev_is_comment = True, False
        continue
    prev_is_comment = text.startswith(('#', ';')) and len(text) > 1
    prev_is_key = False

for s, k in sorted(known - named):
    fail(f'{s}.{k} is missing from {example}')
for s, k in sorted(named - known):
    if s not in ('rate_limits', 'module'):
        fail(f'{example} names {s}.{k}, which actiond does not know')
for free in ('rate_limits', 'module'):
    if not any(s == free for s, _ in named):
        fail(f'{example} shows no [{free}...] setting')

# 4. Its values are the documented defaults.
documented = {}
for row in open(readme):
    cells = [c.strip() for c in row.strip().strip('|').split('|')]
    if len(cells) >= 3:
        keys = re.findall(r'`(\w+)\.(\w+)`', cells[0])
        default = re.fullmatch(r'`([^`]*)`', cells[1])
        for s, k in keys:
            documented[(s, k)] = default.group(1) if default else None
for key, value in sorted(active.items()):
    if key not in documented:
        fail(f'{key[0]}.{key[1]} is set in {example} but not in README.md\'s table')
    elif documented[key] != value:
        fail(f'{key[0]}.{key[1]}: {example} says {value!r}, README.md {documented[key]!r}')
print(f'{len(named)} settings named in the example, {len(active)} set to their defaults')

if failures:
    sys.exit(1)
print('ok')
