#!/usr/bin/env python3
"""Checks the systemd unit as `meson install` installs it (build/dist/):

- ExecStart runs the installed actiond, and no @placeholder@ is left;
- `systemd-analyze verify` finds nothing to say about it (run on a copy
  whose ExecStart names this build's actiond, since verify wants the
  program to exist; a copy with a misspelt setting shows the check can
  fail here);
- `systemd-analyze security --offline` rates its exposure 2.0 or less;
- it restarts on failure but not on a refused configuration (exit status
  2), has no ExecReload, sends SIGTERM to actiond
  alone, and gives the drain, the close handshakes and the embedded
  PostgreSQL's stop (server.shutdown_timeout + 4 s + 15 s) time to end.

Usage: check_unit.py UNIT INSTALLED_ACTIOND BUILT_ACTIOND CONF_EXAMPLE"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

unit, installed, built, example = sys.argv[1:5]
analyze = shutil.which('systemd-analyze')
failures = []


def fail(msg):
    failures.append(msg)
    print('FAIL:', msg)


def seconds(v):
    m = re.fullmatch(r'(\d+)\s*(ms|s|min|m|h)?', v.strip())
    if not m:
        return None
    scale = {'ms': 0.001, 's': 1, None: 1, 'm': 60, 'min': 60, 'h': 3600}[m.group(2)]
    return int(m.group(1)) * scale


text = open(unit).read()
settings = {}
for line in text.splitlines():
    m = re.match(r'^(\w+)=(.*)$', line)
    if m:
        settings.setdefault(m.group(1), []).append(m.group(2))

# 1. The installed program, and nothing left to fill in.
exec_start = settings.get('ExecStart', [''])[0]
if exec_start.split()[:1] != [installed]:
    fail(f'ExecStart runs {exec_start.split()[:1]}, not {installed}')
for line in text.splitlines():
    if not line.startswith('#') and re.search(r'@\w+@', line):
        fail(f'unfilled placeholder: {line}')


def verify(path):
    """Runs systemd-analyze verify; returns its complaints about path."""
    r = subprocess.run([analyze, 'verify', '--man=no', '--generators=no', path],
                       capture_output=True, text=True, env=dict(os.environ, SYSTEMD_LOG_COLOR='0'))
    name = os.path.basename(path)
    said = [l for l in (r.stdout + r.stderr).splitlines() if name in l or path in l]
    if r.returncode != 0:
        said.append(f'exit status {r.returncode}')
    return said


if not analyze:
    fail('systemd-analyze is not installed (Debian package systemd)')
else:
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, 'actiond.service')
        with open(copy, 'w') as f:
            f.write(text.replace('ExecStart=' + installed, 'ExecStart=' + built, 1))
        # 2. verify.
        said = verify(copy)
        for l in said:
            fail(f'systemd-analyze verify: {l}')
        print(f'systemd-analyze verify: {len(said)} complaints')
        with open(copy, 'w') as f:
            f.write(text.replace('ExecStart=' + installed, 'ExecStart=' + built, 1)
                    .replace('\nProtectSystem=', '\nProtectSystme=', 1))
        if not any('ProtectSystme' in l for l in verify(copy)):
            fail('systemd-analyze verify did not notice a misspelt setting')
        # 3. security.
        with open(copy, 'w') as f:
            f.write(text.replace('ExecStart=' + installed, 'ExecStart=' + built, 1))
        r = subprocess.run([analyze, 'security', '--offline=yes', '--threshold=20', copy],
                           capture_output=True, text=True)
        level = re.search(r'Overall exposure level for \S+: ([\d.]+ \w+)', r.stdout)
        print('systemd-analyze security:', level.group(1) if level else r.stdout[-300:])
        if r.returncode != 0 or not level:
            fail('exposure over 2.0: ' + (level.group(1) if level else r.stderr.strip()))

# 4. Restarts, reloads, stopping.
if settings.get('Restart') != ['on-failure']:
    fail(f'Restart={settings.get("Restart")}, not on-failure')
if settings.get('RestartPreventExitStatus') != ['2']:
    fail('a refused configuration (exit status 2) would be restarted over and over')
if 'ExecReload' in settings:
    fail('ExecReload is set, but actiond does not reload')
if settings.get('KillMode') != ['mixed']:
    fail('KillMode is not mixed: PostgreSQL would get SIGTERM during the drain')
if settings.get('NoNewPrivileges') != ['yes']:
    fail('NoNewPrivileges is not yes')
drain = re.search(r'^shutdown_timeout\s*=\s*(\S+)', open(example).read(), re.M)
stop = seconds(settings.get('TimeoutStopSec', ['0'])[0])
need = (seconds(drain.group(1)) if drain else 10) + 4 + 15
print(f'TimeoutStopSec={stop}s; the drain and the stop need up to {need}s')
if stop is None or stop <= need:
    fail(f'TimeoutStopSec={stop}s leaves no room over {need}s')

if failures:
    sys.exit(1)
print('ok')
